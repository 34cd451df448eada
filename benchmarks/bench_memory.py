"""What SDTM's per-run state costs in memory, per model family at 1024x1024: the blending cache, the priority
counters, the merge-map record (only when a Merge Map reads the model) and the read-only carry a run that
stops part-way keeps for its continuation (docs/METHOD.md, "Memory").

Each family's configuration (width, heads, qk-norm, dual attention) with random weights runs through
ComfyUI's KSampler at reduced depth (``--depth`` blocks, every one merging) and resolution (``--res``),
batch 1 with CFG, float32 on the CPU, 30 steps, the default preset. The figures are the run's own
accounting (the Run Report's ``memory`` and ``cache``; the carry from ``PatchInfo.carried_bytes``), then
scaled to the family's block count and to ``--target-res``: every merging block holds the same cache and
map entries, the counters are per run, and all of them are [B, N, ...] tensors, proportional to the image
tokens N. (Measuring at 1024x1024 itself costs about an hour of these CPUs per family.) A float16 model
halves the cache and the carry's cache; counters (int32) and maps (int64) do not change with the dtype.

    .venv/bin/python -m benchmarks.bench_memory                          # measured at 512x512, 2 blocks
    .venv/bin/python -m benchmarks.bench_memory --res 256 --steps 10     # quicker
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from benchmarks.bench_speed import build_model, conditioning
from harness.comfy_env import import_comfy, load_pack

FAMILIES = ("sd3-medium", "sd3.5-medium", "sd3.5-large")
MIB = 2**20


def sample(model, steps: int, res: int, start=None, last=None):
    nodes = import_comfy()
    ctx, pooled = conditioning(1, None, None)
    neg_ctx, neg_pooled = conditioning(1, None, None, seed=2)
    (out,) = nodes.common_ksampler(model, 0, steps, 4.5, "euler", "sgm_uniform", [[ctx, {"pooled_output": pooled}]],
                                   [[neg_ctx, {"pooled_output": neg_pooled}]],
                                   {"samples": torch.zeros(1, 16, res // 8, res // 8)}, start_step=start,
                                   last_step=last)
    return out["samples"]


def measure(pack, family: str, depth: int, steps: int, res: int, preset: str) -> dict:
    """The state of one run with the Merge Map on, and of the first half of a split run (its carry)."""
    base = build_model(family, depth, torch.device("cpu"), torch.float32)
    config = pack.presets.preset_config(preset)
    with_map = pack.hook.patch_model(base, config, preset, record_maps=True)
    out = sample(with_map, steps, res)
    info = with_map.model_options["transformer_options"][pack.hook.KEY]
    report = info.run_of(out).report
    split = pack.hook.patch_model(base, config, preset)
    sample(split, steps, res, start=0, last=steps // 2)
    split_info = split.model_options["transformer_options"][pack.hook.KEY]
    tokens = (res // 16) ** 2
    cache, maps = report["cache"]["peak_bytes"], report["memory"]["merge_map_bytes"]
    peak = report["memory"]["peak_bytes"]
    return {"family": family, "measured_depth": depth, "full_depth": pack.ops.MODEL_SHAPES[family].depth,
            "tokens": tokens, "steps": steps, "preset": preset,
            "cache_peak": cache, "maps": maps, "state_peak": peak,
            "counters": peak - cache - maps,  # all three are held at the end of the run: what the peak adds
            "carry": split_info.carried_bytes, "runs_kept_carries": split_info.CARRIES_KEPT}


def scaled(row: dict, target_res: int) -> dict:
    """The figures at the family's full block count and at ``target_res``: cache, maps and the carry's cache
    grow with the merging blocks, the counters do not; every figure grows with the image tokens."""
    blocks = row["full_depth"] / row["measured_depth"]
    target_tokens = (target_res // 16) ** 2
    tokens = target_tokens / row["tokens"]
    counters = row["counters"] * tokens
    full = {"counters": counters, "cache_peak": row["cache_peak"] * tokens * blocks,
            "maps": row["maps"] * tokens * blocks}
    full["state_peak"] = full["cache_peak"] + full["maps"] + counters
    full["carry"] = (row["carry"] - row["counters"]) * tokens * blocks + counters
    return {**row, "target_res": target_res, "target_tokens": target_tokens,
            **{f"{k}_full": v for k, v in full.items()}}


def table(rows: list[dict]) -> str:
    lines = ["| model (blocks) | image tokens | cache | counters | merge map (only with a Merge Map) | "
             "during the run, all | carry kept per stopped run (at most 2) |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['family']} ({r['full_depth']}) | {r['target_tokens']} | "
                     f"{r['cache_peak_full'] / MIB:.0f} MiB | {r['counters_full'] / MIB:.2f} MiB | "
                     f"{r['maps_full'] / MIB:.1f} MiB | "
                     f"{r['state_peak_full'] / MIB:.0f} MiB | {r['carry_full'] / MIB:.0f} MiB |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--families", default=",".join(FAMILIES))
    parser.add_argument("--depth", type=int, default=2, help="blocks measured (then scaled to the full depth)")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--res", type=int, default=512, help="measured at this resolution")
    parser.add_argument("--target-res", type=int, default=1024, help="the table's resolution")
    parser.add_argument("--preset", default="balanced")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path, default=None, help="also write the rows here")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    import_comfy()
    import comfy.utils
    comfy.utils.PROGRESS_BAR_ENABLED = False
    pack = load_pack()
    if args.preset not in pack.presets.PRESETS:
        parser.error(f"--preset: {args.preset!r} is not one of {', '.join(pack.presets.PRESETS)}")
    rows = []
    for family in args.families.split(","):
        if family not in FAMILIES:
            parser.error(f"--families: {family!r} is not one of {', '.join(FAMILIES)}")
        rows.append(scaled(measure(pack, family, args.depth, args.steps, args.res, args.preset), args.target_res))
        print(json.dumps(rows[-1]), flush=True)
    print(f"\n{args.target_res}x{args.target_res}, {args.steps} steps, preset {args.preset}, batch 1 with CFG, "
          f"float32; measured at {args.res}x{args.res} with {args.depth} blocks, scaled to the tokens and to each "
          f"model's block count\n")
    print(table(rows))
    if args.json is not None:
        args.json.write_text(json.dumps({"command": "python -m benchmarks.bench_memory " + " ".join(argv or []),
                                         "rows": rows}, indent=1))
    return rows


if __name__ == "__main__":
    main()
