"""The arithmetic of one MMDiT joint block with merged image tokens, as pure functions of tensors and the
block's own sub-modules (no per-run state), so that one definition serves eager runs and, under ComfyUI's
TorchCompileModel, compiled ones:

* :func:`block_prelude` - the image stream's modulation and normalised input, whose tokens the partition
  is computed from (eager: a few small ops);
* :func:`merged_joint_block` - the rest of the block: text stream, merged attention and MLP, unmerge and
  cache blending; entered through one function per kind of call (store, structure, detail), and
  :func:`full_joint_block` for blocks that do not merge.

The partition between them (``nodes.hook``) stays eager: it updates the run's priority counter and RNG.
Under compile the entry points are compiled with dynamic shapes (:func:`compile_block_functions`): the
group count G of a partition is read from its tensors' shapes, so a new count at each step reuses the
same graph.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import comfy.patcher_extension
import torch
from comfy.ldm.modules.diffusionmodules import mmdit as comfy_mmdit

from ..sdtm_ops import Partition, blend_with_cache, cached_share, merge_tokens, unmerge_tokens

# The host's settings of torch.compile (TorchCompileModel: comfy_api.torch_helpers.set_torch_compile_wrapper)
# and the key of its APPLY_MODEL wrapper, both in a ModelPatcher's model_options.
HOST_COMPILE_KWARGS = "torch_compile_kwargs"
HOST_COMPILE_KEY = "torch.compile"


def x_modulation(xb, vec: torch.Tensor) -> dict:
    """adaLN chunks of the image block [B, C] each, named; shifts are None for scale_mod_only blocks."""
    if xb.x_block_self_attn:
        names = ("shift_msa", "scale_msa", "gate_msa", "shift_mlp", "scale_mlp", "gate_mlp",
                 "shift_msa2", "scale_msa2", "gate_msa2")
    elif xb.scale_mod_only:
        names = ("scale_msa", "gate_msa", "scale_mlp", "gate_mlp")
    else:
        names = ("shift_msa", "scale_msa", "gate_msa", "shift_mlp", "scale_mlp", "gate_mlp")
    mods = dict(zip(names, xb.adaLN_modulation(vec).chunk(len(names), dim=1)))
    mods.setdefault("shift_msa", None)
    mods.setdefault("shift_mlp", None)
    return mods


def block_prelude(xb, x: torch.Tensor, vec: torch.Tensor) -> tuple[dict, torch.Tensor, torch.Tensor]:
    """The image block's modulation chunks, its normalised input x_norm [B, N, C] and the modulated
    attention input xn [B, N, C] (the partition's metric)."""
    mods = x_modulation(xb, vec)
    x_norm = xb.norm1(x)
    return mods, x_norm, comfy_mmdit.modulate(x_norm, mods["shift_msa"], mods["scale_msa"])


def merged_joint_block(block, x: torch.Tensor, context: torch.Tensor, vec: torch.Tensor, prelude: tuple,
                       part: Partition | None, attn_part: Partition | None, mode: str, bias: torch.Tensor | None,
                       cached: tuple[torch.Tensor | None, torch.Tensor | None], fresh_weight: float,
                       cached_weight: torch.Tensor | None, keep_outputs: bool, options: dict):
    """The joint block after :func:`block_prelude`: the image tokens x [B, N, C] enter the attention merged
    by ``attn_part`` and the MLP merged by ``part`` (None: unmerged); each branch output is unmerged before
    it joins the full-length residual. ``bias`` [B, 1, M + G] or None: added to the attention logits of the
    M text and G merged image keys (proportional attention: :func:`~sdtm_ops.merge.proportional_bias`).
    ``cached`` (attention, MLP) [B, N, C] or None: the cached outputs that the merged tokens of each branch
    are blended with (:func:`~sdtm_ops.merge.blend_with_cache`, weight ``fresh_weight`` of the fresh value),
    ``cached_weight`` the 0-dim tensor ``1 - fresh_weight``.
    Returns (img [B, N, C], txt [B, M, C] or None for the last block, the unmerged branch outputs
    (attention, MLP) before blending when ``keep_outputs``, else None)."""
    cb, xb = block.context_block, block.x_block
    modulate, attention = comfy_mmdit.modulate, comfy_mmdit.optimized_attention
    mods, x_norm, xn = prelude

    ctx_qkv, ctx_intermediates = cb.pre_attention(context, vec)
    q, k, v = xb.attn.pre_attention(merge_tokens(xn, attn_part, mode))
    n_txt = ctx_qkv[0].shape[1]
    attn = attention(torch.cat((ctx_qkv[0], q), dim=1), torch.cat((ctx_qkv[1], k), dim=1),
                     torch.cat((ctx_qkv[2], v), dim=1), heads=xb.attn.num_heads, mask=bias, transformer_options=options)
    context_out = None if cb.pre_only else cb.post_attention(attn[:, :n_txt], *ctx_intermediates)
    attn_out = mods["gate_msa"].unsqueeze(1) * xb.attn.post_attention(attn[:, n_txt:])
    if xb.x_block_self_attn:
        xn2 = modulate(x_norm, mods["shift_msa2"], mods["scale_msa2"])
        q2, k2, v2 = xb.attn2.pre_attention(merge_tokens(xn2, attn_part, mode))
        attn2 = attention(q2, k2, v2, heads=xb.attn2.num_heads, transformer_options=options,
                          mask=None if bias is None else bias[..., n_txt:])
        attn_out = attn_out + mods["gate_msa2"].unsqueeze(1) * xb.attn2.post_attention(attn2)
    attn_out = unmerge_tokens(attn_out, attn_part)
    share = cached_share(part, cached_weight, x.dtype) if cached_weight is not None and part is not None else None
    x = x + _blend(attn_out, cached[0], attn_part, fresh_weight, share)

    xm = modulate(xb.norm2(x), mods["shift_mlp"], mods["scale_mlp"])
    mlp_out = unmerge_tokens(mods["gate_mlp"].unsqueeze(1) * xb.mlp(merge_tokens(xm, part, mode)), part)
    x = x + _blend(mlp_out, cached[1], part, fresh_weight, share)
    return x, context_out, ((attn_out, mlp_out) if keep_outputs else None)


def _blend(fresh: torch.Tensor, cached: torch.Tensor | None, part: Partition | None, fresh_weight: float,
           share: torch.Tensor | None) -> torch.Tensor:
    return fresh if cached is None else blend_with_cache(fresh, cached, part, fresh_weight, share)


def full_joint_block(block, x: torch.Tensor, context: torch.Tensor, vec: torch.Tensor, options: dict):
    """The host's own joint block, unmerged, called as its MMDiT calls it: (txt [B, M, C] or None, img [B, N, C])."""
    return block(context, x, c=vec, transformer_options=options)


# One entry point per kind of merged call: torch.compile keeps its graphs per code object (at most
# torch._dynamo.config.recompile_limit, 8), and each kind of call has its own graph per kind of block
# (plain, dual attention, last), with or without a cache to blend.
def store_joint_block(block, x, context, vec, prelude, mode, options):
    """A full-length block whose branch outputs are kept for the cache (a protected step)."""
    return merged_joint_block(block, x, context, vec, prelude, None, None, mode, None, (None, None), 1.0, None, True,
                              options)


def structure_joint_block(block, x, context, vec, prelude, part, mode, bias, cached, fresh_weight, cached_weight,
                          options):
    """Attention and MLP merged by ``part`` (structure steps, ToMe)."""
    return merged_joint_block(block, x, context, vec, prelude, part, part, mode, bias, cached, fresh_weight,
                              cached_weight, False, options)


def detail_joint_block(block, x, context, vec, prelude, part, mode, cached, fresh_weight, cached_weight, options):
    """Full attention, the MLP merged by ``part`` (detail steps; structure steps with full attention)."""
    return merged_joint_block(block, x, context, vec, prelude, part, None, mode, None, cached, fresh_weight,
                              cached_weight, False, options)


@dataclass(frozen=True)
class BlockFunctions:
    """The block functions of a run: eager, or compiled with the host's torch.compile settings."""

    full: Callable = full_joint_block
    store: Callable = store_joint_block
    structure: Callable = structure_joint_block
    detail: Callable = detail_joint_block
    compiled: bool = False


EAGER = BlockFunctions()


def host_compile_settings(model_options: dict) -> dict | None:
    """The torch.compile settings of the host's TorchCompileModel on this model, or None when it is not
    compiled (no compile wrapper on APPLY_MODEL)."""
    settings = model_options.get(HOST_COMPILE_KWARGS)
    wrappers = comfy.patcher_extension.get_wrappers_with_key(comfy.patcher_extension.WrappersMP.APPLY_MODEL,
                                                             HOST_COMPILE_KEY, model_options, is_model_options=True)
    return settings if isinstance(settings, dict) and wrappers else None


def compile_block_functions(settings: dict) -> BlockFunctions:
    """The block functions compiled with the host's backend, mode and options, and dynamic shapes: the
    merged token count is symbolic, so the count that changes at each step does not recompile."""
    kwargs = {"backend": settings.get("backend", "inductor"), "mode": settings.get("mode"),
              "options": settings.get("options"), "dynamic": True}
    return BlockFunctions(*(torch.compile(fn, **kwargs) for fn in (full_joint_block, store_joint_block,
                                                                    structure_joint_block, detail_joint_block)),
                          compiled=True)
