"""Measured speedup of SDTM against the FLOP model, on ComfyUI's real MMDiT.

Builds the exact SD3-medium / SD3.5-medium / SD3.5-large configuration with ComfyUI's own classes
(random weights; --depth keeps fewer joint blocks, which per-block figures do not depend on), then,
in one process and interleaved (A, B, A, B, ...):

* block: one model call whose step is a structure step, then one whose step is a detail step, at a
  fixed ratio, unpatched vs patched; reported per joint block;
* schedule: a whole sampling run of --steps steps through ComfyUI's KSampler path (nodes.common_ksampler),
  unpatched vs each preset vs the ToMe baseline.

For each: the measured speedup, the FLOP-model speedup (sdtm_ops.cost; for schedules the one the run's
own report computed from what its blocks did), their ratio (efficiency) and the peak memory (CUDA:
max_memory_allocated; CPU: peak RSS, reset per case).

    .venv/bin/python -m benchmarks.bench_speed --depth 2 --res 512,1024 --steps 10
    python3 -m benchmarks.bench_speed --device cuda --dtype float16 --res 1024 --steps 30   # full depth
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import torch

from harness.tiny_sd3 import fill_random_weights
from sdtm_ops import MODEL_SHAPES


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    elif os.path.exists("/proc/self/clear_refs"):
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets the peak resident set size (VmHWM)


def peak_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated()
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


def build_model(name: str, depth: int | None, device: torch.device, dtype: torch.dtype,
                hidden_depth: int | None = None):
    """A ComfyUI ModelPatcher of the named model's exact configuration with random weights.
    ``hidden_depth`` replaces the depth that sets the width (64 * depth) and head count: a narrow model
    of the same structure (qk-norm, dual attention) for host-cost measurements."""
    import comfy.model_management
    import comfy.model_patcher
    import comfy.supported_models
    spec = MODEL_SHAPES[name]
    blocks = depth or spec.depth
    pmax = spec.pos_embed_max_size
    width_depth = hidden_depth or spec.depth
    unet_config = {
        "in_channels": 16, "out_channels": 16, "patch_size": 2, "depth": width_depth, "num_blocks": blocks,
        "input_size": None, "adm_in_channels": 2048, "pos_embed_max_size": pmax, "num_patches": pmax * pmax,
        "context_embedder_config": {"target": "torch.nn.Linear",
                                    "params": {"in_features": 4096, "out_features": 64 * width_depth}},
        "qk_norm": spec.qk_norm, "pos_embed_scaling_factor": None,
        "x_block_self_attn_layers": [i for i in spec.dual_attention_blocks if i < blocks],
    }
    config = comfy.supported_models.SD3(unet_config)
    config.set_inference_dtype(dtype, None)
    model = config.get_model({}, device=device)
    fill_random_weights(model.diffusion_model, seed=0)
    patcher = comfy.model_patcher.ModelPatcher(model, load_device=device,
                                               offload_device=torch.device("cpu") if device.type == "cuda" else device)
    comfy.model_management.load_models_gpu([patcher])
    return patcher


def conditioning(batch: int, device, dtype, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    ctx = torch.randn(batch, 154, 4096, generator=g)
    pooled = torch.randn(batch, 2048, generator=g)
    return ctx, pooled


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def interleaved(cases: dict, repeat: int, device: torch.device) -> dict:
    """Median seconds and peak memory of each case, run A, B, C, A, B, C, ... after one warm-up each."""
    times = {k: [] for k in cases}
    peaks = {k: 0 for k in cases}
    for fn in cases.values():
        fn()
    for _ in range(repeat):
        for name, fn in cases.items():
            _sync(device)
            reset_peak(device)
            t0 = time.perf_counter()
            fn()
            _sync(device)
            times[name].append(time.perf_counter() - t0)
            peaks[name] = max(peaks[name], peak_bytes(device))
    return {k: {"seconds": statistics.median(v), "all_seconds": v, "peak_bytes": peaks[k]} for k, v in times.items()}


def block_part(pack, base, name: str, res: int, batch: int, ratio: float, repeat: int, device, dtype) -> list[dict]:
    """One model call at a structure step and at a detail step of the given ratio, unpatched vs patched."""
    ops, hook = pack.ops, pack.hook
    model = base.model
    diffusion = model.diffusion_model
    depth = len(diffusion.joint_blocks)
    lat = res // 8
    h = w = -(-lat // 2)
    x = torch.randn(batch, 16, lat, lat, generator=torch.Generator().manual_seed(2)).to(device)
    ctx, pooled = conditioning(batch, device, dtype)
    ctx, pooled = ctx.to(device), pooled.to(device)
    sigma = torch.full((batch,), 0.5, device=device)
    shape = ops.MMDiTShape(name, depth, diffusion.hidden_size,
                           dual_attention_blocks=tuple(i for i, b in enumerate(diffusion.joint_blocks)
                                                       if b.x_block.x_block_self_attn))
    rows = []
    for phase, switch in (("structure", 1.0), ("detail", 0.5)):
        config = ops.SDTMConfig(ratio=ratio, deviation=0.0, switch=switch, protect_every=0, use_cache=False)
        patched = hook.patch_model(base, config, label=f"block {phase}")
        base_options = dict(base.model_options["transformer_options"], cond_or_uncond=[0] * batch, sigmas=sigma)

        def call_patched():
            run = ops.RunState(config, [1.0, 0.5, 0.0], seed=0)  # a 2-step run; sigma 0.5 is its step 1
            options = dict(patched.model_options["transformer_options"], cond_or_uncond=[0] * batch, sigmas=sigma)
            options["wrappers"] = patched.wrappers  # what sampling merges into transformer_options
            options[hook.RUN_KEY] = run
            with torch.inference_mode():
                model.apply_model(x, sigma, c_crossattn=ctx, y=pooled, transformer_options=options)
            return run

        def call_base():
            with torch.inference_mode():
                model.apply_model(x, sigma, c_crossattn=ctx, y=pooled, transformer_options=base_options)

        run = call_patched()
        plan = ops.step_plan(config, 1, 2)
        assert plan.phase.value == phase, (plan, phase)
        bm = ops.block_merge(config, plan, h, w)
        flop = sum(ops.block_flops(shape, h * w, h * w, 154, b == depth - 1, b in shape.dual_attention_blocks)
                   for b in range(depth)) / sum(
            ops.block_flops(shape, bm.attn_tokens, bm.mlp_tokens, 154, b == depth - 1, b in shape.dual_attention_blocks)
            for b in range(depth))
        assert abs(run.stats.flop_speedup / flop - 1) < 1e-9, (run.stats.flop_speedup, flop, run.stats.as_dict())
        t = interleaved({"unpatched": call_base, "sdtm": call_patched}, repeat, device)
        measured = t["unpatched"]["seconds"] / t["sdtm"]["seconds"]
        rows.append({"part": "block", "phase": phase, "model": name, "res": res, "tokens": h * w, "ratio": ratio,
                     "attn_tokens": bm.attn_tokens, "mlp_tokens": bm.mlp_tokens,
                     "ms_per_block_unpatched": 1e3 * t["unpatched"]["seconds"] / depth,
                     "ms_per_block_sdtm": 1e3 * t["sdtm"]["seconds"] / depth,
                     "measured_speedup": measured, "flop_speedup": flop, "efficiency": measured / flop,
                     "peak_bytes_unpatched": t["unpatched"]["peak_bytes"], "peak_bytes_sdtm": t["sdtm"]["peak_bytes"]})
    return rows


def schedule_part(pack, base, name: str, res: int, batch: int, steps: int, cfg: float, presets: list[str],
                  tome: bool, repeat: int, device) -> list[dict]:
    """Whole sampling runs through ComfyUI's KSampler path: unpatched vs presets vs ToMe."""
    from harness.comfy_env import import_comfy
    nodes = import_comfy()
    ops, hook = pack.ops, pack.hook
    lat = res // 8
    ctx, pooled = conditioning(1, device, None)
    neg_ctx, neg_pooled = conditioning(1, device, None, seed=2)
    positive, negative = [[ctx, {"pooled_output": pooled}]], [[neg_ctx, {"pooled_output": neg_pooled}]]
    latent = {"samples": torch.zeros(batch, 16, lat, lat)}
    models = {"unpatched": base}
    for preset in presets:
        models[preset] = hook.patch_model(base, pack.presets.preset_config(preset), label=f"preset {preset}")
    if tome:
        models["tome"] = hook.patch_model(base, ops.SDTMConfig(method="tome", ratio=0.5, deviation=0.2,
                                                               protect_every=0, use_cache=False), label="tome")

    def runner(m):
        return lambda: nodes.common_ksampler(m, 0, steps, cfg, "euler", "sgm_uniform", positive, negative, latent,
                                             denoise=1.0, disable_noise=False)

    t = interleaved({k: runner(m) for k, m in models.items()}, repeat, device)
    rows = []
    for k, m in models.items():
        report = m.model_options["transformer_options"].get(hook.KEY)
        flop = report.latest().report["flop_speedup"] if report else 1.0
        measured = t["unpatched"]["seconds"] / t[k]["seconds"]
        rows.append({"part": "schedule", "config": k, "model": name, "res": res, "steps": steps, "batch": batch,
                     "cfg": cfg, "seconds": t[k]["seconds"], "measured_speedup": measured, "flop_speedup": flop,
                     "efficiency": measured / flop, "peak_bytes": t[k]["peak_bytes"],
                     "cache_peak_bytes": report.latest().report["cache"]["peak_bytes"] if report else 0})
    return rows


def markdown(rows: list[dict], meta: dict) -> str:
    out = [f"Device: {meta['device_name']} ({meta['device']}), {meta['dtype']}, torch {meta['torch']}, "
           f"ComfyUI {meta['comfyui']}, attention {meta['attention']}, {meta['threads']} CPU threads. "
           f"Command: `{meta['command']}`. Date: {meta['date']}.", ""]
    blocks = [r for r in rows if r["part"] == "block"]
    if blocks:
        out += ["| model | res | phase | ratio | image tokens attn / MLP | ms/block unpatched | ms/block SDTM | "
                "measured | FLOP model | efficiency |", "|---|---|---|---|---|---|---|---|---|---|"]
        for r in blocks:
            out.append(f"| {r['model']} | {r['res']} | {r['phase']} | {r['ratio']} | {r['attn_tokens']} / "
                       f"{r['mlp_tokens']} of {r['tokens']} | {r['ms_per_block_unpatched']:.1f} | "
                       f"{r['ms_per_block_sdtm']:.1f} | {r['measured_speedup']:.2f}x | {r['flop_speedup']:.2f}x | "
                       f"{100 * r['efficiency']:.0f}% |")
        out.append("")
    sched = [r for r in rows if r["part"] == "schedule"]
    if sched:
        out += ["| model | res | steps | config | seconds | measured | FLOP model | efficiency | peak memory | cache |",
                "|---|---|---|---|---|---|---|---|---|---|"]
        for r in sched:
            out.append(f"| {r['model']} | {r['res']} | {r['steps']} | {r['config']} | {r['seconds']:.2f} | "
                       f"{r['measured_speedup']:.2f}x | {r['flop_speedup']:.2f}x | {100 * r['efficiency']:.0f}% | "
                       f"{r['peak_bytes'] / 2**30:.2f} GiB | {r['cache_peak_bytes'] / 2**20:.0f} MiB |")
    return "\n".join(out) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default="sd3-medium", help=f"comma separated, of {', '.join(MODEL_SHAPES)}")
    p.add_argument("--depth", type=int, default=None, help="joint blocks to keep (default: the model's own)")
    p.add_argument("--res", default="512,1024", help="square resolutions in pixels, comma separated")
    p.add_argument("--parts", default="block,schedule", help="block, schedule or both")
    p.add_argument("--ratio", type=float, default=0.5, help="ratio of the block part (default 0.5)")
    p.add_argument("--steps", type=int, default=10, help="steps of the schedule part")
    p.add_argument("--batch", type=int, default=1, help="latent batch (CFG doubles it)")
    p.add_argument("--cfg", type=float, default=4.5)
    p.add_argument("--presets", default=None, help="comma separated (default: every preset)")
    p.add_argument("--no-tome", action="store_true", help="leave out the ToMe baseline")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", default=None, choices=["float32", "float16", "bfloat16"],
                   help="default: float32 on CPU, float16 on CUDA")
    p.add_argument("--attention", default=None, choices=["pytorch", "split", "sub-quad"],
                   help="ComfyUI's attention backend (default: ComfyUI's choice for the device)")
    p.add_argument("--json", help="write the results here")
    p.add_argument("--markdown", help="write the tables here")
    args = p.parse_args(argv)
    device = torch.device(args.device)
    dtype = getattr(torch, args.dtype or ("float16" if device.type == "cuda" else "float32"))
    for n in args.models.split(","):
        if n not in MODEL_SHAPES:
            p.error(f"--models: {n!r} is not one of {', '.join(MODEL_SHAPES)}")
    parts = set(args.parts.split(","))
    if not parts <= {"block", "schedule"}:
        p.error("--parts takes block, schedule or both")

    from harness.comfy_env import import_comfy, load_pack
    import_comfy(device="cuda" if device.type == "cuda" else "cpu", attention=args.attention)
    pack = load_pack()
    import comfy.ldm.modules.diffusionmodules.mmdit as mmdit
    import comfyui_version
    device_name = (torch.cuda.get_device_name() if device.type == "cuda"
                   else platform.processor() or platform.machine())
    meta = {"device": str(device), "device_name": device_name,
            "dtype": str(dtype).replace("torch.", ""), "torch": torch.__version__,
            "comfyui": comfyui_version.__version__,
            "attention": getattr(mmdit.optimized_attention, "__name__", str(mmdit.optimized_attention)),
            "threads": torch.get_num_threads(),
            "command": "python -m benchmarks.bench_speed " + " ".join(argv or os.sys.argv[1:]),
            "date": time.strftime("%Y-%m-%d")}
    print(f"# {meta}")
    rows = []
    presets = [s for s in args.presets.split(",") if s] if args.presets else list(pack.presets.PRESETS)
    for name in args.models.split(","):
        base = build_model(name, args.depth, device, dtype)
        for res in (int(r) for r in args.res.split(",")):
            if "block" in parts:
                rows += block_part(pack, base, name, res, 2 * args.batch, args.ratio, args.repeat, device, dtype)
            if "schedule" in parts:
                rows += schedule_part(pack, base, name, res, args.batch, args.steps, args.cfg,
                                      presets, not args.no_tome, args.repeat, device)
            print(markdown([r for r in rows if r["model"] == name and r["res"] == res], meta), flush=True)
        del base
    if args.json:
        Path(args.json).write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    if args.markdown:
        Path(args.markdown).write_text(markdown(rows, meta))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
