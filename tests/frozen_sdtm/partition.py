"""Token partitions: which image tokens are merged into which group.

Every function here takes a metric tensor ``[B, N, C]`` whose N tokens lie row-major on an
``h x w`` grid (``N == h * w``), and returns a :class:`Partition` that groups the N tokens of each
sample into the same number G of groups. Sizes (N, G, the number of merged windows or tokens) are
Python ints decided by the caller, so every shape is known on the host: nothing here reads a
tensor value back (no ``.item()``, ``.tolist()``, ``.cpu()``), loops over tokens or over samples.

Three partitions are provided:

* :func:`window_partition` - the structure phase (SSM): collapse the most uniform k x k windows.
* :func:`detail_partition` - the detail phase (FIDM): per window one dst chosen by the priority
  counter, every other token a src, global cosine bipartite matching of src to dst.
* :func:`tome_partition` - plain ToMe: the same matching with a random dst per window.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Callable

import torch

__all__ = [
    "Partition",
    "WindowGrid",
    "window_grid",
    "window_partition",
    "detail_partition",
    "tome_partition",
    "structure_merge_count",
    "detail_merge_count",
]


@dataclass(frozen=True)
class WindowGrid:
    """The whole ``k x k`` windows that tile an ``h x w`` token grid.

    Tokens in the last ``h % k`` rows or ``w % k`` columns belong to no window and are never merged.
    """

    h: int
    w: int
    k: int
    members: torch.Tensor  # [nW, K] token index of each window member, windows row-major
    outside: torch.Tensor  # [No] tokens that belong to no whole window
    _memo: dict = field(default_factory=dict, compare=False, repr=False)

    def const(self, key: tuple, make: Callable[[], torch.Tensor]) -> torch.Tensor:
        """A small constant tensor derived from this grid (ids, sizes), made once: fewer kernel
        launches per block, which is what limits short merged blocks on fast GPUs."""
        if key not in self._memo:
            self._memo[key] = make()
        return self._memo[key]

    def ids(self, start: int, stop: int) -> torch.Tensor:
        """arange(start, stop) on the grid's device, shape [1, stop - start]."""
        return self.const(("ids", start, stop),
                          lambda: torch.arange(start, stop, device=self.members.device).unsqueeze(0))

    @property
    def num_tokens(self) -> int:
        return self.h * self.w

    @property
    def window_size(self) -> int:
        return self.k * self.k

    @property
    def num_windows(self) -> int:
        return self.members.shape[0]

    @property
    def rows(self) -> int:
        return self.h // self.k

    @property
    def cols(self) -> int:
        return self.w // self.k


def window_grid(h: int, w: int, k: int = 2, device: torch.device | str | None = None) -> WindowGrid:
    """Index tables of the whole ``k x k`` windows of an ``h x w`` grid (row-major tokens)."""
    if h < 1 or w < 1:
        raise ValueError(f"token grid must be at least 1x1, got {h}x{w}")
    if k < 1:
        raise ValueError(f"window size must be >= 1, got {k}")
    rows, cols = h // k, w // k
    r = torch.arange(rows * k, device=device).view(rows, k, 1, 1)
    c = torch.arange(cols * k, device=device).view(1, 1, cols, k)
    idx = (r * w + c).permute(0, 2, 1, 3).reshape(rows * cols, k * k)  # [nW, K]
    right = (torch.arange(rows * k, device=device).view(-1, 1) * w
             + torch.arange(cols * k, w, device=device).view(1, -1)).reshape(-1)  # columns past the last window
    bottom = torch.arange(rows * k * w, h * w, device=device)  # rows past the last window
    return WindowGrid(h=h, w=w, k=k, members=idx, outside=torch.cat((right, bottom)))


@dataclass(frozen=True)
class Partition:
    """A batched grouping of N tokens into G groups (the same G for every sample).

    ``group[b, n]`` is the group of token n; groups ``[0, num_singletons)`` hold one token each and
    come first. ``merged[b, n]`` is True for every token of a group with two or more members.
    ``rep[b, g]`` is the token that represents group g (its dst, or for a collapsed window its
    first member; used by prune-merge); it is built only when asked for.
    """

    group: torch.Tensor  # [B, N] int64 in [0, G)
    sizes: torch.Tensor  # [B, G] int64, members per group (may be an expanded view)
    merged: torch.Tensor  # [B, N] bool
    num_groups: int  # G
    num_singletons: int  # groups [0, num_singletons) have exactly one member by construction
    rep_parts: tuple = ()  # [B, *] token tensors whose concatenation is rep; () = first member

    @property
    def num_tokens(self) -> int:
        return self.group.shape[1]

    @property
    def batch(self) -> int:
        return self.group.shape[0]

    @cached_property
    def rep(self) -> torch.Tensor:
        """[B, G] int64 representative token of each group."""
        if self.rep_parts:
            return torch.cat(self.rep_parts, dim=1)
        tokens = torch.arange(self.num_tokens, device=self.group.device).expand_as(self.group)
        first = torch.empty(self.batch, self.num_groups, dtype=torch.long, device=self.group.device)
        return first.scatter_reduce_(1, self.group, tokens, reduce="amin", include_self=False)

    @cached_property
    def rows(self) -> torch.Tensor:
        """[B * N] row of each token's group in a flat [B * G, C] view (for one scatter-add)."""
        offsets = torch.arange(0, self.batch * self.num_groups, self.num_groups, device=self.group.device)
        return (self.group + offsets.unsqueeze(1)).reshape(-1)

    @cached_property
    def float_sizes(self) -> torch.Tensor:
        """[B * G, 1] float32 group sizes (a mean divides by them: exact for a constant group)."""
        return self.sizes.reshape(-1, 1).to(torch.float32)


def structure_merge_count(num_tokens: int, ratio: float, window_size: int, num_windows: int,
                          round_to: int = 16) -> int:
    """Windows to collapse in the structure phase: ``n_red / (K - 1)`` rounded down to a multiple
    of ``round_to`` (the reference: ``floor(n_red / 48) * 16`` for K = 4), at most ``num_windows``.
    """
    if window_size < 2:
        return 0
    if round_to < 1:
        raise ValueError(f"round_to must be >= 1, got {round_to}")
    n_red = int(num_tokens * ratio)
    return max(0, min(n_red // (window_size - 1), num_windows) // round_to * round_to)


def detail_merge_count(num_tokens: int, ratio: float, num_src: int, round_to: int = 16) -> int:
    """src tokens to merge in the detail phase: ``min(num_src, n_red)`` rounded down to a multiple
    of ``round_to``."""
    if round_to < 1:
        raise ValueError(f"round_to must be >= 1, got {round_to}")
    n_red = int(num_tokens * ratio)
    return max(0, min(num_src, n_red) // round_to * round_to)


def _rand(shape: tuple[int, ...], generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
    if generator is not None and generator.device.type != torch.device(device).type:
        raise ValueError(f"generator is on {generator.device}, tensors are on {device}")
    return torch.rand(shape, generator=generator, device=device)


def _window_view(t: torch.Tensor, grid: WindowGrid) -> torch.Tensor:
    """[B, N, *rest] -> [B, rows, k, cols, k, *rest], a strided view of the whole windows."""
    t = t.unflatten(1, (grid.h, grid.w))[:, : grid.rows * grid.k, : grid.cols * grid.k]
    return t.unflatten(1, (grid.rows, grid.k)).unflatten(3, (grid.cols, grid.k))


def _check(metric: torch.Tensor, grid: WindowGrid) -> None:
    if metric.dim() != 3:
        raise ValueError(f"metric must be [B, N, C], got shape {tuple(metric.shape)}")
    if metric.shape[1] != grid.num_tokens:
        raise ValueError(f"metric has {metric.shape[1]} tokens, the {grid.h}x{grid.w} grid has {grid.num_tokens}")


def _window_dst(grid: WindowGrid, batch: int, priority: torch.Tensor | None,
                generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
    """Per window the member (0..K-1) that becomes dst: highest priority, seeded-random among ties.

    The random part is below 1, so it only breaks ties between equal integer counters; without a
    counter the choice is uniformly random. Returns [B, nW] int64.
    """
    key = _rand((batch, grid.num_windows, grid.window_size), generator, device).mul_(0.5)
    if priority is not None:
        key.add_(priority[:, grid.members])
    return key.argmax(dim=-1)


def window_partition(metric: torch.Tensor, grid: WindowGrid, num_windows: int,
                     priority: torch.Tensor | None = None, priority_weight: float = 0.0) -> Partition | None:
    """Structure-phase partition (SSM): collapse the ``num_windows`` most uniform windows.

    metric: [B, N, C] tokens; score of a window = mean pairwise cosine similarity of its K members
    (diagonal included), plus ``priority_weight`` times the mean of the members' priority counters
    normalised by each sample's largest counter. The top windows become one group each; every other
    token is a singleton. Returns None (identity) when ``num_windows`` is 0.
    Groups: [singletons in raster order ; one per collapsed window]. G = N - (K - 1) * num_windows.
    """
    _check(metric, grid)
    if num_windows <= 0:
        return None
    if num_windows > grid.num_windows:
        raise ValueError(f"cannot collapse {num_windows} windows, the grid has {grid.num_windows}")
    B, N, _ = metric.shape
    K = grid.window_size

    # Mean pairwise cosine similarity of a window = |sum of its unit vectors|^2 / K^2.
    inv_norm = torch.linalg.vector_norm(metric, dim=-1, keepdim=True).clamp_min_(1e-4).reciprocal_()
    window_sum = _window_view(metric * inv_norm, grid).sum(dim=(2, 4))
    score = torch.linalg.vector_norm(window_sum, dim=-1, dtype=torch.float32).reshape(B, -1)
    if priority is not None and priority_weight != 0.0:
        # |sum|^2 / K^2 + weight * (window sum of counters) / (K * largest counter of the sample)
        counters = _window_view(priority, grid).sum(dim=(2, 4), dtype=torch.float32).reshape(B, -1)
        largest = priority.amax(dim=1, keepdim=True).clamp_min_(1)
        score = score.square_().mul_(1.0 / (K * K)).addcdiv_(counters, largest, value=priority_weight / K)

    chosen = score.topk(num_windows, dim=1, sorted=False).indices  # [B, W]
    members = grid.members[chosen].reshape(B, num_windows * K)
    singles = N - K * num_windows
    merged = torch.zeros(B, N, dtype=torch.bool, device=metric.device).scatter_(1, members, True)
    group = (~merged).cumsum(1).sub_(1)  # singletons keep raster order
    window_ids = grid.const(("window_ids", num_windows),
                            lambda: grid.ids(singles, singles + num_windows).repeat_interleave(K, dim=1))
    group.scatter_(1, members, window_ids.expand(B, -1))
    sizes = grid.const(("window_sizes", num_windows), lambda: torch.cat(
        (torch.ones(1, singles, dtype=torch.long, device=metric.device),
         torch.full((1, num_windows), K, dtype=torch.long, device=metric.device)), dim=1))
    return Partition(group=group, sizes=sizes.expand(B, -1), merged=merged, num_groups=singles + num_windows,
                     num_singletons=singles)


def _bipartite_partition(metric: torch.Tensor, grid: WindowGrid, num_merge: int, dst_member: torch.Tensor) -> Partition:
    """Global bipartite matching: one dst per window (``dst_member`` [B, nW]), the other K-1 window
    members are src; each src picks its most cosine-similar dst over the whole image and the
    ``num_merge`` best-matched src are merged into their dst.
    Groups: [tokens outside whole windows ; unmerged src ; dst]. G = N - num_merge.
    """
    B, N, C = metric.shape
    K, nW = grid.window_size, grid.num_windows
    num_src = (K - 1) * nW
    if num_merge > num_src:
        raise ValueError(f"cannot merge {num_merge} src tokens, there are {num_src}")

    members = grid.members.expand(B, nW, K)
    dst_tok = members.gather(2, dst_member.unsqueeze(-1)).squeeze(-1)  # [B, nW]
    others = (dst_member.unsqueeze(-1) + grid.ids(1, K)).remainder_(K)  # [B, nW, K-1]
    src_tok = members.gather(2, others).reshape(B, num_src)  # [B, Ns]

    # argmax over dst of cos(a, b) only needs the dst normalised; the src norm rescales the best score.
    src = metric.gather(1, src_tok.unsqueeze(-1).expand(B, num_src, C))
    dst = metric.gather(1, dst_tok.unsqueeze(-1).expand(B, nW, C))
    dst = dst.div_(torch.linalg.vector_norm(dst, dim=-1, keepdim=True).clamp_min_(1e-4))
    best, best_dst = torch.bmm(src, dst.transpose(1, 2)).max(dim=-1)  # [B, Ns]
    src_norm = torch.linalg.vector_norm(src, dim=-1, dtype=torch.float32).clamp_min_(1e-4)
    order = torch.div(best, src_norm).argsort(dim=1, descending=True, stable=True)
    merged_pos, kept_pos = order[:, :num_merge], order[:, num_merge:]

    num_out = grid.outside.shape[0]
    num_kept = num_src - num_merge
    first_dst = num_out + num_kept
    G = first_dst + nW
    group = torch.empty(B, N, dtype=torch.long, device=metric.device)
    out_tok = grid.outside.expand(B, num_out)
    if num_out:
        group.scatter_(1, out_tok, grid.ids(0, num_out).expand(B, -1))
    kept_tok = src_tok.gather(1, kept_pos)
    group.scatter_(1, kept_tok, grid.ids(num_out, first_dst).expand(B, -1))
    group.scatter_(1, dst_tok, grid.ids(first_dst, G).expand(B, -1))
    target = best_dst.gather(1, merged_pos)  # [B, n] dst slot of each merged src
    group.scatter_(1, src_tok.gather(1, merged_pos), target.add(first_dst))

    sizes = torch.ones(B, G, dtype=torch.long, device=metric.device)
    ones = grid.const(("ones", num_merge), lambda: torch.ones(1, num_merge, dtype=torch.long, device=metric.device))
    sizes[:, first_dst:].scatter_add_(1, target, ones.expand(B, -1))
    return Partition(group=group, sizes=sizes, merged=sizes.gather(1, group) > 1, num_groups=G,
                     num_singletons=first_dst, rep_parts=(out_tok, kept_tok, dst_tok))


def detail_partition(metric: torch.Tensor, grid: WindowGrid, num_merge: int,
                     priority: torch.Tensor | None = None,
                     generator: torch.Generator | None = None) -> Partition | None:
    """Detail-phase partition (FIDM): in each window the member with the highest priority counter is
    dst (seeded random among ties, and everywhere while no counter exists), the rest are src;
    the ``num_merge`` src most similar to some dst are merged into it. None when num_merge is 0."""
    _check(metric, grid)
    if num_merge <= 0 or grid.window_size < 2:
        return None
    dst_member = _window_dst(grid, metric.shape[0], priority, generator, metric.device)
    return _bipartite_partition(metric, grid, num_merge, dst_member)


def tome_partition(metric: torch.Tensor, grid: WindowGrid, num_merge: int,
                   generator: torch.Generator | None = None) -> Partition | None:
    """ToMe's global bipartite partition: a random dst per window (2x2 in ToMe for SD), every other
    token a src, the ``num_merge`` best-matched src merged. None when num_merge is 0."""
    return detail_partition(metric, grid, num_merge, priority=None, generator=generator)
