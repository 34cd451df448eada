"""The speed-fidelity front of a second pass (a hires fix or an img2img pass, KSampler with denoise < 1), where a
step cache has few steps to skip: the unpatched pass at fewer steps (same denoise), core LazyCache, every SDTM
preset and SDTM stacked with LazyCache, each against the unpatched pass at full steps of the same seed and input,
counted and priced like ``benchmarks.bench_front`` (whose machinery it runs: ``prepare_run``, ``measure_setting``,
``summary``), on the dense fixture (docs/FIXTURE.md).

* ``hires``: the unpatched base pass (``--base-steps`` at ``--base-px`` pixels, 32x32 image tokens by default) of
  each seed, its latent upscaled by ``--scale`` with ComfyUI's LatentUpscaleBy (``--upscale-method``), then the
  measured pass at ``--denoise`` over ``--steps`` steps on the upscaled latent (64x64 tokens, SD3 at 1024x1024).
* ``img2img``: the measured pass at ``--denoise`` on a held-out crop of the photographs
  (``photo_fixture.density_check.held_out_crops``, ``--size`` pixels; seed s takes a crop of photograph s mod 7,
  prompted with its caption) that the fixture never trained on.

    .venv/bin/python -m benchmarks.bench_pass --pass hires --denoise 0.5 --steps 10 --seeds 2
    .venv/bin/python -m benchmarks.bench_pass --pass img2img --denoise 0.5 --steps 20 --seeds 2
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch

from benchmarks.bench_front import (
    FIXTURES,
    JSON_DIR,
    fixture_prompts,
    measure_setting,
    prepare_run,
    run_lazy_sweep,
    summary,
)
from benchmarks.front_fewer import fewer_settings, merged_rows, resumed_setup
from benchmarks.front_report import front_lines, front_verdict, markdown_table
from benchmarks.front_settings import build_settings
from harness.comfy_env import import_comfy, load_pack
from photo_fixture import density_check, photo_codec
from photo_fixture.sample import CFG, sample_fixture

PASSES = ("hires", "img2img")
SAMPLER, SCHEDULER = "dpmpp_2m", "karras"
LAZY_THRESHOLDS = (0.1, 0.4, 1.5)  # a pass leaves LazyCache little to skip: three points place it
FEWER_STEPS = {10: (9, 8, 7, 6, 5), 20: (18, 16, 14, 12, 10)}
GROUPS = ("lazy", "fewer", "presets", "stacks")


def hires_inputs(model, prompts: list, args) -> list[torch.Tensor]:
    """Per seed: the unpatched base pass at --base-px, upscaled by LatentUpscaleBy (what a hires-fix graph does)."""
    nodes = import_comfy()
    latent_hw = (args.base_px // photo_codec.PIXELS_PER_LATENT,) * 2
    out = []
    for seed, (positive, negative) in enumerate(prompts):
        base = sample_fixture(model, seed, positive, negative, args.base_steps, latent_hw, sampler=args.sampler,
                              scheduler=args.scheduler)
        (upscaled,) = nodes.LatentUpscaleBy().upscale({"samples": base}, args.upscale_method, args.scale)
        out.append(upscaled["samples"])
    return out


def img2img_inputs(seeds: int, size: int, first_seed: int = 0) -> list[torch.Tensor]:
    """Per seed s: the codec's latent of held-out crop (s // 7) mod 4 of photograph s mod 7 (the caption's)."""
    pixels, _ = density_check.held_out_crops(size)
    per = density_check.CROPS_PER_PHOTO
    photos = len(photo_codec.PHOTOS)
    return [photo_codec.encode(pixels[(s % photos) * per + (s // photos) % per][None])
            for s in range(first_seed, first_seed + seeds)]


def out_name(args) -> str:
    return f"front_pass-{args.kind}-d{args.denoise:g}-{args.steps}steps.json"


def pass_run(pack, args) -> dict:
    started = time.perf_counter()
    path = FIXTURES[args.fixture]
    model, clip = photo_codec.load_fixture(path)
    depth = len(model.model.diffusion_model.joint_blocks)
    prompts = fixture_prompts(clip, args.seeds)
    if args.kind == "hires":
        inputs = hires_inputs(model, prompts, args)
    else:
        inputs = img2img_inputs(args.seeds, args.size)
    latent_hw = tuple(inputs[0].shape[-2:])
    groups = set(args.groups.split(","))
    setup = {"fixture": args.fixture, "pass": args.kind, "sha256": photo_codec.file_digest(path), "depth": depth,
             "hidden": model.model.diffusion_model.hidden_size, "steps": args.steps, "denoise": args.denoise,
             "seeds": args.seeds, "size_px": latent_hw[0] * photo_codec.PIXELS_PER_LATENT, "cfg": CFG,
             "sampler": args.sampler, "scheduler": args.scheduler, "threads": args.threads,
             "torch": torch.__version__, "machine": platform.processor() or platform.machine(),
             "groups": sorted(groups), "command": "python -m benchmarks.bench_pass " + " ".join(args.argv)}
    if args.kind == "hires":
        setup.update({"base_steps": args.base_steps, "base_px": args.base_px, "scale": args.scale,
                      "upscale_method": args.upscale_method})
    else:
        setup["input"] = (f"held-out crops at {args.size} px (photo_fixture.density_check.held_out_crops, "
                          f"seed {density_check.HELD_OUT_SEED} + size)")
    out_json = args.out / out_name(args)
    data = {"setup": setup, "results": []}
    previous, done = {}, {}
    if args.resume and out_json.is_file():
        previous = json.loads(out_json.read_text())
        if all(previous["setup"].get(k) == v for k, v in setup.items()
               if k not in ("threads", "torch", "machine", "groups", "command")):
            done = {r["name"]: r for r in previous["results"] if r["name"] not in args.rerun.split(";")}
            print(f"  resuming: {len(done)} settings already measured in {out_json}", flush=True)
        else:
            previous = {}

    def save() -> dict:
        data["seconds"] = round(time.perf_counter() - started, 1)
        out = dict(data)
        if previous:
            out = {**previous, **data, "setup": resumed_setup(previous["setup"], setup),
                   "results": merged_rows(previous["results"], data["results"]),
                   "seconds": round(previous.get("seconds", 0) + data["seconds"], 1)}
        out["front"] = front_verdict(out["results"], at_least=1.0)
        out_json.parent.mkdir(parents=True, exist_ok=True)
        out_json.write_text(json.dumps(out, indent=1))
        return out

    def log(row: dict) -> None:
        print(f"  [{args.kind} d{args.denoise:g} {args.steps}] {row['name']}: PSNR {row['psnr_mean']:.2f} "
              f"(min {row['psnr_min']:.2f}), est {row['speedup_sd3-medium']:.2f}x, "
              f"calls {row['model_calls']}/{row['reference_model_calls']}", flush=True)

    def keep(row: dict) -> None:
        log(row)
        data["results"].append(row)
        save()
    run = prepare_run(pack, model, clip, args.seeds, args.steps, latent_hw, args.sampler, args.scheduler,
                      inputs=inputs, denoise=args.denoise)
    # one order of each stack: on the 30-step fronts both orders gave the same images
    wanted = set(filter(None, args.only.split(";")))
    settings = [s for s in build_settings(pack, depth, {"baseline"} | groups, args.steps)
                if s.family != "stack lazy->sdtm" and (not wanted or s.name in wanted | {"unpatched"})]
    unpatched = settings.pop(0)
    keep(done.get(unpatched.name) or summary(measure_setting(run, unpatched), run))
    fewer = fewer_settings(args.steps, FEWER_STEPS.get(args.steps)) if "fewer" in groups else []
    for setting in fewer + settings:  # each row is saved as it lands; LazyCache last
        keep(done.get(setting.name) or summary(measure_setting(run, setting), run))
    if "lazy" in groups:
        run_lazy_sweep(run, keep, done, LAZY_THRESHOLDS)
    run.counter.close()
    return save()


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pass", dest="kind", choices=PASSES, default="hires")
    parser.add_argument("--fixture", default="dense", choices=("photo", "deep", "dense"))
    parser.add_argument("--denoise", type=float, default=0.5)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--sampler", default=SAMPLER)
    parser.add_argument("--scheduler", default=SCHEDULER)
    parser.add_argument("--base-steps", type=int, default=20, help="hires: the base pass's steps")
    parser.add_argument("--base-px", type=int, default=128, help="hires: the base pass's image side in pixels")
    parser.add_argument("--scale", type=float, default=2.0, help="hires: LatentUpscaleBy's scale_by")
    parser.add_argument("--upscale-method", default="nearest-exact", help="hires: LatentUpscaleBy's upscale_method")
    parser.add_argument("--size", type=int, default=256, help="img2img: the held-out crop's side in pixels")
    parser.add_argument("--groups", default=",".join(GROUPS), help=f"comma separated, of {', '.join(GROUPS)}")
    parser.add_argument("--only", default="", help="of the presets and stacks, only these (names, ';' separated)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--resume", action="store_true", help="keep the settings the JSON holds for the same setup")
    parser.add_argument("--rerun", default="", help="with --resume: measure these settings again (';' separated)")
    parser.add_argument("--out", type=Path, default=JSON_DIR)
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    if not 0.0 < args.denoise <= 1.0:
        parser.error(f"--denoise: {args.denoise} is not in (0, 1]")
    for flag, value in (("--steps", args.steps), ("--seeds", args.seeds), ("--base-steps", args.base_steps)):
        if value < 1:
            parser.error(f"{flag}: {value} is not 1 or more")
    torch.set_num_threads(args.threads)
    import_comfy()
    import comfy.utils
    comfy.utils.PROGRESS_BAR_ENABLED = False
    data = pass_run(load_pack(), args)
    print(markdown_table(data["results"]))
    for line in front_lines(data["front"]):
        print("  front: " + line)
    return data


if __name__ == "__main__":
    main()
