#!/usr/bin/env bash
# The test suite: prepares the environment (commands/env.sh), lints with ruff (configured in
# pyproject.toml), then runs pytest. Extra arguments go to pytest. COMFYUI_PATH=/path/to/ComfyUI runs
# it against your own ComfyUI checkout.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
commands/env.sh
.venv/bin/ruff check .
exec .venv/bin/python -m pytest tests "$@"
