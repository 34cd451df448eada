"""What SDTM's merge work costs next to the computation it shortens.

For B x N image tokens of width C: the time of the partition, the merges and the unmerges of one
structure step and of one detail step of a block (with and without cache blending), against one
Linear(C, 4C) on the same tokens and against one full SD3 joint block (ComfyUI's own JointBlock, random
weights, N image + 154 text tokens). Prints a table; the shares are ratios measured in one process,
interleaved, median of the repeats.

    .venv/bin/python -m benchmarks.bench_overhead                      # N = 1024 and 4096, C = 1536, B = 2
    .venv/bin/python -m benchmarks.bench_overhead --device cuda --dtype float16
"""
from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from sdtm_ops import (
    RunState,
    SDTMConfig,
    blend_with_cache,
    detail_merge_count,
    detail_partition,
    layout_key,
    merge_tokens,
    structure_merge_count,
    unmerge_tokens,
    window_partition,
)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn, device: torch.device, repeat: int) -> list[float]:
    """Seconds of ``repeat`` calls of fn (no warm-up: the caller warms each case up once)."""
    out = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        _sync(device)
        out.append(time.perf_counter() - t0)
    return out


def joint_block(hidden: int, heads: int, qk_norm: str | None, device, dtype):
    from harness.comfy_env import import_comfy
    import_comfy()
    import comfy.ops
    from comfy.ldm.modules.diffusionmodules.mmdit import JointBlock
    block = JointBlock(hidden, heads, mlp_ratio=4.0, qkv_bias=True, attn_mode="torch", pre_only=False,
                       qk_norm=qk_norm, dtype=dtype, device=device, operations=comfy.ops.disable_weight_init)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in block.parameters():
            p.copy_((torch.randn(p.shape, generator=g) / max(1, p[0].numel()) ** 0.5 if p.dim() > 1 else
                     0.02 * torch.randn(p.shape, generator=g)).to(p.dtype))
    return block


def measure(tokens: int, grid: tuple[int, int], hidden: int, batch: int, ratio: float, device, dtype,
            repeat: int) -> dict:
    h, w = grid
    g = torch.Generator().manual_seed(1)
    x = torch.randn(batch, tokens, hidden, generator=g).to(device, dtype)
    xm = torch.randn(batch, tokens, hidden, generator=g).to(device, dtype)
    ctx = torch.randn(batch, 154, hidden, generator=g).to(device, dtype)
    vec = torch.randn(batch, hidden, generator=g).to(device, dtype)
    run = RunState(SDTMConfig(seed=0), [1.0, 0.0], seed=0)
    layout = layout_key((1, 0), batch, tokens)
    grid_t = run.grid(h, w, x.device)
    gen = run.generator(x.device)
    n_win = structure_merge_count(tokens, ratio, 4, grid_t.num_windows)
    n_src = detail_merge_count(tokens, ratio, 3 * grid_t.num_windows)
    lin = torch.nn.Linear(hidden, 4 * hidden).to(device, dtype)
    block = joint_block(hidden, hidden // 64, None, device, dtype)
    part_s = window_partition(x, grid_t, n_win, run.priority(layout, x.device), 0.05)
    part_d = detail_partition(x, grid_t, n_src, run.priority(layout, x.device), gen)
    ys, yd = merge_tokens(x, part_s), merge_tokens(x, part_d)
    cached = torch.randn_like(x)

    def structure_step(blend: bool):
        part = window_partition(x, grid_t, n_win, run.priority(layout, x.device), 0.05)
        run.update_priority(layout, part)
        merge_tokens(x, part)
        merge_tokens(xm, part)
        a, m = unmerge_tokens(ys, part), unmerge_tokens(ys, part)
        if blend:
            blend_with_cache(a, cached, part, 0.1)
            blend_with_cache(m, cached, part, 0.1)

    def detail_step(blend: bool):
        part = detail_partition(x, grid_t, n_src, run.priority(layout, x.device), gen)
        run.update_priority(layout, part)
        merge_tokens(xm, part)
        m = unmerge_tokens(yd, part)
        if blend:
            blend_with_cache(m, cached, part, 0.1)

    cases = {
        "full joint block": lambda: block(ctx, x, c=vec, use_checkpoint=False),
        "Linear(C, 4C)": lambda: lin(x),
        "structure partition": lambda: window_partition(x, grid_t, n_win, run.priority(layout, x.device), 0.05),
        "structure step merge work": lambda: structure_step(False),
        "structure step + cache blend": lambda: structure_step(True),
        "detail partition": lambda: detail_partition(x, grid_t, n_src, run.priority(layout, x.device), gen),
        "detail step merge work": lambda: detail_step(False),
        "detail step + cache blend": lambda: detail_step(True),
    }
    times = {k: [] for k in cases}
    with torch.inference_mode():
        for fn in cases.values():  # one warm-up per case, not one per repeat
            fn()
        _sync(x.device)
        for _ in range(repeat):  # interleaved, so drifts of the machine hit every case alike
            for name, fn in cases.items():
                times[name] += timed(fn, x.device, 1)
    med = {k: statistics.median(v) for k, v in times.items()}
    return {"tokens": tokens, "grid": grid, "hidden": hidden, "batch": batch, "ratio": ratio,
            "windows": n_win, "merged_src": n_src, "ms": {k: v * 1e3 for k, v in med.items()},
            "share_of_block": {k: v / med["full joint block"] for k, v in med.items()},
            "share_of_linear": {k: v / med["Linear(C, 4C)"] for k, v in med.items()}}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--grids", default="32x32,64x64", help="token grids HxW, comma separated (default 32x32,64x64)")
    p.add_argument("--hidden", type=int, default=1536, help="token width C (SD3-medium: 1536)")
    p.add_argument("--batch", type=int, default=2, help="batch B, CFG halves included (default 2)")
    p.add_argument("--ratio", type=float, default=0.5, help="merge ratio of the step (default 0.5)")
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"])
    p.add_argument("--attention", default=None, choices=["pytorch", "split", "sub-quad"],
                   help="ComfyUI's attention backend for the joint block (default: ComfyUI's choice for the device)")
    p.add_argument("--json", help="also write the results to this file")
    args = p.parse_args(argv)
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    from harness.comfy_env import import_comfy
    import_comfy(device="cuda" if device.type == "cuda" else "cpu", attention=args.attention)
    import comfy.ldm.modules.diffusionmodules.mmdit as mmdit
    attention = getattr(mmdit.optimized_attention, "__name__", str(mmdit.optimized_attention))
    results = []
    print(f"# bench_overhead: device {device}, {args.dtype}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, B={args.batch}, C={args.hidden}, ratio {args.ratio}, "
          f"attention {attention}")
    for spec in args.grids.split(","):
        h, w = (int(v) for v in spec.lower().split("x"))
        r = measure(h * w, (h, w), args.hidden, args.batch, args.ratio, device, dtype, args.repeat)
        results.append(r)
        print(f"\nN = {h * w} ({h}x{w}): {r['windows']} windows collapsed in the structure step, "
              f"{r['merged_src']} src merged in the detail step")
        print(f"| {'work':30s} | {'ms':>9s} | {'% of joint block':>16s} | {'x Linear(C,4C)':>14s} |")
        print(f"|{'-' * 32}|{'-' * 11}|{'-' * 18}|{'-' * 16}|")
        for k, ms in r["ms"].items():
            print(f"| {k:30s} | {ms:9.2f} | {100 * r['share_of_block'][k]:15.2f}% | {r['share_of_linear'][k]:14.3f} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"device": str(device), "dtype": args.dtype, "torch": torch.__version__, "attention": attention,
                       "threads": torch.get_num_threads(), "results": results}, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
