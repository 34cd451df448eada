"""A held-out check of the docs' advice: the fixtures run at a sampler, seeds and a denoise the committed fronts
did not use, and the advice's sentences (``commands.node_docs_advice.advice_problems``: every SDTM preset and the best
stack behind fewer steps at their speed, and what it says of LazyCache) are checked against what this run
measured, regime by regime. Not a test: it prints its verdicts (and writes them as JSON) for docs/BENCHMARKS.md.

Cases (photo fixture, seeds --first-seed.., sampler uni_pc / simple by default):

* base: 20 steps from noise; fewer steps 16, 14, 12, 10; LazyCache 0.05, 0.1, 0.2;
* few: 6 steps; fewer steps 5, 4, 3; LazyCache 0.1, 0.4;
* pass: img2img at denoise 0.65 on held-out crops, 10 steps; fewer steps 8, 7, 6, 5; LazyCache 0.1, 0.4;

each with the presets quality, balanced, fast and turbo and the stack balanced -> LazyCache 0.2.

    .venv/bin/python -m benchmarks.advice_check                   # about 10 minutes on 2 CPU cores
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from benchmarks.bench_fidelity import SIZE_PX
from benchmarks.bench_front import FIXTURES, measure_setting, prepare_run, summary
from benchmarks.bench_pass import img2img_inputs
from benchmarks.front_fewer import fewer_settings
from benchmarks.front_margins import facts, margins_table
from benchmarks.front_settings import Setting, build_settings, lazycache
from commands.node_docs import advice_problems
from harness.comfy_env import import_comfy, load_pack
from photo_fixture import photo_codec

CASES = {
    "base": {"steps": 20, "fewer": (16, 14, 12, 10), "lazy": (0.05, 0.1, 0.2)},
    "few": {"steps": 6, "fewer": (5, 4, 3), "lazy": (0.1, 0.4)},
    "pass": {"steps": 10, "fewer": (8, 7, 6, 5), "lazy": (0.1, 0.4), "denoise": 0.65, "img2img_px": 128},
}
SETTINGS = ("preset quality", "preset balanced", "preset fast", "preset turbo", "balanced -> LazyCache 0.2")


def run_case(pack, model, clip, name: str, case: dict, args) -> dict:
    depth = len(model.model.diffusion_model.joint_blocks)
    latent_hw = (SIZE_PX // photo_codec.PIXELS_PER_LATENT,) * 2
    inputs, denoise = None, case.get("denoise", 1.0)
    if "img2img_px" in case:
        inputs = img2img_inputs(args.seeds, case["img2img_px"], args.first_seed)
        latent_hw = tuple(inputs[0].shape[-2:])
    run = prepare_run(pack, model, clip, args.seeds, case["steps"], latent_hw, args.sampler, args.scheduler,
                      inputs=inputs, denoise=denoise, first_seed=args.first_seed)
    settings = [s for s in build_settings(pack, depth, {"baseline", "presets", "stacks"}, case["steps"])
                if s.name == "unpatched" or s.name in SETTINGS]
    settings += fewer_settings(case["steps"], case["fewer"])
    settings += [Setting(f"LazyCache {t}", "lazycache", {"lazycache": t}, lazycache(t)) for t in case["lazy"]]
    rows = []
    for setting in settings:
        rows.append({k: v for k, v in summary(measure_setting(run, setting), run).items() if k != "seeds"})
        print(f"  [{name}] {rows[-1]['name']}: {rows[-1]['speedup_sd3-medium']:.2f}x, {rows[-1]['psnr_mean']:.2f} dB",
              flush=True)
    run.counter.close()
    setup = {"fixture": "photo", "steps": case["steps"], "seeds": args.seeds, "first_seed": args.first_seed,
             "sampler": args.sampler, "scheduler": args.scheduler, "size_px": latent_hw[0] * 2}
    if inputs is not None:
        setup.update({"pass": "img2img", "denoise": denoise})
    return {"setup": setup, "results": rows}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--first-seed", type=int, default=100, help="the committed fronts use seeds 0-7")
    parser.add_argument("--sampler", default="uni_pc")
    parser.add_argument("--scheduler", default="simple")
    parser.add_argument("--cases", default=",".join(CASES), help=f"comma separated, of {', '.join(CASES)}")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path("docs/benchmarks/advice_check.json"))
    args = parser.parse_args(argv)
    cases = args.cases.split(",")
    for case in cases:
        if case not in CASES:
            parser.error(f"--cases: {case!r} is not one of {', '.join(CASES)}")
    torch.set_num_threads(args.threads)
    import_comfy()
    import comfy.utils
    comfy.utils.PROGRESS_BAR_ENABLED = False
    pack = load_pack()
    model, clip = photo_codec.load_fixture(FIXTURES["photo"])
    fronts = {case: run_case(pack, model, clip, case, CASES[case], args) for case in cases}
    found = facts(fronts)
    verdicts = {}
    for regime in found:
        problems = advice_problems(found, [regime])
        verdicts[regime] = problems or ["agrees with the advice"]
    print("\n" + margins_table(fronts) + "\n")
    for regime, lines in verdicts.items():
        for line in lines:
            print(f"{regime}: {line}")
    out = {"command": "python -m benchmarks.advice_check " + " ".join(sys.argv[1:] if argv is None else argv),
           "fronts": fronts, "verdicts": verdicts}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    main()
