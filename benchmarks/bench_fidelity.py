"""Fidelity of SDTM's presets and of the ToMe baseline against the unmerged image, on the photo fixture
(a small SD3-architecture MMDiT trained on photographs, docs/FIXTURE.md) and on a random-weight model
of the same shape, through ComfyUI's own loaders and KSampler.

For every seed, the unmerged image and, at the same seed and prompt:

* each preset of the SDTM node (SDTM_Apply, ``pack.presets.PRESETS``);
* plain ToMe (SDTM_ApplyAdvanced, method "tome": a constant ratio, no full steps) at the SAME
  FLOP-model speedup as each preset: its ratio is searched so that ``sdtm_ops.schedule_cost`` gives
  the preset's speedup (the paper's claim: SDTM beats ToMe at equal compute);
* ToMe on the preset's own schedule (its deviation and full steps, no cache blending, which ToMe
  does not have), again with the ratio searched for equal FLOPs: the merge rule alone.

PSNR and SSIM (``harness.image_metrics``) of the decoded images (``photo_fixture.photo_codec.decode``) against
the unmerged image, the FLOP-model speedup each run's own report computed, a table, a chart and JSON.

    .venv/bin/python -m benchmarks.bench_fidelity                 # about 5 minutes on one CPU core
    .venv/bin/python -m benchmarks.bench_fidelity --seeds 2 --steps 10   # a quick look
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from harness.comfy_env import REPO, import_comfy, load_pack
from photo_fixture import photo_codec
from photo_fixture.sample import CFG, SAMPLER, SCHEDULER, sample_fixture

IMAGES = REPO / "docs" / "images"
STEPS, SEEDS, SIZE_PX = 20, 4, 128
RATIO_GRID = [i / 400 for i in range(1, 381)]  # ToMe ratios searched for equal FLOPs (0.0025 .. 0.95)


@dataclass
class Case:
    name: str  # row label
    family: str  # "sdtm", "tome-plain", "tome-schedule"
    preset: str  # the preset this row belongs to (for ToMe: the one it is matched to)
    node_inputs: dict  # SDTM_Apply or SDTM_ApplyAdvanced inputs (without the model)
    target_speedup: float  # FLOP-model speedup the case was built for
    psnr: list[float] = field(default_factory=list)
    ssim: list[float] = field(default_factory=list)
    run_speedup: list[float] = field(default_factory=list)  # from each run's report


def advanced_inputs(pack, config) -> dict:
    """SDTM_ApplyAdvanced inputs equal to an SDTMConfig."""
    return {knob.input: getattr(config, knob.field) for knob in pack.ops.knobs.KNOBS}


def fixture_shape(pack, model, clip):
    """The FLOP model's shape of a loaded MMDiT, with the text length the fixture's prompts give
    (77 CLIP-L tokens: CLIPLoader type "sd3" without T5)."""
    diffusion = model.model.diffusion_model
    text_tokens = photo_codec.prompt_conditioning(clip, photo_codec.PHOTOS[0].caption)[0][0].shape[1]
    return pack.ops.MMDiTShape("photo fixture", len(diffusion.joint_blocks), diffusion.hidden_size,
                               text_tokens=text_tokens)


def run_progress(pack, model, steps: int) -> list[float]:
    """Each step's progress on the model's sigma scale in a KSampler run of SCHEDULER (what the run uses)."""
    import comfy.samplers
    model_sampling = model.get_model_object("model_sampling")
    sigmas = comfy.samplers.calculate_sigmas(model_sampling, SCHEDULER, steps).tolist()
    placement = sys.modules[pack.module.__name__ + ".nodes.run_placement"]
    return placement.sigma_progress(model_sampling, sigmas)[:-1]


def flop_speedup(pack, config, shape, grid: tuple[int, int], progress: list[float]) -> float:
    return pack.ops.schedule_cost(shape, grid, config, len(progress), progress=progress).speedup


def matched_tome(pack, target: float, shape, grid, progress: list[float], deviation_per_ratio: float,
                 protect_every: int):
    """The ToMe config of the ratio grid whose FLOP-model speedup is closest to ``target``."""
    best = None
    for ratio in RATIO_GRID:
        config = pack.ops.SDTMConfig(method="tome", ratio=ratio, deviation=min(1.0, deviation_per_ratio * ratio),
                                     protect_every=protect_every, use_cache=False)
        gap = abs(flop_speedup(pack, config, shape, grid, progress) - target)
        if best is None or gap < best[0] - 1e-12:
            best = (gap, config)
    return best[1]


def build_cases(pack, shape, grid, progress: list[float]) -> list[Case]:
    """Each preset and plain ToMe at equal FLOP-model speedup, on the runs' own progress per step."""
    cases = []
    for name in pack.presets.PRESETS:
        config = pack.presets.preset_config(name)
        target = flop_speedup(pack, config, shape, grid, progress)
        cases.append(Case(f"SDTM {name}", "sdtm", name, {"preset": name}, target))
        plain = matched_tome(pack, target, shape, grid, progress, 0.0, 0)
        cases.append(Case(f"ToMe plain r={plain.ratio:.3f}", "tome-plain", name, advanced_inputs(pack, plain), target))
        spread = config.deviation / config.ratio if config.ratio else 0.0
        shaped = matched_tome(pack, target, shape, grid, progress, spread, config.protect_every)
        cases.append(Case(f"ToMe on {name}'s schedule r={shaped.ratio:.3f}", "tome-schedule", name,
                          advanced_inputs(pack, shaped), target))
    return cases


def patched_model(pack, model, case: Case):
    if case.family == "sdtm":
        return pack.apply.execute(model, **case.node_inputs).args[0]
    return pack.advanced.execute(model, **case.node_inputs).args[0]


def measure(pack, model, cases: list[Case], seeds: int, steps: int, latent_hw, clip) -> dict[str, list]:
    """Fill each case's metrics; return the decoded images of seed 0 (for the sample strip)."""
    from harness.image_metrics import psnr, ssim
    negative = photo_codec.prompt_conditioning(clip, photo_codec.UNCONDITIONAL_PROMPT)
    strip = {}
    for seed in range(seeds):
        caption = photo_codec.PHOTOS[seed % len(photo_codec.PHOTOS)].caption
        positive = photo_codec.prompt_conditioning(clip, caption)
        reference = photo_codec.decode(sample_fixture(model, seed, positive, negative, steps, latent_hw))
        if seed == 0:
            strip["unmerged"] = reference
        for case in cases:
            patched = patched_model(pack, model, case)
            image = photo_codec.decode(sample_fixture(patched, seed, positive, negative, steps, latent_hw))
            report = patched.model_options["transformer_options"][pack.hook.KEY].latest().report
            case.run_speedup.append(float(report["flop_speedup"]))
            case.psnr.append(float(psnr(image, reference)[0]))
            case.ssim.append(float(ssim(image, reference)[0]))
            if seed == 0:
                strip[case.name] = image
    return strip


def summary_rows(cases: list[Case]) -> list[dict]:
    return [{"case": c.name, "family": c.family, "preset": c.preset,
             "flop_speedup": statistics.fmean(c.run_speedup), "target_speedup": c.target_speedup,
             "psnr_mean": statistics.fmean(c.psnr), "psnr_min": min(c.psnr),
             "ssim_mean": statistics.fmean(c.ssim), "ssim_min": min(c.ssim),
             "psnr": c.psnr, "ssim": c.ssim, "config": c.node_inputs} for c in cases]


def markdown_table(model_name: str, rows: list[dict]) -> str:
    lines = [f"| {model_name} | FLOP-model speedup | PSNR dB mean (min) | SSIM mean (min) |", "|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['case']} | {r['flop_speedup']:.2f}x | {r['psnr_mean']:.2f} ({r['psnr_min']:.2f}) | "
                     f"{r['ssim_mean']:.4f} ({r['ssim_min']:.4f}) |")
    return "\n".join(lines)


def verdict(rows: list[dict]) -> list[str]:
    """Per preset: SDTM's mean PSNR / SSIM minus plain ToMe's at equal FLOPs."""
    lines = []
    for preset in dict.fromkeys(r["preset"] for r in rows):
        sdtm = next(r for r in rows if r["preset"] == preset and r["family"] == "sdtm")
        for family in ("tome-plain", "tome-schedule"):
            tome = next(r for r in rows if r["preset"] == preset and r["family"] == family)
            psnr_wins = sum(a > b for a, b in zip(sdtm["psnr"], tome["psnr"]))
            ssim_wins = sum(a > b for a, b in zip(sdtm["ssim"], tome["ssim"]))
            lines.append(f"{preset} ({sdtm['flop_speedup']:.2f}x vs {tome['flop_speedup']:.2f}x) against {family}: "
                         f"PSNR {sdtm['psnr_mean'] - tome['psnr_mean']:+.2f} dB (SDTM higher at {psnr_wins} of "
                         f"{len(sdtm['psnr'])} seeds), SSIM {sdtm['ssim_mean'] - tome['ssim_mean']:+.4f} "
                         f"(higher at {ssim_wins})")
    return lines


MARKERS = {"sdtm": ("o", "#d62728", "SDTM preset"), "tome-plain": ("s", "#1f77b4", "ToMe, plain, equal FLOPs"),
           "tome-schedule": ("^", "#2ca02c", "ToMe on the preset's schedule, equal FLOPs")}


def draw_chart(results: dict[str, list[dict]], png: Path, title: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(len(results), 2, figsize=(11, 4.2 * len(results)), dpi=100, squeeze=False)
    for row, (model_name, rows) in enumerate(results.items()):
        metrics = (("psnr_mean", "PSNR vs unmerged (dB)"), ("ssim_mean", "SSIM vs unmerged"))
        for col, (metric, label) in enumerate(metrics):
            ax = axes[row][col]
            for family, (marker, color, legend) in MARKERS.items():
                pts = [r for r in rows if r["family"] == family]
                ax.scatter([r["flop_speedup"] for r in pts], [r[metric] for r in pts], marker=marker, color=color,
                           label=legend, s=45, zorder=3)
                if family == "sdtm":
                    for r in pts:
                        ax.annotate(r["preset"], (r["flop_speedup"], r[metric]), textcoords="offset points",
                                    xytext=(5, 4), fontsize=8)
            ax.set_xlabel("FLOP-model speedup (x)")
            ax.set_ylabel(label)
            ax.set_title(f"{model_name}", fontsize=10)
            ax.grid(alpha=0.3)
            if row == 0 and col == 0:
                ax.legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png)
    plt.close(fig)


def draw_strip(strips: dict[str, dict], png: Path, names: list[str]) -> None:
    """One row per model: the unmerged image of seed 0, then each case's."""
    from PIL import Image, ImageDraw
    columns = ["unmerged"] + names
    first = next(iter(strips.values()))["unmerged"]
    size = first.shape[-1]
    pad, label_h = 4, 24
    canvas = Image.new("RGB", (len(columns) * (size + pad) + pad, len(strips) * (size + label_h + pad) + pad), "white")
    draw = ImageDraw.Draw(canvas)
    for row, (model_name, strip) in enumerate(strips.items()):
        y = pad + row * (size + label_h + pad)
        for col, name in enumerate(columns):
            x = pad + col * (size + pad)
            short = name.replace("ToMe on ", "ToMe@").replace("'s schedule", "")
            draw.text((x, y), short[:22], fill="black")
            draw.text((x, y + 11), model_name if col == 0 else short[22:44], fill="black")
            tile = (strip[name][0] * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
            canvas.paste(Image.fromarray(tile), (x, y + label_h))
    canvas.save(png)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=SEEDS, help="seeds 0..N-1; seed s uses caption s mod 7")
    parser.add_argument("--steps", type=int, default=STEPS)
    parser.add_argument("--size", type=int, default=SIZE_PX, help="decoded image side in pixels (2 per latent pixel)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (1: the figures in docs/BENCHMARKS.md)")
    parser.add_argument("--fixture", type=Path, default=photo_codec.FIXTURE)
    parser.add_argument("--out", type=Path, default=IMAGES, help="folder for the chart, the sample strip and the JSON")
    args = parser.parse_args(argv)
    for name, value, low in (("--seeds", args.seeds, 1), ("--steps", args.steps, 2), ("--threads", args.threads, 1)):
        if value < low:
            parser.error(f"{name} must be at least {low}, got {value}")
    if args.size % 4 or not 16 <= args.size <= 128:
        parser.error(f"--size must be a multiple of 4 in [16, 128] (the fixture's 32 x 32 token table), "
                     f"got {args.size}")
    torch.set_num_threads(args.threads)
    import_comfy()
    import comfy.utils
    comfy.utils.PROGRESS_BAR_ENABLED = False
    pack = load_pack()
    from harness.tiny_sd3 import tiny_model
    fixture, clip = photo_codec.load_fixture(args.fixture)
    latent_hw = (args.size // photo_codec.PIXELS_PER_LATENT,) * 2
    grid = (latent_hw[0] // 2, latent_hw[1] // 2)
    shape = fixture_shape(pack, fixture, clip)
    models = {"photo fixture (trained)": fixture, "random weights, same shape": tiny_model("sd3-medium", seed=0)}
    started = time.perf_counter()
    results, strips = {}, {}
    for model_name, model in models.items():
        cases = build_cases(pack, shape, grid, run_progress(pack, model, args.steps))
        strips[model_name] = measure(pack, model, cases, args.seeds, args.steps, latent_hw, clip)
        results[model_name] = summary_rows(cases)
    seconds = time.perf_counter() - started
    title = (f"{shape.depth}-block MMDiT (hidden {shape.hidden}), {grid[0]}x{grid[1]} tokens, {args.steps} steps "
             f"{SAMPLER}/{SCHEDULER}, cfg {CFG}, {args.seeds} seeds")
    for model_name, rows in results.items():
        print(f"\n{model_name}: {title}\n")
        print(markdown_table(model_name, rows))
        print("\nSDTM minus ToMe at equal FLOPs (mean over seeds):")
        for line in verdict(rows):
            print("  " + line)
    args.out.mkdir(parents=True, exist_ok=True)
    chart, strip_png, json_path = (args.out / "fixture_fidelity.png", args.out / "fixture_fidelity_samples.png",
                                   args.out / "fixture_fidelity.json")
    draw_chart(results, chart, title)
    draw_strip(strips, strip_png, [r["case"] for r in next(iter(results.values())) if r["family"] != "tome-schedule"])
    data = {"setup": {"title": title, "steps": args.steps, "seeds": args.seeds, "size_px": args.size, "cfg": CFG,
                      "sampler": SAMPLER, "scheduler": SCHEDULER, "tokens": grid, "threads": args.threads,
                      "fixture": str(args.fixture.relative_to(REPO) if args.fixture.is_relative_to(REPO)
                                     else args.fixture),
                      "torch": torch.__version__, "machine": platform.processor() or platform.machine(),
                      "seconds": round(seconds, 1)},
            "results": results}
    json_path.write_text(json.dumps(data, indent=1))
    print(f"\n{seconds:.0f} s; wrote {chart}, {strip_png}, {json_path}")
    return data


if __name__ == "__main__":
    main()
