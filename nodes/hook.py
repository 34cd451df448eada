"""SDTM inside ComfyUI's MMDiT, through the host's own extension points.

* :func:`patch_model` clones a MODEL and registers, per joint block, a ``("double_block", i)``
  replacement under ``patches_replace["dit"]``, plus three keyed wrappers:
* OUTER_SAMPLE creates a :class:`~sdtm_ops.state.RunState` for each sampling run (counters, caches,
  the merge RNG seeded from the sampling seed), places the run on the model's sigma scale (progress as
  ComfyUI's start/end percents), keeps its report under the fingerprint of the latent it produced, logs
  the summary and frees everything at the end, also when sampling raises or is interrupted. A run that
  stops part-way (sigma above 0) leaves a read-only :class:`~sdtm_ops.state.RunCarry`; the rest of that run
  (a second KSamplerAdvanced, a refiner pass on the same model) goes on from that state: a run that starts at
  that sigma from the very latent it returned, adds no noise, has its seed and continues its schedule (the
  same scheduler and step count). Any other run starts afresh, and says why when it starts where a part
  stopped;
* PREDICT_NOISE gives each sampler evaluation (cond and uncond together, Heun's corrector included)
  the plan of its step;
* APPLY_MODEL reads, once per model call, the latent's token grid and hands the blocks a
  :class:`CallContext`.

The replacement re-implements a joint block from its own sub-modules, merging the image tokens
after modulation and before the qkv projection and the MLP, and unmerging each branch output
before it is added to the full-length residual. Text tokens are never merged. Whenever a block
does not merge (and keeps no cache) it calls the host's original block, so it is bit-identical.
The block's arithmetic lives in :mod:`.joint_block`. Under ComfyUI's TorchCompileModel the bookkeeping and
the partition run eagerly (``torch.compiler.disable``) and the block's arithmetic (merged, or unmerged in
place of the original block) is compiled on its own with dynamic shapes, so a new token count at each step
does not recompile anything.
"""
from __future__ import annotations

import dataclasses
import inspect
import logging
import time
from dataclasses import dataclass

import comfy.patcher_extension
import torch
from comfy.ldm.modules.diffusionmodules import mmdit as comfy_mmdit

from ..sdtm_ops import (
    BlockMerge,
    MMDiTShape,
    Phase,
    RunState,
    SDTMConfig,
    StepPlan,
    block_flops,
    block_is_merged,
    block_merge,
    layout_key,
    proportional_bias,
)
from .joint_block import EAGER, BlockFunctions, block_prelude
from .run_placement import place_run
from .run_records import KEY, PatchInfo, RunRecord, latent_fingerprint

log = logging.getLogger("SDTM")

RUN_KEY = "sdtm_run"  # transformer_options key of the current RunState (set per sampling run)
CALL_KEY = "sdtm_call"  # transformer_options key of the current CallContext (set per model call)
FUNCTIONS_KEY = "sdtm_block_functions"  # transformer_options key of the run's BlockFunctions (eager or compiled)

SUPPORTED = "SD3-medium, SD3.5-medium, SD3.5-large and SD3.5-large-turbo (ComfyUI's MMDiT)"


class UnsupportedModelError(ValueError):
    pass


def comfyui_version() -> str:
    try:
        import comfyui_version as v
        return v.__version__
    except Exception:  # the version file is missing in some installs; the message still helps
        return "unknown"


# ---------------------------------------------------------------------------------------------
# Patch-time checks
# ---------------------------------------------------------------------------------------------
_BLOCK_PARTS = {
    "x_block": ("adaLN_modulation", "norm1", "norm2", "attn", "mlp", "pre_only", "scale_mod_only",
                "x_block_self_attn"),
    "attn": ("qkv", "pre_attention", "post_attention", "num_heads"),
}


def check_supported(diffusion_model: torch.nn.Module) -> None:
    """Raise if the model is not an MMDiT whose joint blocks have the parts the replacement uses."""
    if not isinstance(diffusion_model, comfy_mmdit.MMDiT):
        kind = type(diffusion_model)
        known = {"comfy.ldm.aura.mmdit": "AuraFlow's "}.get(kind.__module__, "")
        raise UnsupportedModelError(
            f"SDTM supports {SUPPORTED}; this MODEL's diffusion model is {known}{kind.__name__} "
            f"({kind.__module__}.{kind.__qualname__}), not the SD3 family's MMDiT "
            f"({comfy_mmdit.MMDiT.__module__}.MMDiT), so SDTM cannot patch it.")
    blocks = getattr(diffusion_model, "joint_blocks", None)
    problem = None
    if blocks is None or len(blocks) == 0:
        problem = "the MMDiT has no joint_blocks"
    else:
        for i, block in enumerate(blocks):
            xb, cb = getattr(block, "x_block", None), getattr(block, "context_block", None)
            if xb is None or cb is None:
                problem = f"joint block {i} has no x_block/context_block"
                break
            missing = [p for p in _BLOCK_PARTS["x_block"] if not hasattr(xb, p)]
            missing += [f"attn.{p}" for p in _BLOCK_PARTS["attn"] if not hasattr(getattr(xb, "attn", None), p)]
            if getattr(xb, "x_block_self_attn", False):
                missing += [f"attn2.{p}" for p in _BLOCK_PARTS["attn"] if not hasattr(getattr(xb, "attn2", None), p)]
            missing += [p for p in ("pre_attention", "post_attention", "pre_only") if not hasattr(cb, p)]
            if missing:
                problem = f"joint block {i} lacks {', '.join(missing)}"
                break
            if xb.pre_only:
                problem = f"joint block {i} has an image block without MLP (pre_only)"
                break
    for name in ("modulate", "optimized_attention"):
        if problem is None and not callable(getattr(comfy_mmdit, name, None)):
            problem = f"comfy's mmdit module has no {name}()"
    if problem:
        raise UnsupportedModelError(
            f"SDTM cannot patch this MMDiT: {problem}. The block structure of ComfyUI "
            f"{comfyui_version()} is not the one SDTM was written for; please report it.")


# ---------------------------------------------------------------------------------------------
# Per-call context
# ---------------------------------------------------------------------------------------------
@dataclass
class CallContext:
    """What the blocks of one model call need to know."""

    run: RunState
    plan: StepPlan
    merge: BlockMerge
    h: int
    w: int
    layout: tuple
    blocks: torch.nn.ModuleList
    shape: MMDiTShape  # for the FLOP statistics (made once per run)
    stores: bool  # a protected step whose block outputs are kept for blending later
    functions: BlockFunctions = EAGER  # the merged block's arithmetic, compiled when the host compiles the model
    blocks_run: int = 0


# Samplers that evaluate the model a second time within a step at the NEXT step's sigma (Heun's
# corrector); their other evaluations all lie at or between the schedule's sigmas.
CORRECTOR_SAMPLERS = frozenset({"sample_heun", "sample_heunpp2"})


def _sampler_is_corrector(sampler) -> bool:
    function = getattr(sampler, "sampler_function", None)
    return getattr(function, "__name__", "") in CORRECTOR_SAMPLERS


# ---------------------------------------------------------------------------------------------
# Wrappers
# ---------------------------------------------------------------------------------------------
def _bound_arguments(fn, args, kwargs) -> dict:
    bound = inspect.signature(fn).bind_partial(*args, **kwargs)
    return bound.arguments


def outer_sample_wrapper(executor, *args, **kwargs):
    """One RunState per sampling run; its report, the summary and the release of every tensor at its end."""
    guider = executor.class_obj
    original_options = guider.model_options
    info: PatchInfo = original_options["transformer_options"][KEY]
    arguments = _bound_arguments(guider.outer_sample, args, kwargs)
    schedule = [float(s) for s in arguments["sigmas"].reshape(-1).tolist()]
    if len(schedule) < 2:  # no step to take (SplitSigmas at the last step): exactly as without SDTM
        return executor(*args, **kwargs)
    seed = arguments.get("seed")
    place = place_run(info, guider, schedule, arguments)
    run = RunState(info.config, schedule, 0 if seed is None else int(seed), progress=place.progress[:-1],
                   total_steps=place.total_steps, first_step=place.first_step,
                   corrector_sampler=_sampler_is_corrector(arguments.get("sampler")), carry=place.carry,
                   record_maps=info.record_maps, tail_progress=place.progress[-1] if schedule[-1] > 0 else None)
    guider.model_options = comfy.patcher_extension.copy_nested_dicts(original_options)
    guider.model_options["transformer_options"][RUN_KEY] = run
    guider.model_options["transformer_options"][FUNCTIONS_KEY] = info.block_functions(original_options)
    output = None
    try:
        output = executor(*args, **kwargs)
        return output
    finally:
        if run.started is not None:
            run.stats.wall_seconds = time.perf_counter() - run.started
        guider.model_options = original_options
        fingerprint = latent_fingerprint(output) if output is not None else None
        if fingerprint is not None and schedule[-1] > 0:  # stopped part-way: a later run may continue it
            info.keep_carry(schedule[-1], fingerprint, run.carry(store_on=torch.device("cpu")))
        summary = run.stats.summary()
        if info.carries:
            summary += f"; kept for continuations {info.carried_bytes / 2**20:.1f} MiB"
        report = {"label": info.label, "config": dataclasses.asdict(info.config), "num_steps": run.num_steps,
                  "first_step": run.first_step, "continued": run.continued, "afresh_because": place.afresh_because,
                  "steps_run": sorted(run.stats.steps),
                  "progress": [plan.progress for plan in run.plans], "seed": run.seed,
                  "sampler_corrector": run.corrector_sampler,
                  "latent_shape": list(output.shape) if isinstance(output, torch.Tensor) else None,
                  "summary": summary, "carried_bytes": info.carried_bytes, **run.stats.as_dict()}
        maps = {"grid": run.map_grid, "groups": run.merge_maps()} if run.record_maps else None
        info.record_run(fingerprint, RunRecord(report, maps))
        if run.stats.model_calls and not run.stats.patched_calls:
            log.warning("SDTM: no model call of this run went through SDTM's block patch, so nothing was merged: "
                        "another node replaced every joint block, or ComfyUI %s applies patches_replace['dit'] "
                        "differently from what SDTM was written for (please report it then).", comfyui_version())
        log.info("SDTM %s, %d steps%s: %s", info.label, run.num_steps,
                 f" (continuing from step {run.first_step})" if run.continued else "", summary)
        run.release()


def predict_noise_wrapper(executor, *args, **kwargs):
    """Per sampler evaluation (cond and uncond together): the step it belongs to, and the timing."""
    run: RunState | None = executor.class_obj.model_options.get("transformer_options", {}).get(RUN_KEY)
    if run is None:
        return executor(*args, **kwargs)
    timestep = args[1] if len(args) > 1 else kwargs["timestep"]
    started = time.perf_counter()
    if run.started is None:
        run.started = started
    run.active_plan = run.begin_evaluation(float(timestep.reshape(-1)[0]))
    try:
        return executor(*args, **kwargs)
    finally:
        run.active_plan = None
        run.stats.evaluations += 1
        if run.stats.evaluations == 1:
            run.stats.first_evaluation_seconds = time.perf_counter() - started


def apply_model_wrapper(executor, *args, **kwargs):
    """Per model call: token grid, step plan and batch layout for the blocks."""
    args = list(args)
    in_args = len(args) > 5
    options = args[5] if in_args else kwargs.get("transformer_options", {})
    run: RunState | None = options.get(RUN_KEY)
    info: PatchInfo | None = options.get(KEY)
    if run is None:
        if info is not None:
            info.log_once("outside run", logging.WARNING, "SDTM: the model was called outside a sampling run "
                          "(no OUTER_SAMPLE), so it runs without merging for such calls.")
        return executor(*args, **kwargs)

    x, sigma = args[0], args[1]
    diffusion = executor.class_obj.diffusion_model
    patch = diffusion.patch_size
    h, w = -(-x.shape[-2] // patch), -(-x.shape[-1] // patch)
    # The plan of the sampler's evaluation; a host read of sigma only for calls outside one.
    plan = run.active_plan if run.active_plan is not None else run.plan_at(float(sigma.reshape(-1)[0]))
    blocks = diffusion.joint_blocks
    chunks = tuple(options.get("cond_or_uncond", ()))
    shape = run.constant(("shape", id(blocks)), None, lambda: MMDiTShape(
        "model", len(blocks), diffusion.hidden_size,
        dual_attention_blocks=tuple(i for i, b in enumerate(blocks) if b.x_block.x_block_self_attn)))
    merge = block_merge(run.config, plan, h, w)
    if merge.kind == "none" and plan.phase is not Phase.FULL:  # nothing to merge on this grid: a full step
        plan = dataclasses.replace(plan, phase=Phase.FULL, ratio=0.0)
    call = CallContext(run=run, plan=plan, merge=merge, h=h, w=w,
                       layout=layout_key(chunks, x.shape[0], h * w), blocks=blocks, shape=shape,
                       stores=plan.protected and run.config.caches and run.merges_on(h, w),
                       functions=options.get(FUNCTIONS_KEY, EAGER))
    options = {**options, CALL_KEY: call}
    if in_args:
        args[5] = options
    else:
        kwargs["transformer_options"] = options
    run.stats.model_calls += 1
    out = executor(*args, **kwargs)
    if call.blocks_run:
        run.stats.patched_calls += 1
    else:  # another node replaced every block for this call (skip-layer guidance): it ran unmerged
        run.stats.bypassed_calls += 1
        info.log_once("bypassed", logging.INFO, "SDTM: a model call ran none of the %d joint blocks through SDTM "
                      "(skip-layer guidance, or another node's block patches for that call); such calls run "
                      "unmerged.", len(blocks))
    return out


# ---------------------------------------------------------------------------------------------
# The joint block
# ---------------------------------------------------------------------------------------------
def _standalone(t: torch.Tensor) -> torch.Tensor:
    """``t`` as a contiguous tensor that is not a view (a copy only when it is one): compiled graphs guard
    on strides and on a view's base."""
    return t if t._base is None and t.is_contiguous() else t.clone(memory_format=torch.contiguous_format)


class SDTMJointBlock:
    """``patches_replace["dit"][("double_block", index)]`` for one MMDiT joint block."""

    def __init__(self, index: int) -> None:
        self.index = index

    # The whole replacement runs outside the host's torch.compile trace (ComfyUI's TorchCompileModel): its
    # bookkeeping and the partition read and update the run's Python state, and a trace through it would
    # guard on each block's index and recompile per block. Under compile it calls the run's own compiled
    # block functions instead (joint_block.compile_block_functions, dynamic shapes).
    @torch.compiler.disable
    def __call__(self, args: dict, extra: dict) -> dict:
        options = args["transformer_options"]
        call: CallContext | None = options.get(CALL_KEY)
        if call is None:
            return extra["original_block"](args)
        x, context, vec = args["img"], args["txt"], args["vec"]
        merging, storing = self._account(call, x, context)
        if call.functions.compiled:  # the first block's inputs are views: copied, so all blocks share graphs
            x, context = _standalone(x), _standalone(context)
        if merging or storing:
            out = self._forward(call, call.blocks[self.index], x, context, vec, options, storing)
            if out is not None:
                return out
        if not call.functions.compiled:  # eager: the host's own block, bit-identical
            return extra["original_block"](args)
        txt, img = call.functions.full(call.blocks[self.index], x, context, vec, options)
        return {"img": img, "txt": txt}

    def _account(self, call: CallContext, img: torch.Tensor, txt: torch.Tensor) -> tuple[bool, bool]:
        """Record what this block does at this call; returns (merging, storing)."""
        call.blocks_run += 1
        run, cfg, i = call.run, call.run.config, self.index
        B, N, _ = img.shape
        if N != call.h * call.w:
            raise RuntimeError(f"SDTM: block {i} got {N} image tokens, the {call.h}x{call.w} latent grid "
                               f"has {call.h * call.w}; this MMDiT variant is not supported.")
        depth = len(call.blocks)
        merging = call.merge.kind != "none" and block_is_merged(cfg, i, depth)
        storing = call.stores and block_is_merged(cfg, i, depth)
        bm = call.merge if merging else BlockMerge("none", 0, N, N)
        last, dual = i == depth - 1, i in call.shape.dual_attention_blocks
        m = txt.shape[1]
        run.stats.record(call.plan.phase, call.plan.step, B, N,
                         bm.attn_tokens, bm.mlp_tokens,
                         B * block_flops(call.shape, bm.attn_tokens, bm.mlp_tokens, m, last, dual),
                         B * block_flops(call.shape, N, N, m, last, dual))
        return merging, storing

    def _partition(self, call: CallContext, metric: torch.Tensor):
        run = call.run
        part = run.partition(metric, run.grid(call.h, call.w, metric.device), call.merge, call.layout)
        if part is not None and run.record_maps:
            run.record_partition(call.plan.step, self.index, part, call.h, call.w)
        return part

    def _forward(self, call: CallContext, block, x: torch.Tensor, context: torch.Tensor, vec: torch.Tensor,
                 options: dict, storing: bool) -> dict | None:
        """The block of a merging or storing call (None: the partition merges nothing, run the full block)."""
        run, cfg, functions = call.run, call.run.config, call.functions
        prelude = block_prelude(block.x_block, x, vec)
        if storing:  # a protected step: full length, branch outputs kept for the cache
            img, txt, outputs = functions.store(block, x, context, vec, prelude, cfg.merge_mode, options)
            run.store(self.index, "attn", call.layout, outputs[0])
            run.store(self.index, "mlp", call.layout, outputs[1])
            return {"img": img, "txt": txt}
        part = self._partition(call, prelude[2])
        if part is None:
            return None
        full_attention = call.merge.attn_tokens == x.shape[1]  # detail phase, or structure_attention full
        cached, weight = (None, None), None
        if cfg.caches:
            cached = (None if full_attention else run.cached(self.index, "attn", call.layout, x),
                      run.cached(self.index, "mlp", call.layout, x))
            weight = run.constant(("cached_share", x.dtype), x.device, lambda: torch.full(
                (), 1.0 - cfg.cache_fresh_weight, dtype=x.dtype, device=x.device))
        if full_attention:
            img, txt, _ = functions.detail(block, x, context, vec, prelude, part, cfg.merge_mode, cached,
                                           cfg.cache_fresh_weight, weight, options)
        else:
            bias = self._attention_bias(call, part, context.shape[1], x.dtype) if cfg.proportional_attention else None
            img, txt, _ = functions.structure(block, x, context, vec, prelude, part, cfg.merge_mode, bias, cached,
                                              cfg.cache_fresh_weight, weight, options)
        return {"img": img, "txt": txt}

    @staticmethod
    def _attention_bias(call: CallContext, part, text_tokens: int, dtype: torch.dtype) -> torch.Tensor:
        """Proportional attention's logit bias [B, 1, M + G]. A window partition's group sizes are the same at
        every call with the same count (1 per singleton, k*k per window), so its bias is made once per run."""
        if call.merge.kind != "window":
            return proportional_bias(part, text_tokens, dtype)
        key = ("proportional_bias", part.batch, part.num_groups, part.num_singletons, text_tokens, dtype)
        return call.run.constant(key, part.rows.device, lambda: proportional_bias(part, text_tokens, dtype))


# ---------------------------------------------------------------------------------------------
# Patching
# ---------------------------------------------------------------------------------------------
_WRAPPERS = {comfy.patcher_extension.WrappersMP.OUTER_SAMPLE: outer_sample_wrapper,
             comfy.patcher_extension.WrappersMP.PREDICT_NOISE: predict_noise_wrapper,
             comfy.patcher_extension.WrappersMP.APPLY_MODEL: apply_model_wrapper}


def patch_model(model, config: SDTMConfig, label: str = "custom", record_maps: bool = False):
    """A clone of ``model`` (a ComfyUI ModelPatcher) whose MMDiT joint blocks merge tokens with SDTM.

    The caller's model is never modified. A model already patched by SDTM has its earlier patch
    replaced (the later node wins). Raises UnsupportedModelError for anything but an SD3-family MMDiT.
    ``record_maps``: each run keeps what it merged for the SDTM Merge Map (memory only a merge map uses;
    the nodes turn it on when their prompt holds a Merge Map fed by this model).
    """
    diffusion = model.get_model_object("diffusion_model")
    check_supported(diffusion)
    depth = len(diffusion.joint_blocks)
    if not any(block_is_merged(config, i, depth) for i in range(depth)):
        raise ValueError(
            f"block_start ({config.block_start}), block_end ({config.block_end}) and protect_blocks_every "
            f"({config.protect_blocks_every}) leave none of this model's {depth} joint blocks (0-{depth - 1}) to merge")
    patched = model.clone()
    options = patched.model_options["transformer_options"]
    if KEY in options:
        log.info("SDTM: this MODEL already carries an SDTM patch (%s); the new one (%s) replaces it.",
                 options[KEY].label, label)
    for wrapper_type in _WRAPPERS:
        patched.remove_wrappers_with_key(wrapper_type, KEY)
    replaced = options.get("patches_replace", {}).get("dit", {})
    foreign = [k for k, v in replaced.items() if k[0] == "double_block" and not isinstance(v, SDTMJointBlock)]
    if foreign:
        log.warning("SDTM: replacing %d joint-block patches of another node (%s); that node's effect on "
                    "those blocks is lost. Put SDTM before it, or remove one of the two.",
                    len(foreign), ", ".join(str(k[1]) for k in foreign[:8]))
    for i in range(len(diffusion.joint_blocks)):
        patched.set_model_patch_replace(SDTMJointBlock(i), "dit", "double_block", i)
    patched.model_options["transformer_options"][KEY] = PatchInfo(config, label, record_maps)
    for wrapper_type, wrapper in _WRAPPERS.items():
        patched.add_wrapper_with_key(wrapper_type, KEY, wrapper)
    return patched
