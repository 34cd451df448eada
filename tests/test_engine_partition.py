"""sdtm_ops partitions, merge and unmerge, on CPU, checked against the naive versions."""
import itertools

import pytest
import torch

import naive_sdtm as naive
from sdtm_ops import (
    blend_with_cache,
    detail_merge_count,
    detail_partition,
    merge_tokens,
    structure_merge_count,
    tome_partition,
    unmerge_tokens,
    window_grid,
    window_partition,
)

GRIDS = [(64, 64), (48, 80), (33, 47), (1, 1), (2, 2)]
BATCHES = [1, 3, 8]


def _metric(batch, h, w, c=16, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, h * w, c, generator=g).to(dtype)


def _partitions(x, h, w, ratio=0.5, seed=0):
    """The three partitions of x at `ratio`, with a random priority counter."""
    B, N, _ = x.shape
    grid = window_grid(h, w, 2)
    prio = torch.randint(0, 6, (B, N), generator=torch.Generator().manual_seed(seed), dtype=torch.int32)
    nw = structure_merge_count(N, ratio, 4, grid.num_windows, round_to=1)
    nm = detail_merge_count(N, ratio, 3 * grid.num_windows, round_to=1)
    return {
        "window": (window_partition(x, grid, nw, prio, 0.05), N - 3 * nw),
        "detail": (detail_partition(x, grid, nm, prio, torch.Generator().manual_seed(seed)), N - nm),
        "tome": (tome_partition(x, grid, nm, torch.Generator().manual_seed(seed)), N - nm),
    }


@pytest.mark.parametrize("h,w", GRIDS)
@pytest.mark.parametrize("batch", BATCHES)
def test_merge_unmerge_shapes_and_consistency(h, w, batch):
    x = _metric(batch, h, w)
    for kind, (part, expected_g) in _partitions(x, h, w).items():
        merged = merge_tokens(x, part)
        assert merged.shape == (batch, expected_g, 16), kind
        back = unmerge_tokens(merged, part)
        assert back.shape == x.shape, kind
        if part is None:
            assert merged is x and back is x
            continue
        assert part.sizes.sum(1).eq(h * w).all(), kind
        assert part.group.min() >= 0 and part.group.max() < part.num_groups
        # every group's representative belongs to it, and singleton groups come first
        assert torch.equal(part.group.gather(1, part.rep), torch.arange(part.num_groups).expand(batch, -1))
        assert part.sizes[:, : part.num_singletons].eq(1).all()
        # tokens that were not merged come back bit-exactly; merged ones as their group mean
        assert torch.equal(back[~part.merged], x[~part.merged])
        for b in range(batch):
            expected = naive.merge_unmerge(x[b], naive.groups_of(part.group[b]))
            torch.testing.assert_close(back[b], expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("h,w", [(64, 64), (48, 80), (33, 47)])
def test_constant_field_round_trips_exactly(h, w):
    # per-sample, per-channel constants on a dyadic grid: their sums and means are exact in floats
    g = torch.Generator().manual_seed(3)
    const = torch.randint(-64, 64, (3, 1, 16), generator=g).float() / 16
    x = const.expand(3, h * w, 16).contiguous()
    for dtype in (torch.float32, torch.float16, torch.bfloat16):
        xd = x.to(dtype)
        for kind, (part, _) in _partitions(xd, h, w).items():
            assert torch.equal(unmerge_tokens(merge_tokens(xd, part), part), xd), (kind, dtype)


def test_ratio_zero_is_the_identity():
    x = _metric(2, 64, 64)
    grid = window_grid(64, 64, 2)
    assert structure_merge_count(4096, 0.0, 4, grid.num_windows) == 0
    assert detail_merge_count(4096, 0.0, 3 * grid.num_windows) == 0
    for part in (window_partition(x, grid, 0), detail_partition(x, grid, 0), tome_partition(x, grid, 0)):
        assert part is None
        assert merge_tokens(x, part) is x
        assert unmerge_tokens(x, part) is x
        assert blend_with_cache(x, torch.zeros_like(x), part, 0.1) is x


def test_reference_rounding_of_counts():
    # the release: floor(n_red / 48) * 16 windows for K = 4; min(3N/4, n_red) src rounded to 16
    for n_red in range(0, 4096, 7):
        ratio = (n_red + 0.5) / 4096
        assert structure_merge_count(4096, ratio, 4, 1024) == min(n_red // 48 * 16, 1024)
        assert detail_merge_count(4096, ratio, 3072) == min(3072, n_red) // 16 * 16
    assert structure_merge_count(4096, 1.0, 4, 1024) == 1024  # capped by the windows there are
    assert structure_merge_count(100, 0.9, 4, 25, round_to=1) == 25


def test_window_partition_collapses_the_most_similar_windows():
    h, w, C = 8, 12, 32
    grid = window_grid(h, w, 2)
    x = _metric(2, h, w, C, seed=5)
    uniform = {0: [1, 4, 7, 20], 1: [0, 11, 12, 23]}  # windows whose four tokens are identical
    for b, wins in uniform.items():
        for j in wins:
            members = grid.members[j]
            x[b, members] = x[b, members[0]] * torch.tensor([1.0, 2.0, 0.5, 3.0]).view(4, 1)  # same direction
    part = window_partition(x, grid, 4)
    for b, wins in uniform.items():
        collapsed = {frozenset(grid.members[j].tolist()) for j in wins}
        groups = {g for g in naive.groups_of(part.group[b]) if len(g) > 1}
        assert groups == collapsed


def test_window_scores_match_the_definition():
    h, w = 6, 10
    grid = window_grid(h, w, 2)
    x = _metric(1, h, w, 8, seed=9)
    prio = torch.randint(0, 9, (1, h * w), generator=torch.Generator().manual_seed(2), dtype=torch.int32)
    scores = naive.window_scores(x[0], h, w, 2, prio[0], weight=0.3)
    for count in (1, 3, 7, 15):
        part = window_partition(x, grid, count, prio, 0.3)
        top = sorted(range(len(scores)), key=lambda j: -scores[j])[:count]
        expected = {frozenset(grid.members[j].tolist()) for j in top}
        assert {g for g in naive.groups_of(part.group[0]) if len(g) > 1} == expected


def test_detail_partition_dst_follows_priority_and_matches_naive_bipartite():
    h, w = 10, 14
    grid = window_grid(h, w, 2)
    B = 3
    x = _metric(B, h, w, 8, seed=4)
    # a counter with a unique maximum in every window: that member must be the window's dst
    g = torch.Generator().manual_seed(8)
    prio = torch.zeros(B, h * w, dtype=torch.int32)
    expected_dst = torch.randint(0, 4, (B, grid.num_windows), generator=g)
    for b in range(B):
        for j in range(grid.num_windows):
            prio[b, grid.members[j, expected_dst[b, j]]] = 5 + j % 3
    part = detail_partition(x, grid, 48, prio, torch.Generator().manual_seed(0))
    dst_tokens = grid.members.gather(1, expected_dst.T.reshape(grid.num_windows, B)).T  # [B, nW]
    for b in range(B):
        dst = dst_tokens[b].tolist()
        assert sorted(part.rep[b, part.num_groups - grid.num_windows:].tolist()) == sorted(dst)
        src = [t for row in grid.members.tolist() for t in row if t not in set(dst)]
        assert naive.groups_of(part.group[b]) == naive.bipartite_groups(x[b], dst, src, 48)


def test_tokens_outside_whole_windows_are_never_merged():
    h, w = 9, 7
    grid = window_grid(h, w, 2)
    assert sorted(grid.outside.tolist()) == sorted(set(range(h * w)) - set(grid.members.flatten().tolist()))
    x = _metric(2, h, w, seed=1)
    for part, _ in _partitions(x, h, w, ratio=0.9).values():
        assert not part.merged[:, grid.outside].any()


def test_fixed_seed_gives_identical_partitions():
    x = _metric(2, 32, 32)
    grid = window_grid(32, 32, 2)

    def run(seed):
        gen = torch.Generator().manual_seed(seed)
        return [detail_partition(x, grid, 256, None, gen).group for _ in range(3)] + \
               [tome_partition(x, grid, 256, gen).group]

    a, b, c = run(7), run(7), run(8)
    assert all(torch.equal(p, q) for p, q in zip(a, b))
    assert not all(torch.equal(p, q) for p, q in zip(a, c))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision(dtype):
    x32 = _metric(2, 24, 40, 64, seed=2)
    x = x32.to(dtype)
    for kind, (part, g) in _partitions(x, 24, 40).items():
        merged = merge_tokens(x, part)
        assert merged.dtype == dtype and merged.shape == (2, g, 64)
        back = unmerge_tokens(merged, part)
        assert back.dtype == dtype and torch.isfinite(back).all()
        # the same grouping in float32 gives the same values to half precision
        ref = unmerge_tokens(merge_tokens(x.float(), part), part)
        torch.testing.assert_close(back.float(), ref, rtol=1e-2, atol=1e-2)
        cached = torch.zeros_like(back)
        assert blend_with_cache(back, cached, part, 0.1).dtype == dtype


def test_large_groups_do_not_overflow_float16():
    # a flat region sends many src to one dst; a float16 sum of them would overflow
    x = torch.full((1, 64 * 64, 8), 300.0, dtype=torch.float16)
    x[0, :, 0] += torch.linspace(0, 1, 64 * 64).half()
    part = detail_partition(x, window_grid(64, 64, 2), 3072, None, torch.Generator().manual_seed(0))
    assert part.sizes.max() > 220  # 220 * 300 > 65504
    assert torch.isfinite(merge_tokens(x, part)).all()


def test_prune_mode_keeps_the_representative():
    x = _metric(2, 16, 16, seed=6)
    for part, _ in _partitions(x, 16, 16).values():
        pruned = merge_tokens(x, part, mode="prune")
        assert torch.equal(pruned, x.gather(1, part.rep.unsqueeze(-1).expand(-1, -1, x.shape[-1])))
    with pytest.raises(ValueError, match="merge mode"):
        merge_tokens(x, part, mode="max")


def test_weighted_merge_and_sizes():
    x = _metric(2, 16, 16, seed=6)
    part, _ = _partitions(x, 16, 16)["detail"]
    merged, sizes = merge_tokens(x, part, return_sizes=True)
    assert torch.equal(sizes.squeeze(-1), part.sizes.float())
    wts = torch.rand(2, 256, generator=torch.Generator().manual_seed(1)) + 0.5
    wmerged, wsizes = merge_tokens(x, part, token_weight=wts, return_sizes=True)
    for b, g in itertools.product(range(2), range(0, part.num_groups, 17)):
        members = (part.group[b] == g).nonzero().flatten()
        expected = (x[b, members] * wts[b, members, None]).sum(0) / wts[b, members].sum()
        torch.testing.assert_close(wmerged[b, g], expected)
        torch.testing.assert_close(wsizes[b, g, 0], wts[b, members].sum())


def test_cache_blending_touches_exactly_the_merged_tokens():
    x = _metric(2, 32, 32, seed=3)
    for kind, (part, _) in _partitions(x, 32, 32).items():
        fresh = unmerge_tokens(merge_tokens(x, part), part)
        cached = torch.randn_like(fresh)
        out = blend_with_cache(fresh, cached, part, 0.1)
        m = part.merged
        assert torch.equal(out[~m], fresh[~m]), kind
        torch.testing.assert_close(out[m], 0.1 * fresh[m] + 0.9 * cached[m]), kind
        assert blend_with_cache(fresh, cached, part, 1.0) is fresh


def test_bad_inputs_name_what_is_wrong():
    grid = window_grid(8, 8, 2)
    x = _metric(1, 8, 8)
    with pytest.raises(ValueError, match="metric has 63 tokens"):
        window_partition(x[:, :63], grid, 1)
    with pytest.raises(ValueError, match="cannot collapse 17 windows"):
        window_partition(x, grid, 17)
    with pytest.raises(ValueError, match="cannot merge 49 src"):
        detail_partition(x, grid, 49)
    part = window_partition(x, grid, 4)
    with pytest.raises(ValueError, match="do not match the partition"):
        merge_tokens(x[:, :32], part)
    with pytest.raises(ValueError, match="do not match the partition"):
        unmerge_tokens(x, part)
    with pytest.raises(ValueError, match="at least 1x1"):
        window_grid(0, 4)


def test_the_index_reduce_beta_notice_stays_out_of_the_console_and_other_warnings_do_not():
    """A fresh process that merges tokens prints no "index_reduce() is in beta" notice, and a warning of
    its own still reaches stderr (the filter is that narrow)."""
    import subprocess
    import sys
    from pathlib import Path
    code = ("import warnings, torch\n"
            "from sdtm_ops import merge_tokens, window_grid, window_partition\n"
            "x = torch.randn(1, 16, 8)\n"
            "part = window_partition(torch.randn(1, 16, 8), window_grid(4, 4, 2, 'cpu'), 2, None, 0.0)\n"
            "merge_tokens(x, part)\n"
            "torch.empty(4, 2).index_reduce_(0, torch.tensor([0, 1]), torch.ones(2, 2), 'mean')\n"
            "warnings.warn('a warning of our own')\n")
    done = subprocess.run([sys.executable, "-W", "default", "-c", code], capture_output=True, text=True,
                          cwd=Path(__file__).resolve().parents[1], timeout=120)
    assert done.returncode == 0, done.stderr
    assert "a warning of our own" in done.stderr
    assert "index_reduce" not in done.stderr
