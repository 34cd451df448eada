"""The speed-fidelity front of SD3 acceleration in ComfyUI: SDTM against, and stacked with, the step caches
core ComfyUI ships (LazyCache, EasyCache), on the photo fixtures (docs/FIXTURE.md), through ComfyUI's
own loaders and KSampler (``photo_fixture.sample.sample_fixture``).

For every setting and seed: PSNR and SSIM of the decoded image against the unpatched image of the same
seed and prompt, and the compute the run really did, COUNTED BY HOOKS on the model (:class:`ComputeCounter`:
forward hooks on each joint block's image qkv projection and MLP record the batch and image tokens that
went through them per model call; a pre-hook on the diffusion model counts the model calls, so a step a
cache skipped counts zero). The counts become a FLOP-model speedup for SD3-medium and SD3.5-large at
1024x1024 (:func:`estimated_flops`: ``sdtm_ops.block_flops`` of the big model, each of its blocks taking
the token shares its proportional fixture block had). Optionally the measured CPU speedup of the same
settings on the SD3-medium configuration (random weights, ``benchmarks.bench_speed``'s model and
interleaved timing), with the speedup counted on that timed run. The settings, by group, are built in
``benchmarks.front_settings``; the verdict, tables and chart are ``benchmarks.front_report``'s.

    .venv/bin/python -m benchmarks.bench_front                      # the committed run (both fixtures)
    .venv/bin/python -m benchmarks.bench_front --fixtures photo --seeds 2 --steps 10 --groups lazy,presets
    .venv/bin/python -m benchmarks.bench_front --chart-only         # redraw the chart from the JSON
"""
from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from benchmarks.bench_fidelity import SIZE_PX, fixture_shape
from benchmarks.front_fewer import fewer_settings, merged_rows, resumed_setup, variant_fronts, variant_seeds
from benchmarks.front_report import (
    analysis_table,
    density_table,
    draw_chart,
    front_lines,
    front_verdict,
    markdown_table,
    preset_dominance,
)
from benchmarks.front_settings import Setting, build_settings, lazycache
from harness.comfy_env import REPO, import_comfy, load_pack
from photo_fixture import photo_codec
from photo_fixture.sample import CFG, SAMPLER, SCHEDULER, sample_fixture

JSON_DIR = REPO / "docs" / "benchmarks"
IMAGES = REPO / "docs" / "images"
# Each fixture of the front has its own name and JSON (front_<name>.json); the dense fixture is measured at
# 64 x 64 image tokens (256 pixels, SD3's 1024x1024 density) and, as dense-32, at 32 x 32 like the others.
FIXTURES = {"photo": photo_codec.FIXTURE, "deep": photo_codec.DEEP_FIXTURE, "dense": photo_codec.DENSE_FIXTURE,
            "dense-32": photo_codec.DENSE_FIXTURE}
FIXTURE_SIZES = {"dense": 256}  # decoded image side in pixels where it is not SIZE_PX
TARGET_MODELS = ("sd3-medium", "sd3.5-large")  # FLOP-model estimates at TARGET_RES
TARGET_RES = 1024
STEPS, SEEDS = 30, 8
LAZY_THRESHOLDS = (0.02, 0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.6, 0.8, 1.0, 1.5, 2.0, 3.0)  # run until past 3x
LAZY_STOP = 3.0
GROUPS = ("baseline", "lazy", "fewer", "easy", "tome", "presets", "sweeps", "analysis", "stacks", "tuned", "ideas")
SPEED_SETTINGS = ("LazyCache 0.1", "LazyCache 0.2", "preset quality", "preset balanced", "preset fast",
                  "balanced -> LazyCache 0.2", "late detail r=0.3 -> LazyCache 0.1")
VARIANTS = ("euler/sgm_uniform/20", "euler/sgm_uniform/50", "dpmpp_2m/karras/30")
VARIANT_LAZY_THRESHOLDS = (0.05, 0.1, 0.2, 0.4)  # enough of the sweep to place the presets against it


# ------------------------------------------------------------------------------------------------
# Counting the compute a run really did
# ------------------------------------------------------------------------------------------------
class ComputeCounter:
    """Forward hooks on a ComfyUI MMDiT that record, per model call and joint block, the batch and the
    image tokens [B, n, C] that entered the image stream's qkv projection (``x_block.attn.qkv``: the
    attention's image length) and its MLP (``x_block.mlp``). A forward pre-hook on the diffusion model
    counts model calls; a call a step cache skipped never reaches it. Use as a context manager."""

    def __init__(self, diffusion_model: torch.nn.Module) -> None:
        blocks = diffusion_model.joint_blocks
        self.depth = len(blocks)
        self.handles = [diffusion_model.register_forward_pre_hook(self._on_call)]
        for i, block in enumerate(blocks):
            self.handles.append(block.x_block.attn.qkv.register_forward_hook(self._on_tokens(i, 1)))
            self.handles.append(block.x_block.mlp.register_forward_hook(self._on_tokens(i, 2)))
        self.reset()

    def reset(self) -> None:
        self.calls = 0
        self.records: dict[tuple[int, int], list[int]] = {}  # (call, block) -> [batch, attn tokens, mlp tokens]

    def _on_call(self, module, args) -> None:
        self.calls += 1

    def _on_tokens(self, block: int, slot: int):
        def hook(module, args, output) -> None:
            x = args[0]
            record = self.records.setdefault((self.calls - 1, block), [x.shape[0], 0, 0])
            if record[0] != x.shape[0]:
                raise RuntimeError(f"block {block}: batch {x.shape[0]} after {record[0]} in one model call")
            record[slot] += x.shape[1]
        return hook

    def snapshot(self) -> dict:
        """The counts so far: model calls and the per (call, block) records."""
        return {"calls": self.calls, "records": dict(self.records)}

    def close(self) -> None:
        for handle in self.handles:
            handle.remove()
        self.handles = []

    def __enter__(self) -> "ComputeCounter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def token_totals(counts: dict, tokens: int) -> dict:
    """Model calls, block calls and the sample-tokens through attention and MLP (batch x tokens),
    with the block-call-equivalents (sample-tokens / tokens) for comparison across runs."""
    records = counts["records"].values()
    return {"model_calls": counts["calls"], "block_calls": len(counts["records"]),
            "attn_tokens": sum(b * a for b, a, _ in records), "mlp_tokens": sum(b * m for b, _, m in records),
            "full_tokens": sum(b * tokens for b, _, _ in records)}


def estimated_flops(ops, counts: dict, fixture_tokens: int, fixture_depth: int, shape, grid: tuple[int, int],
                    text_tokens: int | None = None) -> float:
    """FLOPs (``sdtm_ops.block_flops``) the counted run would have cost on ``shape`` at ``grid``: block j
    of the target takes the attention and MLP token shares fixture block j * depth_fixture // depth_target
    had in the same model call; a call that never ran costs nothing."""
    n = grid[0] * grid[1]
    m = shape.text_tokens if text_tokens is None else text_tokens
    total = 0.0
    calls = sorted({call for call, _ in counts["records"]})
    for call in calls:
        for j in range(shape.depth):
            record = counts["records"].get((call, j * fixture_depth // shape.depth))
            if record is None:
                continue
            batch, attn, mlp = record
            total += batch * ops.block_flops(shape, round(attn * n / fixture_tokens), round(mlp * n / fixture_tokens),
                                             m, j == shape.depth - 1, j in shape.dual_attention_blocks)
    return total


# ------------------------------------------------------------------------------------------------
# Running
# ------------------------------------------------------------------------------------------------
@dataclass
class Run:
    """What is fixed for one fixture and one sampler setup: the model, the prompts, the references."""

    pack: object
    model: object
    counter: ComputeCounter
    prompts: list  # (positive, negative) per seed
    references: list  # decoded unpatched image per seed
    reference_counts: list  # the unpatched run's counts per seed
    steps: int
    latent_hw: tuple[int, int]
    sampler: str
    scheduler: str
    shapes: dict  # name -> (MMDiTShape, grid, text tokens or None)
    inputs: list | None = None  # per seed: the latent a pass starts from (img2img / hires), None from noise
    denoise: float = 1.0
    first_seed: int = 0  # entry i of prompts / references is seed first_seed + i

    @property
    def tokens(self) -> int:
        return (self.latent_hw[0] // 2) * (self.latent_hw[1] // 2)


def sample_counted(run: Run, model, seed: int, steps: int | None = None) -> tuple[torch.Tensor, dict]:
    positive, negative = run.prompts[seed]
    run.counter.reset()
    latent = sample_fixture(model, run.first_seed + seed, positive, negative, steps or run.steps, run.latent_hw,
                            sampler=run.sampler, scheduler=run.scheduler,
                            latent=None if run.inputs is None else run.inputs[seed], denoise=run.denoise)
    return photo_codec.decode(latent), run.counter.snapshot()


def fixture_prompts(clip, seeds: int, first_seed: int = 0) -> list:
    """(positive, negative) conditioning per seed: seed s prompts the caption of photograph s mod 7."""
    negative = photo_codec.prompt_conditioning(clip, photo_codec.UNCONDITIONAL_PROMPT)
    captions = [photo_codec.PHOTOS[s % len(photo_codec.PHOTOS)].caption for s in range(first_seed, first_seed + seeds)]
    return [(photo_codec.prompt_conditioning(clip, caption), negative) for caption in captions]


def prepare_run(pack, model, clip, seeds: int, steps: int, latent_hw, sampler: str, scheduler: str,
                inputs: list | None = None, denoise: float = 1.0, first_seed: int = 0) -> Run:
    diffusion = model.model.diffusion_model
    counter = ComputeCounter(diffusion)
    prompts = fixture_prompts(clip, seeds, first_seed)
    grid = (latent_hw[0] // 2, latent_hw[1] // 2)
    shapes = {"fixture": (fixture_shape(pack, model, clip), grid, None)}
    for name in TARGET_MODELS:
        shapes[name] = (pack.ops.MODEL_SHAPES[name], pack.ops.token_grid(TARGET_RES, TARGET_RES), None)
    run = Run(pack, model, counter, prompts, [], [], steps, latent_hw, sampler, scheduler, shapes, inputs, denoise,
              first_seed)
    for seed in range(seeds):
        image, counts = sample_counted(run, model, seed)
        run.references.append(image)
        run.reference_counts.append(counts)
    return run


def measure_setting(run: Run, setting: Setting) -> Setting:
    from harness.image_metrics import psnr, ssim
    setting.seeds = []
    patched = setting.model = setting.build(run.model)
    depth = run.counter.depth
    for seed, reference in enumerate(run.references):
        image, counts = sample_counted(run, patched, seed, setting.steps)
        entry = {"seed": seed, "psnr": float(psnr(image, reference)[0]), "ssim": float(ssim(image, reference)[0]),
                 **token_totals(counts, run.tokens),
                 "reference_model_calls": run.reference_counts[seed]["calls"]}
        for name, (shape, grid, text) in run.shapes.items():
            full = estimated_flops(run.pack.ops, run.reference_counts[seed], run.tokens, depth, shape, grid, text)
            done = estimated_flops(run.pack.ops, counts, run.tokens, depth, shape, grid, text)
            entry[f"flops_{name}"], entry[f"flops_full_{name}"] = done, full
        setting.seeds.append(entry)
    return setting


def summary(setting: Setting, run: Run) -> dict:
    """Means over seeds; speedups are total unpatched FLOPs over total FLOPs of the run (all seeds)."""
    s = setting.seeds
    finite = [e["psnr"] for e in s if math.isfinite(e["psnr"])]
    full_tokens = sum(e["full_tokens"] for e in s)

    def token_share(key: str) -> float:
        return sum(e[key] for e in s) / full_tokens if full_tokens else 0.0

    row = {"name": setting.name, "family": setting.family, "params": setting.params,
           "psnr_mean": statistics.fmean(finite) if finite else math.inf,
           "psnr_min": min(e["psnr"] for e in s), "ssim_mean": statistics.fmean(e["ssim"] for e in s),
           "ssim_min": min(e["ssim"] for e in s),
           "mse_mean": statistics.fmean(10 ** (-p / 10) for p in finite) if finite else 0.0,
           "model_calls": sum(e["model_calls"] for e in s),
           "reference_model_calls": sum(e["reference_model_calls"] for e in s),
           "attn_share": token_share("attn_tokens"), "mlp_share": token_share("mlp_tokens")}
    row["skipped_calls"] = row["reference_model_calls"] - row["model_calls"]
    # token shares against the unpatched run's tokens (a skipped call counts zero)
    ref_tokens = sum(token_totals(c, run.tokens)["full_tokens"] for c in run.reference_counts)
    row["attn_tokens_vs_unpatched"] = sum(e["attn_tokens"] for e in s) / ref_tokens
    row["mlp_tokens_vs_unpatched"] = sum(e["mlp_tokens"] for e in s) / ref_tokens
    for name in run.shapes:
        row[f"speedup_{name}"] = sum(e[f"flops_full_{name}"] for e in s) / max(1e-9, sum(e[f"flops_{name}"] for e in s))
    row["seeds"] = s
    return row


def run_lazy_sweep(run: Run, log, done: dict | None = None, thresholds=LAZY_THRESHOLDS) -> list[dict]:
    """LazyCache over LAZY_THRESHOLDS, stopping after the first threshold past LAZY_STOP (SD3-medium
    estimate). ``done``: rows already measured, by name (--resume)."""
    rows = []
    for threshold in thresholds:
        name = f"LazyCache {threshold}"
        row = (done or {}).get(name) or summary(measure_setting(
            run, Setting(name, "lazycache", {"lazycache": threshold}, lazycache(threshold))), run)
        rows.append(row)
        log(row)
        if row["speedup_sd3-medium"] > LAZY_STOP:
            break
    return rows


# ------------------------------------------------------------------------------------------------
# Sampler variants and CPU timing
# ------------------------------------------------------------------------------------------------
def run_variants(pack, model, clip, settings_by_name: dict[str, Setting], variants: list[str], seeds: int,
                 latent_hw, log, thresholds=VARIANT_LAZY_THRESHOLDS, fewer: bool = False,
                 done: dict | None = None, save=None) -> dict:
    """LazyCache at ``thresholds``, the named settings and (``fewer``) the unpatched model at fewer steps, again
    with other step counts / samplers (no tuning). ``done``: the previous run's variants (--resume); their rows
    are kept and not measured again, and ``save(out)`` is called as each row lands."""
    out = {}
    for variant in variants:
        sampler, scheduler, steps = variant.split("/")
        before = (done or {}).get(variant, {}).get("rows", [])
        kept = {r["name"]: r for r in before}
        run = prepare_run(pack, model, clip, seeds, int(steps), latent_hw, sampler, scheduler)
        rows = []

        def keep(row: dict) -> None:
            log(row)
            rows.append(row)
            out[variant] = {"seeds": seeds, "rows": merged_rows(
                before, [{k: v for k, v in r.items() if k != "seeds"} for r in rows])}
            out[variant]["front"] = front_verdict(out[variant]["rows"])
            if save:
                save(out)
        run_lazy_sweep(run, keep, kept, thresholds)
        for setting in list(settings_by_name.values()) + (fewer_settings(int(steps)) if fewer else []):
            keep(kept.get(setting.name) or summary(measure_setting(run, setting), run))
        run.counter.close()
    return out


def measure_speed(pack, settings: list[Setting], res: int, depth: int, steps: int, repeat: int) -> list[dict]:
    """Whole KSampler runs on the SD3-medium configuration (random weights, ``depth`` blocks), each setting
    against unpatched, interleaved (bench_speed); with the speedup counted by hooks on the timed run."""
    from benchmarks.bench_speed import build_model, conditioning, interleaved
    nodes = import_comfy()
    device = torch.device("cpu")
    base = build_model("sd3-medium", depth, device, torch.float32)
    ctx, pooled = conditioning(1, device, None)
    neg_ctx, neg_pooled = conditioning(1, device, None, seed=2)
    positive, negative = [[ctx, {"pooled_output": pooled}]], [[neg_ctx, {"pooled_output": neg_pooled}]]
    lat = res // 8
    grid = (-(-lat // 2), -(-lat // 2))
    shape = pack.ops.MODEL_SHAPES["sd3-medium"]
    shape = pack.ops.MMDiTShape(shape.name, depth, shape.hidden)
    counts = {}
    with ComputeCounter(base.model.diffusion_model) as counter:
        def runner(name, model):
            def go():
                counter.reset()
                nodes.common_ksampler(model, 0, steps, CFG, SAMPLER, SCHEDULER, positive, negative,
                                      {"samples": torch.zeros(1, 16, lat, lat)})
                counts[name] = counter.snapshot()
            return go
        cases = {"unpatched": runner("unpatched", base)}
        cases.update({s.name: runner(s.name, s.build(base)) for s in settings if s.name != "unpatched"})
        timed = interleaved(cases, repeat, device)
    full = estimated_flops(pack.ops, counts["unpatched"], grid[0] * grid[1], depth, shape, grid)
    rows = []
    for name in cases:
        counted = full / estimated_flops(pack.ops, counts[name], grid[0] * grid[1], depth, shape, grid)
        measured = timed["unpatched"]["seconds"] / timed[name]["seconds"]
        rows.append({"name": name, "seconds": timed[name]["seconds"], "all_seconds": timed[name]["all_seconds"],
                     "measured_speedup": measured, "counted_flop_speedup": counted,
                     "model_calls": counts[name]["calls"], "efficiency": measured / counted})
        print(f"  speed {name}: {measured:.2f}x measured, {counted:.2f}x counted ({counts[name]['calls']} calls)",
              flush=True)
    return rows


# ------------------------------------------------------------------------------------------------
def fixture_run(pack, name: str, path: Path, args, out_json: Path) -> dict:
    started = time.perf_counter()
    model, clip = photo_codec.load_fixture(path)
    depth = len(model.model.diffusion_model.joint_blocks)
    size = args.size or FIXTURE_SIZES.get(name, SIZE_PX)
    latent_hw = (size // photo_codec.PIXELS_PER_LATENT,) * 2
    groups = set(args.groups.split(","))
    data = {"setup": {"fixture": name, "file": str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path),
                      "sha256": photo_codec.file_digest(path),
                      "depth": depth, "hidden": model.model.diffusion_model.hidden_size, "steps": args.steps,
                      "seeds": args.seeds, "size_px": size, "cfg": CFG, "sampler": args.sampler,
                      "scheduler": args.scheduler,
                      "target_res": TARGET_RES, "threads": args.threads, "torch": torch.__version__,
                      "machine": platform.processor() or platform.machine(), "groups": sorted(groups),
                      "command": "python -m benchmarks.bench_front " + " ".join(args.argv)},
            "results": []}

    def log(row: dict) -> None:
        print(f"  [{name}] {row['name']}: PSNR {row['psnr_mean']:.2f} (min {row['psnr_min']:.2f}), "
              f"est {row['speedup_sd3-medium']:.2f}x / {row['speedup_sd3.5-large']:.2f}x, "
              f"calls {row['model_calls']}/{row['reference_model_calls']}, "
              f"attn {100 * row['attn_tokens_vs_unpatched']:.0f}% mlp {100 * row['mlp_tokens_vs_unpatched']:.0f}%",
              flush=True)

    done, previous = {}, {}
    if args.resume and out_json.is_file():  # keep the rows of an earlier run of the same setup
        previous = json.loads(out_json.read_text())
        same = ("fixture", "sha256", "steps", "seeds", "size_px", "cfg", "sampler", "scheduler", "depth", "hidden")
        unrecorded = [k for k in same if k not in previous["setup"]]  # older runs did not record the digest
        if unrecorded:
            print(f"  {out_json.name} does not record {', '.join(unrecorded)}: not compared", flush=True)
        if all(previous["setup"][k] == data["setup"][k] for k in same if k not in unrecorded):
            done = {r["name"]: r for r in previous["results"]}
            for again in filter(None, args.rerun.split(";")):
                if done.pop(again, None) is None:
                    print(f"  --rerun: {again!r} is not in {out_json}; it runs if its group does", flush=True)
            print(f"  resuming: {len(done)} settings already measured in {out_json}", flush=True)
        else:
            print(f"  not resuming: {out_json} holds another setup", flush=True)
            previous = {}

    def merged() -> dict:
        """This run's data; resumed, the previous JSON with this run's rows merged in (benchmarks.front_fewer)."""
        data["seconds"] = round(time.perf_counter() - started, 1)
        if not previous:
            return data
        setup = resumed_setup(previous["setup"], data["setup"])
        return {**previous, **data, "setup": setup, "results": merged_rows(previous["results"], data["results"]),
                "seconds": round(previous.get("seconds", 0) + data["seconds"], 1)}

    def save() -> None:
        out_json.parent.mkdir(parents=True, exist_ok=True)
        out_json.write_text(json.dumps(merged(), indent=1))

    run = prepare_run(pack, model, clip, args.seeds, args.steps, latent_hw, args.sampler, args.scheduler)
    settings = build_settings(pack, depth, groups, args.steps)
    if args.only:
        settings = [s for s in settings if s.name == "unpatched" or s.name in args.only.split(";")]
    if "baseline" in groups:
        unpatched = settings.pop(0)
        data["results"].append(done.get(unpatched.name) or summary(measure_setting(run, unpatched), run))
        log(data["results"][-1])
    if "lazy" in groups:
        thresholds = [float(t) for t in args.lazy_thresholds.split(",")] if args.lazy_thresholds else LAZY_THRESHOLDS

        def keep(row: dict) -> None:
            log(row)
            data["results"].append(row)
            save()
        run_lazy_sweep(run, keep, done, thresholds)
    settings = (fewer_settings(args.steps) if "fewer" in groups else []) + settings
    rerun = set(filter(None, args.rerun.split(";"))) - {s.name for s in settings}
    if rerun:  # named settings of groups not run now: measured again in place
        lazy = [Setting(f"LazyCache {t}", "lazycache", {"lazycache": t}, lazycache(t)) for t in LAZY_THRESHOLDS]
        every = build_settings(pack, depth, set(GROUPS), args.steps) + fewer_settings(args.steps) + lazy
        settings += [s for s in every if s.name in rerun]
    for setting in settings:
        data["results"].append(done.get(setting.name) or summary(measure_setting(run, setting), run))
        log(data["results"][-1])
        save()
    run.counter.close()
    data["front"] = front_verdict(merged()["results"], at_least=1.0)
    if args.variants:
        named = {s.name: s for s in build_settings(pack, depth, groups, args.steps)
                 if s.name in args.variant_settings.split(",")}
        before = {variant: result for variant, result in (previous or {}).get("variants", {}).items()
                  if variant_seeds(previous["setup"], result, SEEDS) == args.variant_seeds}

        def save_variants(now: dict) -> None:
            data["variants"] = {**before, **now}
            save()
        run_variants(pack, model, clip, named, args.variants.split(","), args.variant_seeds, latent_hw, log,
                     fewer="fewer" in groups, done=before, save=save_variants)
    if args.speed_settings:
        wanted = set(args.speed_settings.split(","))
        lazy = [Setting(f"LazyCache {t}", "lazycache", {}, lazycache(t)) for t in LAZY_THRESHOLDS]
        chosen = [s for s in lazy + build_settings(pack, depth, groups | {"presets", "stacks", "tuned"}, args.steps)
                  if s.name in wanted]
        data["speed"] = {"setup": {"model": "sd3-medium", "depth": args.speed_depth, "res": args.speed_res,
                                   "steps": args.speed_steps, "repeat": args.speed_repeat},
                         "rows": measure_speed(pack, chosen, args.speed_res, args.speed_depth, args.speed_steps,
                                               args.speed_repeat)}
    save()
    return merged()


def main(argv: list[str] | None = None) -> dict:
    import sys
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fixtures", default="photo,deep", help=f"comma separated, of {', '.join(FIXTURES)}")
    parser.add_argument("--fixture-path", action="append", default=[], metavar="NAME=PATH",
                        help="use this file for a fixture name (default: tests/fixtures)")
    parser.add_argument("--seeds", type=int, default=SEEDS, help="seeds 0..N-1; seed s uses caption s mod 7")
    parser.add_argument("--steps", type=int, default=STEPS)
    parser.add_argument("--size", type=int, default=None,
                        help=f"decoded image side in pixels (default {SIZE_PX}; {FIXTURE_SIZES} where named)")
    parser.add_argument("--groups", default=",".join(GROUPS), help=f"comma separated, of {', '.join(GROUPS)}")
    parser.add_argument("--variants", default="", help=f"sampler/scheduler/steps, comma separated, e.g. {VARIANTS[0]}")
    parser.add_argument("--variant-settings", default="", help="setting names to run in the variants")
    parser.add_argument("--variant-seeds", type=int, default=SEEDS)
    parser.add_argument("--speed-settings", default=",".join(SPEED_SETTINGS),
                        help="setting names to time on the SD3-medium configuration ('' = no timing)")
    parser.add_argument("--speed-res", type=int, default=512)
    parser.add_argument("--speed-depth", type=int, default=2)
    parser.add_argument("--speed-steps", type=int, default=10)
    parser.add_argument("--speed-repeat", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--only", default="", help="run only these settings (names, ';' separated)")
    parser.add_argument("--lazy-thresholds", default="", help="LazyCache thresholds (default: the sweep to 3x)")
    parser.add_argument("--resume", action="store_true",
                        help="keep the settings front_<fixture>.json already holds for the same setup (and its rows "
                             "of groups not run now)")
    parser.add_argument("--rerun", default="", help="with --resume: measure these settings again (names, ';' "
                                                    "separated), e.g. 'preset reference;reference -> LazyCache 0.1'")
    parser.add_argument("--sampler", default=SAMPLER)
    parser.add_argument("--scheduler", default=SCHEDULER)
    parser.add_argument("--out", type=Path, default=JSON_DIR, help="folder of front_<fixture>.json")
    parser.add_argument("--chart", type=Path, default=IMAGES / "front.png")
    parser.add_argument("--suffix", default="", help="JSON file name suffix: front_<fixture><suffix>.json")
    parser.add_argument("--chart-only", action="store_true", help="redraw the chart from the JSON files")
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    names = args.fixtures.split(",")
    for n in names:
        if n not in FIXTURES:
            parser.error(f"--fixtures: {n!r} is not one of {', '.join(FIXTURES)}")
    paths = dict(FIXTURES)
    for item in args.fixture_path:
        key, _, value = item.partition("=")
        paths[key] = Path(value)
    if not args.chart_only:
        torch.set_num_threads(args.threads)
        import_comfy()
        import comfy.utils
        comfy.utils.PROGRESS_BAR_ENABLED = False
        pack = load_pack()
        for n in names:
            print(f"== fixture {n}: {paths[n]}", flush=True)
            data = fixture_run(pack, n, paths[n], args, args.out / f"front_{n}{args.suffix}.json")
            print(markdown_table(data["results"]))
            for line in front_lines(data["front"]):
                print("  front: " + line)
    results = {path.stem: json.loads(path.read_text()) for path in sorted(args.out.glob("front_*.json"))}
    if args.chart_only:
        for stem, data in results.items():
            print(f"\n## {stem}: {data['setup']['command']}\n")
            print(markdown_table(data["results"]) + "\n")
            print(analysis_table(data["results"]) + "\n")
            for line in front_lines(front_verdict(data["results"], at_least=1.0)):
                print("  front: " + line)
            for line in preset_dominance(data["results"]):
                print("  preset: " + line)
            for variant, result in data.get("variants", {}).items():
                for line in front_lines(result["front"]):
                    print(f"  {variant} front: " + line)
    if args.chart_only and {"front_dense", "front_dense-32"} <= set(results):
        print("\n## the dense fixture at both token densities\n")
        print(density_table({"64x64 tokens": results["front_dense"]["results"],
                             "32x32 tokens": results["front_dense-32"]["results"]}))
    drawn = dict(results)
    for stem, data in results.items():  # each sampler variant a panel of its own
        drawn.update(variant_fronts(stem, data))
    draw_chart(drawn, args.chart)
    print(f"wrote {args.chart}")
    return results


if __name__ == "__main__":
    main()
