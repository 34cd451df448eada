"""Host cost of a merged joint block: kernel launches, host time, and the GPU speed above which the
block is bound by the host rather than by its arithmetic.

For each model family (the SD3-medium, SD3.5-medium and SD3.5-large configurations of
``sdtm_ops.MODEL_SHAPES``, built with ComfyUI's own classes) and each phase (structure,
detail), one model call runs through ComfyUI's ``apply_model`` with the pack's patch, and every aten
op dispatched inside each joint block is counted (``LaunchCounter``): ops that launch a kernel, i.e.
not views, not allocations, not ops that hand back one of their inputs untouched. Host syncs
(``.item()`` and friends) inside a block are counted apart and must be 0.

Host time (CPU: the thread's CPU time, one torch thread): the same blocks on a **narrow** model (width 64, one
head: the family's structure, qk-norm and dual attention, with the arithmetic taken out) on a small token grid; the
op sequence does not depend on the token count (the script checks that the counts at ``--grid`` and
``--time-grid`` agree).
GPU time: the block's FLOPs (``sdtm_ops.block_flops``) at the target grid, at the achieved rates of
``GPU_RATES``. Break-even: the achieved FLOP rate above which the host time of the merged block exceeds
its GPU time (the block becomes host-bound).

    .venv/bin/python -m benchmarks.bench_host --json docs/benchmarks/host_cost.json
"""
from __future__ import annotations

import argparse
import json
import platform
import time
from collections import Counter

import torch
from torch.utils._python_dispatch import TorchDispatchMode

# Achieved dense fp16 rates (TFLOP/s) for an SD3 joint block's GEMMs and flash attention, not peaks:
# H100 SXM peaks at 989 dense fp16 (fp32 accumulate); large GEMMs reach 60-70% of it, flash attention
# 2 (PyTorch SDPA) about 35-50%, so about 400 over a block. RTX 4090: 165 peak with fp32 accumulate
# (PyTorch's choice), about 65% achieved, so about 110.
GPU_RATES = {"H100 fp16": 400e12, "RTX 4090 fp16": 110e12}

# aten ops that allocate or describe tensors without launching a kernel
NO_KERNEL = {"empty", "empty_strided", "empty_like", "new_empty", "new_empty_strided", "sym_size", "sym_stride",
             "sym_numel", "sym_storage_offset", "lift_fresh", "detach", "alias", "set_", "resize_"}
SYNCS = {"_local_scalar_dense", "item", "nonzero", "is_nonzero", "equal", "_assert_async", "unique_consecutive",
         "masked_select", "repeat_interleave"}  # repeat_interleave only syncs without output_size


def _is_launch(func, args, out) -> bool:
    if func.is_view or func._schema.name.split("::")[-1] in NO_KERNEL:
        return False
    mutable = any(a.alias_info is not None and a.alias_info.is_write for a in func._schema.arguments)
    if not mutable and isinstance(out, torch.Tensor) and any(out is a for a in args):
        return False  # a no-op conversion handing back its input
    return True


class LaunchCounter(TorchDispatchMode):
    """Counts the kernel-launching aten ops and host syncs dispatched while ``block`` is set, per block."""

    def __init__(self) -> None:
        super().__init__()
        self.block: int | None = None
        self.launches: dict[int, Counter] = {}
        self.syncs: dict[int, Counter] = {}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if self.block is not None:
            name = func._schema.name.split("::")[-1]
            if name in SYNCS and not (name == "repeat_interleave" and (kwargs or {}).get("output_size")):
                self.syncs.setdefault(self.block, Counter())[name] += 1
            if _is_launch(func, args, out):
                self.launches.setdefault(self.block, Counter())[str(func.overloadpacket.__name__)] += 1
        return out

    def reset(self) -> None:
        self.launches.clear()
        self.syncs.clear()


def _pytorch_attention(func, *args, **kwargs):
    """Attention override: PyTorch SDPA (ComfyUI's default on NVIDIA GPUs), whatever the CPU default."""
    from comfy.ldm.modules.attention import attention_pytorch
    return attention_pytorch(*args, **kwargs)


class BlockProbe:
    """A clone of ``patcher`` whose every joint block goes through a ``patches_replace["dit"]`` entry that
    marks the block for a :class:`LaunchCounter` and times it; SDTM's own block patch, if any, is called
    inside it. ``call(step, num_steps)`` runs one model call at that step of a run started by ``start``."""

    def __init__(self, pack, patcher, batch: int, latent_hw: tuple[int, int], seed: int = 2) -> None:
        self.pack, self.counter = pack, LaunchCounter()
        self.model = patcher.clone()
        replaced = self.model.model_options["transformer_options"].get("patches_replace", {}).get("dit", {})
        depth = len(self.model.get_model_object("diffusion_model").joint_blocks)
        diffusion = self.model.get_model_object("diffusion_model")
        dev, dtype = next(diffusion.parameters()).device, next(diffusion.parameters()).dtype
        g = torch.Generator().manual_seed(seed)
        # the inputs first: the block markers choose their clock by the inputs' device
        self.x = torch.randn(batch, 16, *latent_hw, generator=g).to(dev, dtype)
        self.ctx = torch.randn(batch, 154, diffusion.context_embedder.in_features, generator=g).to(dev, dtype)
        self.pooled = torch.randn(batch, 2048, generator=g).to(dev, dtype)
        self.seconds: dict[int, list[float]] = {i: [] for i in range(depth)}
        self.batch, self.run = batch, None
        for i in range(depth):
            self.model.set_model_patch_replace(self._marker(i, replaced.get(("double_block", i))), "dit",
                                               "double_block", i)

    def _marker(self, index: int, inner):
        # On the CPU the clock is this thread's CPU time (one torch thread): time the process spends
        # descheduled by other processes is not host cost. On a GPU: wall time between two syncs.
        sync = self.x.device.type == "cuda"
        clock = time.perf_counter if sync else time.thread_time

        def block(args, extra):
            self.counter.block = index
            if sync:
                torch.cuda.synchronize()
            t0 = clock()
            try:
                return inner(args, extra) if inner is not None else extra["original_block"](args)
            finally:
                if sync:
                    torch.cuda.synchronize()
                self.seconds[index].append(clock() - t0)
                self.counter.block = None
        return block

    def start(self, config, sigmas: list[float]) -> None:
        self.run = self.pack.ops.RunState(config, sigmas, seed=0)
        self.sigmas = sigmas

    def call(self, step: int, count: bool = False) -> None:
        hook = self.pack.hook
        sigma = torch.full((self.batch,), self.sigmas[step], device=self.x.device)
        options = dict(self.model.model_options["transformer_options"], cond_or_uncond=[1, 0][: self.batch],
                       sigmas=sigma, optimized_attention_override=_pytorch_attention)
        options["wrappers"] = self.model.wrappers
        if self.run is not None:
            options[hook.RUN_KEY] = self.run
        for times in self.seconds.values():
            times.clear()
        # no_grad, not inference_mode: under inference_mode a dispatch mode sees composite ops (linear,
        # rms_norm, einsum) before they split into the kernels they launch
        with torch.no_grad():
            if count:
                self.counter.reset()
                with self.counter:
                    self.model.model.apply_model(self.x, sigma, c_crossattn=self.ctx, y=self.pooled,
                                                 transformer_options=options)
            else:
                self.model.model.apply_model(self.x, sigma, c_crossattn=self.ctx, y=self.pooled,
                                             transformer_options=options)


SIGMAS = [1.0, 0.75, 0.5, 0.0]  # a 3-step run: step 0 is protected (stores the cache), steps 1 and 2 merge


def phase_config(ops, phase: str, ratio: float, cache: bool):
    """The node's default preset's path (balanced: full step every 3rd, cache blending, proportional
    attention) or, ``cache`` off, the plain path without any of them, at a fixed ratio; switch puts steps 1
    and 2 of a 3-step run in ``phase``."""
    return ops.SDTMConfig(ratio=ratio, deviation=0.0, switch=1.0 if phase == "structure" else 0.0,
                          protect_every=3 if cache else 0, use_cache=cache, proportional_attention=cache)


def started_probe(pack, base, phase: str | None, ratio: float, cache: bool, batch: int,
                  latent_hw: tuple[int, int]) -> BlockProbe:
    """A probe of the unpatched (``phase`` None) or merged model whose run has done steps 0 (the protected
    step, which stores the cache) and 1, so that step 2 finds the per-run constants made."""
    if phase is None:
        probe = BlockProbe(pack, base, batch, latent_hw)
        probe.sigmas = SIGMAS
    else:
        config = phase_config(pack.ops, phase, ratio, cache)
        probe = BlockProbe(pack, pack.hook.patch_model(base, config, label=f"host {phase}"), batch, latent_hw)
        probe.start(config, SIGMAS)
        probe.call(0)
    probe.call(1)
    return probe


def block_launches(pack, base, phase: str | None, ratio: float, cache: bool, batch: int,
                   latent_hw: tuple[int, int], block: int) -> tuple[Counter, Counter]:
    """(launch counts, sync counts) of one joint block in a merged model call (``phase`` None:
    unpatched): the first call of step 2 of its run, after step 1 merged the same way (per-run
    constants made), as in a sampling run with cond and uncond batched."""
    probe = started_probe(pack, base, phase, ratio, cache, batch, latent_hw)
    probe.call(2, count=True)
    return probe.counter.launches.get(block, Counter()), probe.counter.syncs.get(block, Counter())


def host_seconds(pack, base, phase: str | None, ratio: float, cache: bool, batch: int,
                 latent_hw: tuple[int, int], block: int, repeat: int) -> float:
    """Least wall time of one joint block on the (narrow) model over ``repeat`` model calls (the least is
    the host cost with the fewest interruptions from other processes)."""
    probe = started_probe(pack, base, phase, ratio, cache, batch, latent_hw)
    out = []
    for _ in range(repeat):
        probe.call(2)
        out.append(probe.seconds[block][0])
    return min(out)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default="sd3-medium,sd3.5-medium,sd3.5-large")
    p.add_argument("--grid", type=int, default=64, help="token grid side of the op count and FLOPs (64: 1024x1024)")
    p.add_argument("--count-grid", type=int, default=None,
                   help="token grid side of the op count (default: --grid; the count does not depend on it)")
    p.add_argument("--time-grid", type=int, default=16, help="token grid side of the host timing (default 16)")
    p.add_argument("--batch", type=int, default=2, help="batch, CFG halves included (default 2)")
    p.add_argument("--ratio", type=float, default=0.5)
    p.add_argument("--repeat", type=int, default=20)
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"])
    p.add_argument("--threads", type=int, default=1,
                   help="CPU threads (default 1: with no arithmetic to share, more threads only add thread sync)")
    p.add_argument("--json", help="also write the results to this file")
    args = p.parse_args(argv)
    from harness.comfy_env import import_comfy, load_pack
    device = torch.device(args.device)
    torch.set_num_threads(args.threads)
    import_comfy(device="cuda" if device.type == "cuda" else "cpu")
    pack = load_pack()
    from benchmarks.bench_speed import build_model
    ops = pack.ops
    block = 1  # a middle block: neither the first (per-run constants) nor the last (no text output)
    rows = []
    print(f"# bench_host: device {device}, {args.dtype}, torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"batch {args.batch}, ratio {args.ratio}, FLOPs at {args.grid}x{args.grid} tokens, op count at "
          f"{args.count_grid or args.grid}x{args.count_grid or args.grid}, host time at "
          f"{args.time_grid}x{args.time_grid} tokens on a width-64 model; GPU rates "
          + ", ".join(f"{k} {v / 1e12:.0f} TFLOP/s" for k, v in GPU_RATES.items()))
    print("| model | phase | cache | launches unpatched | launches merged | extra | host ms merged "
          "| host ms unpatched | GPU ms H100 | GPU ms 4090 | break-even TFLOP/s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for name in args.models.split(","):
        base = build_model(name, 3, device, getattr(torch, args.dtype), hidden_depth=1)
        shape = ops.MODEL_SHAPES[name]
        dual = block in shape.dual_attention_blocks
        lat = (2 * (args.count_grid or args.grid),) * 2
        t_lat = (2 * args.time_grid, 2 * args.time_grid)
        plain, plain_syncs = block_launches(pack, base, None, args.ratio, False, args.batch, lat, block)
        plain_small, _ = block_launches(pack, base, None, args.ratio, False, args.batch, t_lat, block)
        t_plain = host_seconds(pack, base, None, args.ratio, False, args.batch, t_lat, block, args.repeat)
        n = args.grid * args.grid
        full_flops = args.batch * ops.block_flops(shape, n, n, shape.text_tokens, False, dual)
        for phase in ("structure", "detail"):
            for cache in (True, False):
                config = phase_config(ops, phase, args.ratio, cache)
                bm = ops.block_merge(config, ops.step_plan(config, 2, 3), args.grid, args.grid)
                counts, syncs = block_launches(pack, base, phase, args.ratio, cache, args.batch, lat, block)
                small, _ = block_launches(pack, base, phase, args.ratio, cache, args.batch, t_lat, block)
                if sum(small.values()) != sum(counts.values()) or sum(plain_small.values()) != sum(plain.values()):
                    raise RuntimeError(f"op counts depend on the token grid: {sum(counts.values())} at "
                                       f"{args.count_grid or args.grid}, {sum(small.values())} at {args.time_grid}")
                seconds = host_seconds(pack, base, phase, args.ratio, cache, args.batch, t_lat, block, args.repeat)
                flops = args.batch * ops.block_flops(shape, bm.attn_tokens, bm.mlp_tokens, shape.text_tokens,
                                                     False, dual)
                gpu = {k: flops / r for k, r in GPU_RATES.items()}
                row = {"model": name, "phase": phase, "cache": cache, "grid": args.grid,
                       "count_grid": args.count_grid or args.grid, "time_grid": args.time_grid, "batch": args.batch,
                       "ratio": args.ratio, "block": block, "dual_attention": dual,
                       "attn_tokens": bm.attn_tokens, "mlp_tokens": bm.mlp_tokens,
                       "launches_unpatched": sum(plain.values()), "launches_merged": sum(counts.values()),
                       "extra_launches": sum(counts.values()) - sum(plain.values()),
                       "syncs_merged": sum(syncs.values()), "syncs_unpatched": sum(plain_syncs.values()),
                       "ops_unpatched": dict(plain), "ops_merged": dict(counts),
                       "host_ms_merged": seconds * 1e3, "host_ms_unpatched": t_plain * 1e3,
                       "flops_merged": flops, "flops_unpatched": full_flops,
                       "gpu_ms_merged": {k: v * 1e3 for k, v in gpu.items()},
                       "break_even_tflops": flops / seconds / 1e12}
                rows.append(row)
                print(f"| {name} | {phase} | {'on' if cache else 'off'} | {row['launches_unpatched']} | "
                      f"{row['launches_merged']} | +{row['extra_launches']} | {seconds * 1e3:.2f} | "
                      f"{t_plain * 1e3:.2f} | {gpu['H100 fp16'] * 1e3:.2f} | {gpu['RTX 4090 fp16'] * 1e3:.2f} | "
                      f"{row['break_even_tflops']:.0f} |")
                if row["syncs_merged"]:
                    print(f"  host syncs in the merged block: {dict(syncs)}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"device": str(device), "dtype": args.dtype, "torch": torch.__version__,
                       "machine": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
                       "time_grid": args.time_grid, "repeat": args.repeat,
                       "gpu_rates_tflops": {k: v / 1e12 for k, v in GPU_RATES.items()}, "results": rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
