"""Merge tokens into their groups and copy group results back ("unmerge").

All functions take a :class:`~sdtm_ops.partition.Partition` (or None, the identity) and work on
whole tensors: one scatter-add to merge, one gather to unmerge, one lerp to blend with a cache.
"""
from __future__ import annotations

import torch

MERGE_MODES = ("mean", "prune")
from .partition import Partition

__all__ = ["merge_tokens", "unmerge_tokens", "blend_with_cache"]




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
    if (B, N) != tuple(part.group.shape):
        raise ValueError(f"tokens {tuple(x.shape)} do not match the partition's [B, N] = {tuple(part.group.shape)}")
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
    if token_weight is None:
        total = x.new_zeros(B * G, C, dtype=acc).index_add_(0, part.rows, src)
        merged = total.div_(part.float_sizes.to(acc)).to(x.dtype).view(B, G, C)
        return (merged, part.sizes.unsqueeze(-1).to(x.dtype)) if return_sizes else merged
    w = token_weight.reshape(B * N, 1).to(acc)
    weight = x.new_zeros(B * G, 1, dtype=acc).index_add_(0, part.rows, w)
    total = x.new_zeros(B * G, C, dtype=acc).index_add_(0, part.rows, src * w)
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
    return y.gather(1, part.group.unsqueeze(-1).expand(B, part.num_tokens, C))


def blend_with_cache(fresh: torch.Tensor, cached: torch.Tensor, part: Partition | None,
                     fresh_weight: float) -> torch.Tensor:
    """Cache blending of an unmerged branch output [B, N, C].

    Tokens that took part in a merge get ``fresh_weight * fresh + (1 - fresh_weight) * cached``;
    tokens that stayed singletons keep their fresh value exactly.
    """
    if part is None or fresh_weight >= 1.0:
        return fresh
    if cached.shape != fresh.shape:
        raise ValueError(f"cached {tuple(cached.shape)} and fresh {tuple(fresh.shape)} differ in shape")
    one = torch.ones((), dtype=fresh.dtype, device=fresh.device)
    weight = torch.where(part.merged, one * fresh_weight, one).unsqueeze(-1)
    return torch.lerp(cached.to(fresh.dtype), fresh, weight)
