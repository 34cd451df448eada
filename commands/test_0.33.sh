#!/usr/bin/env bash
# The second test lane: the tests that exercise the ComfyUI host (its server, web editor, nodes, execution and
# workflows) against ComfyUI 0.33.0, the newest core reachable here, with frontend 1.58.1, in .venv-0.33
# (commands/env_0.33.sh prepares both). The engine-only tests (sdtm_ops alone), the benchmarks' and the
# release's are the same on every host and run in the first lane only. harness/host_stubs goes on PYTHONPATH
# (this process and the ComfyUI server it starts): its torchaudio stub stands in for the torchaudio that 0.33.0
# imports at start-up (no build for torch 2.14 is on the index; the pack uses no audio). Extra arguments go to
# pytest; a filter that selects none of this lane's tests is not a failure. SDTM_FRONTEND=1.49.6 (0.33.0's own
# pin) runs the lane with that frontend instead (commands/env_0.33.sh).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
LANE_TESTS=(tests/test_workflows.py tests/test_comfy_engine.py tests/test_comfy_patch.py tests/test_runs.py tests/test_split_runs.py
            tests/test_merge_map.py tests/test_node_docs.py tests/test_server.py tests/test_server_runs.py
            tests/test_browser.py)
commands/env.sh
commands/env_0.33.sh
VENV=.venv-0.33
if [ "${SDTM_FRONTEND:-1.58.1}" != 1.58.1 ]; then VENV=.venv-0.33-fe$SDTM_FRONTEND; fi
status=0
COMFYUI_PATH="$PWD/.cache/comfyui-0.33.0" PYTHONPATH="$PWD/harness/host_stubs${PYTHONPATH:+:$PYTHONPATH}" \
  "$VENV/bin/python" -m pytest "${LANE_TESTS[@]}" "$@" || status=$?
if [ "$status" = 5 ] && [ "$#" -gt 0 ]; then
  echo "commands/test_0.33.sh: the arguments select none of this lane's tests"
  status=0
fi
exit "$status"
