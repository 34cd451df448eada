#!/usr/bin/env bash
# The GPU benchmark in one command: SD3-medium at full depth, 1024x1024, float16, 30 steps, through
# ComfyUI's sampler, plus the merge-overhead table and the host cost per merged block (kernel launches,
# host time, break-even GPU speed); JSON and Markdown reports go to OUT_DIR.
#   benchmarks/gpu_report.sh [OUT_DIR] [more bench_speed options]
#   DEVICE=cpu benchmarks/gpu_report.sh out/cpu-check --depth 2 --res 256 --steps 4 --repeat 1   # dry run on CPU
# Needs a Python with torch and ComfyUI's requirements (PYTHON picks it, default python3). ComfyUI
# comes from COMFYUI_PATH or .cache/comfyui (commands/get_comfyui.py unpacks it).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
OUT=${1:-out/gpu}
shift || true
PY=${PYTHON:-python3}
DEVICE=${DEVICE:-cuda}
DTYPE=float16
[ "$DEVICE" = cpu ] && DTYPE=float32
mkdir -p "$OUT"
if [ -z "${COMFYUI_PATH:-}" ] && [ ! -f .cache/comfyui/comfyui_version.py ]; then
  "$PY" commands/get_comfyui.py
fi
"$PY" -m benchmarks.bench_speed --models sd3-medium --res 1024 --steps 30 --dtype "$DTYPE" --device "$DEVICE" \
  --presets reference,balanced,fast,turbo --repeat 3 --json "$OUT/bench_speed.json" --markdown "$OUT/bench_speed.md" "$@"
"$PY" -m benchmarks.bench_overhead --device "$DEVICE" --dtype "$DTYPE" --repeat 3 \
  --json "$OUT/bench_overhead.json" | tee "$OUT/bench_overhead.md"
"$PY" -m benchmarks.bench_host --device "$DEVICE" --dtype "$DTYPE" --json "$OUT/bench_host.json" | tee "$OUT/bench_host.md"
{ date -u; nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>/dev/null || echo "no nvidia-smi";
  "$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)"; } > "$OUT/machine.txt"
echo "reports in $OUT"
