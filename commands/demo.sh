#!/usr/bin/env bash
# The one-command demo: prepares the environment (commands/env.sh), then runs the SD3 workflow with and
# without SDTM through the real ComfyUI server and writes images and a report to out/demo/.
#   commands/demo.sh                       the photo fixture, a small SD3-architecture model trained here (no download)
#   commands/demo.sh --model tiny          a tiny random SD3 model made on the fly
#   commands/demo.sh --checkpoint PATH     a real SD3 / SD3.5 checkpoint; --help for more
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
commands/env.sh
exec .venv/bin/python -m commands.demo "$@"
