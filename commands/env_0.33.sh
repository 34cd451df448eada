#!/usr/bin/env bash
# Prepares the second test lane, once: ComfyUI 0.33.0 in .cache/comfyui-0.33.0 (commands/get_comfyui.py) and
# .venv-0.33, a virtual environment layered on .venv: a .pth file puts .venv's packages (torch 2.14.1 and the
# rest of requirements-dev.txt) behind its own, and it installs what 0.33.0's requirements.txt adds, with
# comfyui-frontend-package pinned at 1.58.1 instead of that file's pin (SDTM_FRONTEND=1.49.6 picks another one;
# it then goes into .venv-0.33-fe1.49.6). torch and torchvision are held
# at requirements-dev.txt's versions (a constraint: pip fails rather than swap the CPU-usable build). torchaudio
# is left out: no build for torch 2.14 is on the index, and 0.33.0 imports it at start-up for its audio models;
# the test lane puts harness/host_stubs (a torchaudio stub) on PYTHONPATH instead (commands/test_0.33.sh).
# Safe to run again: it only does what is missing. Run commands/env.sh first.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
FRONTEND=${SDTM_FRONTEND:-1.58.1}
VENV=.venv-0.33
if [ "$FRONTEND" != 1.58.1 ]; then VENV=.venv-0.33-fe$FRONTEND; fi
tree=$(.venv/bin/python commands/get_comfyui.py 0.33.0)
if [ ! -x $VENV/bin/python ]; then
  .venv/bin/python -m venv "$VENV"
fi
base=$(.venv/bin/python -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
own=$($VENV/bin/python -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
echo "$base" > "$own/_sdtm_base_venv.pth"
reqs=$VENV/requirements.txt
grep -v -E '^(torchaudio|comfyui-frontend-package)\b' "$tree/requirements.txt" > "$reqs"
echo "comfyui-frontend-package==$FRONTEND" >> "$reqs"
grep -E '^(torch|torchvision)==' requirements-dev.txt > $VENV/constraints.txt
stamp=$VENV/.requirements.sha256
want=$(cat "$reqs" $VENV/constraints.txt .venv/.requirements-dev.sha256 | sha256sum | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  if ! $VENV/bin/python -m pip install --disable-pip-version-check -r "$reqs" -c $VENV/constraints.txt \
      > $VENV/pip.log 2>&1; then
    cat $VENV/pip.log >&2
    echo "commands/env_0.33.sh: installing ComfyUI 0.33.0's requirements failed (log above)" >&2
    exit 1
  fi
  $VENV/bin/python -c "import torch, torchvision, comfyui_frontend_package" # fail here, not in a test
  echo "$want" > "$stamp"
fi
