"""SDTM under ComfyUI's TorchCompileModel: the graphs compiled, the images, and the time.

``--check`` (what tests/test_comfy_compile.py runs): a tiny SD3-family model through ComfyUI's real
TorchCompileModel node and KSampler, SDTM (a preset, its last block left unmerged) before the compile
node, sampled twice for ``--steps`` steps (another seed the second time). It reports, per compiled block
function of the pack (``nodes/joint_block.py``: full, store, structure, detail), the graphs dynamo keeps
for it, the block kinds of the model (plain, dual attention, last), whether the second run compiled anything new (a
per-step recompile would), whether any function hit dynamo's recompile limit, and the largest
difference of the latents from the same runs without compile.

Without ``--check``: CPU timings of the SD3-medium configuration (random weights, ``--depth`` joint
blocks, ``--res`` pixels, ``--steps`` steps, the SDTM preset ``--preset``): unpatched eager, unpatched
compiled, SDTM eager, SDTM compiled, interleaved after a warm-up (compilation excluded), as speedups over
unpatched eager.

ComfyUI is imported with PyTorch's attention (``--use-pytorch-cross-attention``, the default on NVIDIA
GPUs): the CPU default (sub-quadratic attention) asks psutil for free memory inside the block, a graph
break in every compiled block.

    .venv/bin/python -m benchmarks.bench_compile --check --steps 30 --json out.json
    .venv/bin/python -m benchmarks.bench_compile --res 512 --depth 2 --steps 8 --preset fast --repeat 3
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import torch

from harness.comfy_env import import_comfy, load_pack

BLOCK_FUNCTIONS = ("full_joint_block", "store_joint_block", "structure_joint_block", "detail_joint_block")


def block_kinds(diffusion_model) -> list[str]:
    """The kinds of joint blocks of an MMDiT, which compile to separate graphs: plain, dual attention, last."""
    kinds = []
    for i, block in enumerate(diffusion_model.joint_blocks):
        kind = "last" if block.context_block.pre_only else ("dual" if block.x_block.x_block_self_attn else "plain")
        if kind not in kinds:
            kinds.append(kind)
    return kinds


def graphs_per_function(pack) -> dict[str, int]:
    """Graphs dynamo keeps for each of the pack's block functions (its cache entries)."""
    from torch._C._dynamo.eval_frame import _debug_get_cache_entry_list
    joint_block = sys.modules[pack.hook.__name__.rsplit(".", 1)[0] + ".joint_block"]
    return {name: len(_debug_get_cache_entry_list(getattr(joint_block, name).__code__)) for name in BLOCK_FUNCTIONS}


def compile_node(model, backend: str):
    """ComfyUI's own TorchCompileModel node applied to ``model``."""
    from comfy_extras.nodes_torch_compile import TorchCompileModel
    return TorchCompileModel.execute(model, backend).args[0]


def check(variant: str, steps: int, backend: str, preset: str) -> dict:
    from harness.tiny_sd3 import sample, tiny_model
    pack = load_pack()
    model = tiny_model(variant, seed=0)
    depth = len(model.get_model_object("diffusion_model").joint_blocks)
    # the last block never merges, so that the unmerged blocks' function is compiled too
    config = pack.presets.preset_config(preset).replace(block_end=depth - 2)
    patched = pack.hook.patch_model(model, config, label=f"preset {preset}, blocks 0-{depth - 2}")
    compiled = compile_node(patched, backend)
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    runs = []
    for seed in (0, 1):
        started = time.perf_counter()
        out = sample(compiled, steps=steps, seed=seed)
        seconds = time.perf_counter() - started
        graphs = graphs_per_function(pack)
        report = compiled.model_options["transformer_options"]["sdtm"].latest().report
        eager = sample(patched, steps=steps, seed=seed)
        runs.append({"seed": seed, "seconds": round(seconds, 2), "graphs": graphs,
                     "unique_graphs": torch._dynamo.utils.counters["stats"]["unique_graphs"],
                     "flop_speedup": report["flop_speedup"], "phases": sorted(p for p, v in report["phases"].items()
                                                                             if v["steps"]),
                     "max_abs_diff": (out - eager).abs().max().item(), "latent_scale": eager.abs().max().item()})
    unpatched_compiled = sample(compile_node(model, backend), steps=steps, seed=0)
    return {"variant": variant, "steps": steps, "backend": backend, "preset": preset,
            "kinds": block_kinds(model.get_model_object("diffusion_model")),
            "recompile_limit": torch._dynamo.config.recompile_limit, "runs": runs,
            "unpatched_compile_diff": (unpatched_compiled - sample(model, steps=steps, seed=0)).abs().max().item()}


def timings(res: int, depth: int, steps: int, preset: str, backend: str, repeat: int) -> dict:
    from benchmarks.bench_speed import build_model, conditioning, interleaved
    nodes = import_comfy()
    pack = load_pack()
    device = torch.device("cpu")
    base = build_model("sd3-medium", depth, device, torch.float32)
    sdtm = pack.apply.execute(base, preset, -1.0, 0.0, 1.0, -1.0).args[0]
    models = {"unpatched eager": base, "unpatched compiled": compile_node(base, backend),
              "SDTM eager": sdtm, "SDTM compiled": compile_node(sdtm, backend)}
    ctx, pooled = conditioning(1, device, None)
    neg_ctx, neg_pooled = conditioning(1, device, None, seed=2)
    positive, negative = [[ctx, {"pooled_output": pooled}]], [[neg_ctx, {"pooled_output": neg_pooled}]]
    latent = {"samples": torch.zeros(1, 16, res // 8, res // 8)}

    def runner(model):
        return lambda: nodes.common_ksampler(model, 0, steps, 4.5, "euler", "sgm_uniform", positive, negative,
                                             latent, denoise=1.0)

    first = {}
    for name, model in models.items():  # the warm-up: compilation happens here
        started = time.perf_counter()
        runner(model)()
        first[name] = round(time.perf_counter() - started, 2)
    measured = interleaved({name: runner(model) for name, model in models.items()}, repeat, device)
    base_seconds = measured["unpatched eager"]["seconds"]
    report = sdtm.model_options["transformer_options"]["sdtm"].latest().report
    return {"model": "sd3-medium", "res": res, "depth": depth, "steps": steps, "preset": preset, "backend": backend,
            "repeat": repeat, "flop_speedup": report["flop_speedup"], "first_run_seconds": first,
            "seconds": {name: round(m["seconds"], 3) for name, m in measured.items()},
            "speedup": {name: round(base_seconds / m["seconds"], 3) for name, m in measured.items()},
            "graphs": graphs_per_function(pack)}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="graph counts and image differences (tiny model)")
    parser.add_argument("--variant", default="sd3.5-medium", help="tiny model of --check (harness.tiny_sd3)")
    parser.add_argument("--backend", default="inductor", help="TorchCompileModel backend (eager: trace only)")
    parser.add_argument("--preset", default=None, help="SDTM preset (default: balanced for --check, else fast)")
    parser.add_argument("--steps", type=int, default=None, help="steps (default: 30 for --check, else 8)")
    parser.add_argument("--res", type=int, default=512)
    parser.add_argument("--depth", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", "0")) or None)
    parser.add_argument("--json", type=Path, default=None, help="write the result here")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    import_comfy(attention="pytorch")
    if args.check:
        result = check(args.variant, args.steps or 30, args.backend, args.preset or "balanced")
    else:
        result = timings(args.res, args.depth, args.steps or 8, args.preset or "fast", args.backend, args.repeat)
    result.update(torch=torch.__version__, machine=platform.machine(), threads=torch.get_num_threads())
    text = json.dumps(result, indent=1)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    return result


if __name__ == "__main__":
    main()
