"""FLOP-model speedup of every preset for each SD3-family model (the reference preset is the release's defaults).

Pure arithmetic (sdtm_ops.cost): counts the joint blocks' linear layers and attention. No model is
built, nothing is timed; ComfyUI is imported only to read the presets from the pack as it loads.

    python -m benchmarks.flop_table                       # 1024x1024 and 512x512; 4, 20, 30, 50 steps
    python -m benchmarks.flop_table --res 1344x768 --steps 28
"""
from __future__ import annotations

import argparse
import sys

from sdtm_ops import MODEL_SHAPES, schedule_cost, token_grid


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--res", default="1024x1024,512x512", help="WxH, comma separated")
    p.add_argument("--steps", default="4,20,30,50", help="comma separated")
    p.add_argument("--models", default=",".join(MODEL_SHAPES))
    args = p.parse_args(argv)
    from harness.comfy_env import load_pack
    presets = {name: cfg for name, (cfg, _) in load_pack().presets.PRESETS.items()}
    print("| model | resolution | steps | " + " | ".join(presets) + " |")
    print("|---|---|---|" + "---|" * len(presets))
    for model in args.models.split(","):
        shape = MODEL_SHAPES[model]
        for res in args.res.split(","):
            w, h = (int(v) for v in res.lower().split("x"))
            grid = token_grid(h, w)
            for steps in (int(s) for s in args.steps.split(",")):
                cells = [schedule_cost(shape, grid, cfg, steps).speedup for cfg in presets.values()]
                print(f"| {model} | {w}x{h} | {steps} | " + " | ".join(f"{c:.2f}x" for c in cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
