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

    ``rows[b, n]`` is the row of token n's group in a flat ``[B * G]`` layout (``group + b * G``): one
    index table for every merge (index_add) and unmerge (index_select) of the block. Groups
    ``[0, num_singletons)`` hold one token each and come first. ``merged[b, n]`` is True for every
    token of a group with two or more members. ``float_sizes`` [B * G, 1] counts each group's members.
    ``group``, ``sizes``, ``rep`` (the token that represents a group: its dst, or for a collapsed
    window its first member; used by prune-merge) and ``grouped`` are derived when asked for.
    ``blend`` [B, N] bool: the tokens cache blending reaches; None: ``merged`` (the release's rule, every
    dst of a detail partition, sets it to ``grouped``).
    """

    rows: torch.Tensor  # [B, N] int64 in [0, B * G)
    float_sizes: torch.Tensor  # [B * G, 1] float32 members per group (may be a shared constant)
    merged: torch.Tensor  # [B, N] bool
    num_singletons: int  # groups [0, num_singletons) have exactly one member by construction
    rep_parts: tuple = ()  # [B, *] token tensors whose concatenation is rep; () = first member
    blend: torch.Tensor | None = None  # [B, N] bool tokens blended with a cache; None: merged

    @property
    def blended(self) -> torch.Tensor:
        """[B, N] bool: the tokens that cache blending reaches."""
        return self.merged if self.blend is None else self.blend

    @property
    def num_groups(self) -> int:
        """G, read from the tensors' shapes: under torch.compile with dynamic shapes it stays symbolic, so a
        partition with another group count reuses the compiled graph."""
        return self.float_sizes.shape[0] // self.rows.shape[0]

    @property
    def num_tokens(self) -> int:
        return self.rows.shape[1]

    @property
    def batch(self) -> int:
        return self.rows.shape[0]

    @cached_property
    def group(self) -> torch.Tensor:
        """[B, N] int64 group of each token in [0, G)."""
        offsets = torch.arange(0, self.batch * self.num_groups, self.num_groups, device=self.rows.device)
        return self.rows - offsets.unsqueeze(1)

    @cached_property
    def grouped(self) -> torch.Tensor:
        """[B, N] bool: tokens of the groups past the singletons: every member of a collapsed window, and
        in a bipartite partition every merged src and every dst, one that received no src included."""
        return self.group >= self.num_singletons

    @cached_property
    def sizes(self) -> torch.Tensor:
        """[B, G] int64 members per group."""
        return self.float_sizes.view(self.batch, self.num_groups).long()

    @cached_property
    def rep(self) -> torch.Tensor:
        """[B, G] int64 representative token of each group."""
        if self.rep_parts:
            return torch.cat(self.rep_parts, dim=1)
        tokens = torch.arange(self.num_tokens, device=self.rows.device).expand_as(self.rows)
        first = torch.empty(self.batch, self.num_groups, dtype=torch.long, device=self.rows.device)
        return first.scatter_reduce_(1, self.group, tokens, reduce="amin", include_self=False)


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


def _unit(metric: torch.Tensor) -> torch.Tensor:
    """[B, N, C] tokens scaled to unit norm: the one normalisation behind both the window scores and
    the matching (cosine similarities are dot products of these)."""
    return metric / torch.linalg.vector_norm(metric, dim=-1, keepdim=True).clamp_min_(1e-4)


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
                generator: torch.Generator | None, device: torch.device, first: bool = False) -> torch.Tensor:
    """Per window the member (0..K-1) that becomes dst: highest priority, seeded-random among ties.

    The random part is below 1/2, so it only breaks ties between equal integer counters; without a
    counter the choice is uniformly random. ``first`` (the release's rule): among equal counters the
    first member (an argmax); without a counter a random member, or for an odd batch (which cannot
    hold cond and uncond halves) the first. Returns [B, nW] int64.
    """
    if generator is not None and generator.device.type != torch.device(device).type:
        raise ValueError(f"generator is on {generator.device}, tensors are on {device}")
    if first and priority is not None:
        return _window_view(priority, grid).transpose(2, 3).reshape(batch, grid.num_windows, grid.window_size).argmax(
            dim=-1)
    if first and batch % 2 == 1:
        return grid.const(("first_member", batch), lambda: torch.zeros(batch, grid.num_windows, dtype=torch.long,
                                                                       device=device))
    key = torch.empty(batch, grid.rows, grid.cols, grid.k, grid.k, device=device).uniform_(0.0, 0.5,
                                                                                           generator=generator)
    if priority is not None:
        key.add_(_window_view(priority, grid).transpose(2, 3))  # [B, rows, cols, k, k], a strided view
    return key.view(batch, grid.num_windows, grid.window_size).argmax(dim=-1)


def window_partition(metric: torch.Tensor, grid: WindowGrid, num_windows: int,
                     priority: torch.Tensor | None = None, priority_weight: float = 0.0,
                     mean_bonus: bool = False) -> Partition | None:
    """Structure-phase partition (SSM): collapse the ``num_windows`` most uniform windows.

    metric: [B, N, C] tokens; score of a window = mean pairwise cosine similarity of its K members
    (diagonal included), plus ``priority_weight`` times the mean of the members' priority counters
    normalised by each sample's largest counter (``mean_bonus``, the release's rule: by the mean of the
    sample's counters + 1e-6). The top windows become one group each; every other
    token is a singleton. Returns None (identity) when ``num_windows`` is 0.
    Groups: [singletons in raster order ; one per collapsed window]. G = N - (K - 1) * num_windows.
    """
    _check(metric, grid)
    if num_windows <= 0:
        return None
    if num_windows > grid.num_windows:
        raise ValueError(f"cannot collapse {num_windows} windows, the grid has {grid.num_windows}")
    B, N, C = metric.shape
    K = grid.window_size
    singles = N - K * num_windows
    G = singles + num_windows
    dev = metric.device

    # Mean pairwise cosine similarity of a window = |sum of its unit vectors|^2 / K^2; scores are
    # kept scaled by K^2 (the ranking is the same). The squared norm is one batched dot product.
    window_sum = _window_view(_unit(metric), grid).sum(dim=(2, 4)).reshape(B * grid.num_windows, 1, C)
    window_sum = window_sum.to(torch.float32)
    score = torch.bmm(window_sum, window_sum.transpose(1, 2)).view(B, -1)
    if priority is not None and priority_weight != 0.0:
        counters = _window_view(priority, grid).sum(dim=(2, 4), dtype=torch.float32).reshape(B, -1)
        if mean_bonus:
            scale = priority.mean(dim=1, keepdim=True, dtype=torch.float32).add_(1e-6)
        else:
            scale = priority.amax(dim=1, keepdim=True).clamp_min_(1)
        score = score.addcdiv_(counters, scale, value=priority_weight * K)

    chosen = score.topk(num_windows, dim=1, sorted=False).indices  # [B, W]
    members = grid.members[chosen].reshape(B, num_windows * K)
    merged = torch.zeros(B, N, dtype=torch.bool, device=dev).scatter_(1, members, True)
    # singletons keep raster order: token n's row is b * G + n - (merged tokens up to n)
    token_rows = grid.const(("token_rows", B, G), lambda: (
        torch.arange(N, device=dev) + torch.arange(0, B * G, G, device=dev).unsqueeze(1)))
    rows = torch.sub(token_rows, merged.cumsum(1))
    window_rows = grid.const(("window_rows", B, num_windows), lambda: (
        torch.arange(singles, G, device=dev).repeat_interleave(K) + torch.arange(0, B * G, G, device=dev).unsqueeze(1)))
    rows.scatter_(1, members, window_rows)
    sizes = grid.const(("window_sizes", B, num_windows), lambda: torch.cat(
        (torch.ones(1, singles, device=dev), torch.full((1, num_windows), float(K), device=dev)), dim=1)
        .expand(B, -1).reshape(B * G, 1))
    return Partition(rows=rows, float_sizes=sizes, merged=merged, num_singletons=singles)


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
    dev = metric.device
    num_out = grid.outside.shape[0]
    first_dst = num_out + num_src - num_merge
    G = first_dst + nW

    # Per window its K tokens, dst first, then the src in cyclic order after the dst: one gather from
    # a per-grid table [nW, K (dst member), K].
    table = grid.const(("cyclic",), lambda: grid.members.gather(
        1, (torch.arange(K, device=dev).view(K, 1) + torch.arange(K, device=dev)).remainder(K).view(1, K * K)
        .expand(nW, -1)).view(nW, K, K))
    tok = table.expand(B, nW, K, K).gather(2, dst_member.view(B, nW, 1, 1).expand(B, nW, 1, K)).view(B, nW * K)

    # Cosine of every window token with every dst (the dst's own row is dropped below): one bmm.
    unit = _unit(metric).gather(1, tok.unsqueeze(-1).expand(B, nW * K, C))  # [B, nW*K, C]
    dst = unit.view(B, nW, K, C)[:, :, 0]
    # dst are not src: a -inf bias on their rows sorts them last, in window order
    not_src = grid.const(("not_src", unit.dtype), lambda: torch.zeros(nW, K, 1, dtype=unit.dtype, device=dev)
                         .index_fill_(1, torch.zeros(1, dtype=torch.long, device=dev), float("-inf"))
                         .view(1, nW * K, 1))
    best, best_dst = torch.baddbmm(not_src, unit, dst.transpose(1, 2)).max(dim=-1)  # [B, nW*K]
    order = best.argsort(dim=1, descending=True, stable=True)
    sorted_tok = tok.gather(1, order)  # [merged src ; kept src ; dst]

    offsets = grid.const(("batch_rows", B, G), lambda: torch.arange(0, B * G, G, device=dev).unsqueeze(1))
    dst_rows = grid.const(("dst_rows", B, G, first_dst), lambda: offsets + first_dst)
    target = best_dst.gather(1, order[:, :num_merge]).add_(dst_rows)
    kept_rows = grid.const(("kept_rows", B, G, num_out), lambda: torch.arange(num_out, G, device=dev) + offsets)
    index, values = sorted_tok[:, num_merge:], None
    if num_out:
        out_tok = grid.outside.expand(B, num_out)
        out_rows = grid.const(("out_rows", B, G), lambda: torch.arange(num_out, device=dev) + offsets)
        index = torch.cat((out_tok, sorted_tok), dim=1)
        values = torch.cat((out_rows, target, kept_rows), dim=1)
    else:
        out_tok = sorted_tok[:, :0]
        index, values = sorted_tok, torch.cat((target, kept_rows), dim=1)
    rows = torch.empty(B, N, dtype=torch.long, device=dev).scatter_(1, index, values)

    ones = grid.const(("ones", B * N), lambda: torch.ones(B * N, 1, device=dev))
    sizes = torch.zeros(B * G, 1, device=dev).index_add_(0, rows.view(-1), ones)
    merged = sizes.view(-1)[rows] > 1
    return Partition(rows=rows, float_sizes=sizes, merged=merged, num_singletons=first_dst,
                     rep_parts=(out_tok, sorted_tok[:, num_merge:]))


def detail_partition(metric: torch.Tensor, grid: WindowGrid, num_merge: int,
                     priority: torch.Tensor | None = None,
                     generator: torch.Generator | None = None, first_dst: bool = False,
                     blend_every_dst: bool = False) -> Partition | None:
    """Detail-phase partition (FIDM): in each window the member with the highest priority counter is
    dst (seeded random among ties, and everywhere while no counter exists; ``first_dst``, the release's
    rule: the first member among ties), the rest are src; the ``num_merge`` src most similar to some dst
    are merged into it. ``blend_every_dst`` (the release's rule): cache blending reaches every dst, not
    only those that received a src. None when num_merge is 0."""
    _check(metric, grid)
    if num_merge <= 0 or grid.window_size < 2:
        return None
    dst_member = _window_dst(grid, metric.shape[0], priority, generator, metric.device, first=first_dst)
    part = _bipartite_partition(metric, grid, num_merge, dst_member)
    if blend_every_dst:
        part = Partition(part.rows, part.float_sizes, part.merged, part.num_singletons, part.rep_parts,
                         blend=part.grouped)
    return part


def tome_partition(metric: torch.Tensor, grid: WindowGrid, num_merge: int,
                   generator: torch.Generator | None = None) -> Partition | None:
    """ToMe's global bipartite partition: a random dst per window (2x2 in ToMe for SD), every other
    token a src, the ``num_merge`` best-matched src merged. None when num_merge is 0."""
    return detail_partition(metric, grid, num_merge, priority=None, generator=generator)
