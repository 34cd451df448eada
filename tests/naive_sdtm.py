"""Slow, loop-per-token versions of the partitions and merges, written straight from the method
notes, to check the vectorised engine against. Test use only."""
from __future__ import annotations

import torch


def windows(h: int, w: int, k: int) -> list[list[int]]:
    out = []
    for wr in range(h // k):
        for wc in range(w // k):
            out.append([(wr * k + i) * w + wc * k + j for i in range(k) for j in range(k)])
    return out


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    a64, b64 = a.double(), b.double()
    return float(a64 @ b64 / (a64.norm().clamp_min(1e-12) * b64.norm().clamp_min(1e-12)))


def window_scores(metric: torch.Tensor, h: int, w: int, k: int, priority=None, weight: float = 0.0) -> list[float]:
    """Mean pairwise cosine similarity (diagonal included) + weight * mean normalised priority."""
    scores = []
    top = max(1, int(priority.max())) if priority is not None else 1
    for members in windows(h, w, k):
        sims = [cosine(metric[a], metric[b]) for a in members for b in members]
        s = sum(sims) / len(sims)
        if priority is not None:
            s += weight * sum(float(priority[m]) / top for m in members) / len(members)
        scores.append(s)
    return scores


def groups_of(group_row: torch.Tensor) -> set[frozenset]:
    """The partition of one sample as a set of token sets (independent of group numbering)."""
    by_group: dict[int, set] = {}
    for token, g in enumerate(group_row.tolist()):
        by_group.setdefault(g, set()).add(token)
    return {frozenset(v) for v in by_group.values()}


def merge_unmerge(x: torch.Tensor, groups: set[frozenset]) -> torch.Tensor:
    """[N, C]: every token replaced by the mean of its group."""
    out = torch.empty_like(x)
    for g in groups:
        idx = sorted(g)
        out[idx] = x[idx].double().mean(0).to(x.dtype)
    return out


def bipartite_groups(metric: torch.Tensor, dst: list[int], src: list[int], num_merge: int) -> set[frozenset]:
    """Each src picks its most similar dst; the num_merge best-scoring src are merged."""
    best = []
    for s in src:
        sims = [cosine(metric[s], metric[d]) for d in dst]
        j = max(range(len(dst)), key=lambda i: sims[i])
        best.append((sims[j], s, dst[j]))
    best.sort(key=lambda t: -t[0])
    groups = {d: {d} for d in dst}
    singles = set(range(metric.shape[0])) - set(dst)
    for _, s, d in best[:num_merge]:
        groups[d].add(s)
        singles.discard(s)
    return {frozenset(v) for v in groups.values()} | {frozenset([t]) for t in singles}
