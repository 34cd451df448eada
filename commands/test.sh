#!/usr/bin/env bash
# The test suite: prepares the environment (commands/env.sh), lints with ruff (configured in pyproject.toml),
# then runs pytest in two lanes: the whole suite on ComfyUI 0.3.75 with the frontend requirements-dev.txt pins
# (1.32.9), then the host tests on ComfyUI 0.33.0 with frontend 1.58.1 (commands/test_0.33.sh). Extra arguments
# go to pytest in both. COMFYUI_PATH=/path/to/ComfyUI runs the whole suite once, against your own ComfyUI tree
# (in .venv: that tree's own requirements must be installed there).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
commands/env.sh
.venv/bin/ruff check .
start=$SECONDS
first=0
.venv/bin/python -m pytest tests "$@" || first=$?
if [ -n "${COMFYUI_PATH:-}" ]; then
  exit "$first"
fi
echo "lane 1 (ComfyUI 0.3.75): pytest exit $first in $((SECONDS - start)) s"
start=$SECONDS
second=0
commands/test_0.33.sh "$@" || second=$?
echo "lane 2 (ComfyUI 0.33.0, frontend 1.58.1): pytest exit $second in $((SECONDS - start)) s"
if [ "$first" != 0 ]; then
  exit "$first"
fi
exit "$second"
