"""Merge tokens into their groups and copy group results back ("unmerge").

All functions take a :class:`~sdtm_ops.partition.Partition` (or None, the identity) and work on
whole tensors: one scatter-mean to merge, one gather to unmerge, one lerp to blend with a cache.
"""
from __future__ import annotations

import warnings

import torch

from .config import MERGE_MODES
from .partition import Partition

# PyTorch says once per process that index_reduce (the one-op scatter-mean below) "is in beta": a notice
# for us, not for the user's console. Only that message is filtered; every other warning still shows.
warnings.filterwarnings("ignore", message=r"index_reduce\(\) is in beta", category=UserWarning)

__all__ = ["merge_tokens", "unmerge_tokens", "blend_with_cache", "cached_share", "proportional_bias"]


def merge_tokens(x: torch.Tensor, part: Partition | None, mode: str = "mean",
                 token_weight: torch.Tensor | None = None, return_sizes: bool = False):
    """Merge tokens [B, N, C] -> [B, G, C].

    mode "mean": every group becomes the mean of its members (its dst included).
    mode "prune": every group keeps its representative's (dst's) value; the other members are
    dropped (the reference's pseudo-merge).
    token_weight [B, N] (mean only): a weighted mean, e.g. by how many original tokens each input
    token already stands for. With ``return_sizes`` the total weight per group ([B, G, 1], the
    group sizes when unweighted) is returned too, for proportional attention.
    None (the identity partition) returns x itself.
    """
    if mode not in MERGE_MODES:
        raise ValueError(f"merge mode must be one of {MERGE_MODES}, got {mode!r}")
    if part is None:
        if return_sizes:
            w = token_weight if token_weight is not None else x.new_ones(x.shape[:2])
            return x, w.unsqueeze(-1).to(x.dtype)
        return x
    B, N, C = x.shape
    if (B, N) != tuple(part.rows.shape):
        raise ValueError(f"tokens {tuple(x.shape)} do not match the partition's [B, N] = {tuple(part.rows.shape)}")
    if mode == "prune":
        if token_weight is not None:
            raise ValueError("token_weight applies to mode 'mean' only")
        merged = x.gather(1, part.rep.unsqueeze(-1).expand(B, part.num_groups, C))
        return (merged, part.sizes.unsqueeze(-1).to(x.dtype)) if return_sizes else merged

    # Half-precision sums are accumulated in float32: a large group (hundreds of src matched to
    # one dst in a flat region) would otherwise lose precision or overflow float16.
    acc = torch.float32 if x.dtype in (torch.float16, torch.bfloat16) else x.dtype
    src = x.reshape(B * N, C).to(acc)
    G = part.num_groups
    rows = part.rows.view(-1)
    if token_weight is None:
        # One op: every group has a member, so with include_self=False no row keeps the empty value.
        mean = torch.empty(B * G, C, dtype=acc, device=x.device).index_reduce_(0, rows, src, "mean",
                                                                                include_self=False)
        merged = mean.to(x.dtype).view(B, G, C)
        return (merged, part.float_sizes.view(B, G, 1).to(x.dtype)) if return_sizes else merged
    w = token_weight.reshape(B * N, 1).to(acc)
    weight = x.new_zeros(B * G, 1, dtype=acc).index_add_(0, rows, w)
    total = x.new_zeros(B * G, C, dtype=acc).index_add_(0, rows, src * w)
    merged = total.div_(weight).to(x.dtype).view(B, G, C)
    return (merged, weight.view(B, G, 1).to(x.dtype)) if return_sizes else merged


def unmerge_tokens(y: torch.Tensor, part: Partition | None) -> torch.Tensor:
    """Copy every group's value back to all of its members: [B, G, C] -> [B, N, C]."""
    if part is None:
        return y
    B, G, C = y.shape
    if (B, G) != (part.batch, part.num_groups):
        raise ValueError(f"merged tokens {tuple(y.shape)} do not match the partition's [B, G] = "
                         f"{(part.batch, part.num_groups)}")
    return y.reshape(B * G, C).index_select(0, part.rows.view(-1)).view(B, part.num_tokens, C)


def cached_share(part: Partition, fresh_weight: float | torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """[B, N, 1] share of the cached value in a blend: ``1 - fresh_weight`` at merged tokens (the
    partition's ``blended`` tokens), 0 at singletons. Made once per partition and shared by its branches;
    ``fresh_weight`` may be a 0-dim tensor of ``dtype`` on the tokens' device (a per-run constant: no
    host-to-device copy per block)."""
    if isinstance(fresh_weight, torch.Tensor):
        return part.blended.unsqueeze(-1) * fresh_weight
    return part.blended.unsqueeze(-1).to(dtype) * (1.0 - fresh_weight)


def blend_with_cache(fresh: torch.Tensor, cached: torch.Tensor, part: Partition | None,
                     fresh_weight: float, share: torch.Tensor | None = None) -> torch.Tensor:
    """Cache blending of an unmerged branch output [B, N, C].

    Tokens that took part in a merge get ``fresh_weight * fresh + (1 - fresh_weight) * cached``;
    tokens that stayed singletons keep their fresh value exactly. ``share``: :func:`cached_share` of
    the partition, when already made.
    """
    if part is None or fresh_weight >= 1.0:
        return fresh
    if cached.shape != fresh.shape:
        raise ValueError(f"cached {tuple(cached.shape)} and fresh {tuple(fresh.shape)} differ in shape")
    if share is None:
        share = cached_share(part, fresh_weight, fresh.dtype)
    return torch.lerp(fresh, cached.to(fresh.dtype), share)


def proportional_bias(part: Partition, leading: int, dtype: torch.dtype) -> torch.Tensor:
    """Additive attention bias [B, 1, leading + G] for keys laid out as ``leading`` unmerged tokens (the
    text, 0) followed by the partition's G groups (log of each group's size; 0 for singletons).

    ``[B, 1, M]`` broadcasts over heads and queries in every attention of ComfyUI (``mask=``), so no
    ``[N x N]`` tensor is made; it is built on the device without a host read.
    """
    B, G = part.batch, part.num_groups
    log_sizes = part.float_sizes.view(B, 1, G).log().to(dtype)
    if leading == 0:
        return log_sizes
    return torch.cat((log_sizes.new_zeros(B, 1, leading), log_sizes), dim=2)
