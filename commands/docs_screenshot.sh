#!/usr/bin/env bash
# Remakes docs/images/node_docs_sdtm_apply.png, the README's picture of the SDTM node's docs panel: the browser
# test that opens every SDTM node's docs page (tests/test_browser.py) on ComfyUI 0.33.0 with frontend 1.58.1
# (commands/test_0.33.sh) takes it, clipped to the panel, and this copies the English one into docs/images.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
commands/test_0.33.sh -k "opens_its_own_docs_page and not zh" -p no:randomly
cp artifacts/browser/node_docs_sdtm_apply_en.png docs/images/node_docs_sdtm_apply.png
echo "docs/images/node_docs_sdtm_apply.png remade"
