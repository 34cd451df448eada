#!/usr/bin/env bash
# Prepares everything the demo, the tests and the benchmarks need, once: a virtual environment
# in .venv with requirements-dev.txt, and ComfyUI 0.3.75 in .cache/comfyui (unless COMFYUI_PATH
# names your own ComfyUI checkout). Safe to run again: it only does what is missing.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
stamp=.venv/.requirements-dev.sha256
want=$(sha256sum requirements-dev.txt | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  if ! .venv/bin/python -m pip install --disable-pip-version-check -r requirements-dev.txt > .venv/pip.log 2>&1; then
    cat .venv/pip.log >&2
    echo "commands/env.sh: installing requirements-dev.txt failed (log above)" >&2
    exit 1
  fi
  .venv/bin/python -c "import torch, torchvision" # fail here, not in a test, if the install is broken
  echo "$want" > "$stamp"
fi
# The browser test drives Debian's Chromium (playwright never downloads a browser here).
if ! command -v chromium > /dev/null && command -v apt-get > /dev/null && [ "$(id -u)" = 0 ]; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) > .venv/apt.log 2>&1 \
    || { cat .venv/apt.log >&2; echo "commands/env.sh: installing chromium failed (log above)" >&2; exit 1; }
fi
if [ -z "${COMFYUI_PATH:-}" ]; then
  .venv/bin/python commands/get_comfyui.py
fi
