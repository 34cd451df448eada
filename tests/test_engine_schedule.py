"""sdtm_ops schedule, per-run state, FLOP model, and the no-host-sync property of the hot path."""

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from sdtm_ops import (
    MODEL_SHAPES,
    Phase,
    RunState,
    SDTMConfig,
    blend_with_cache,
    block_is_merged,
    block_merge,
    detail_partition,
    layout_key,
    merge_tokens,
    progress_at,
    ratio_at,
    reference_config,
    schedule_cost,
    step_plan,
    token_grid,
    unmerge_tokens,
    window_grid,
    window_partition,
)
from sdtm_ops.cost import block_flops


def test_ratio_schedule_endpoints_and_shape():
    cfg = SDTMConfig(ratio=0.3, deviation=0.2)
    assert ratio_at(cfg, 0.0) == pytest.approx(0.5)
    assert ratio_at(cfg, 1.0) == pytest.approx(0.1)
    values = [ratio_at(cfg, p / 20) for p in range(21)]
    assert all(a >= b for a, b in zip(values, values[1:]))
    assert ratio_at(SDTMConfig(ratio=0.1, deviation=0.3), 1.0) == 0.0  # clamped
    assert ratio_at(SDTMConfig(ratio=0.0, deviation=0.0), 0.3) == 0.0


def test_reference_schedule_reproduces_the_release_at_50_steps():
    cfg = reference_config(50)
    plans = [step_plan(cfg, s, 50) for s in range(50)]
    assert [p.step for p in plans if p.protected] == list(range(0, 50, 3))
    assert [p.step for p in plans if p.phase is Phase.STRUCTURE] == [s for s in range(21) if s % 3]
    assert [p.step for p in plans if p.phase is Phase.DETAIL] == [s for s in range(21, 50) if s % 3]
    counts = {p.step: block_merge(cfg, p, 64, 64) for p in plans}
    # the figures of the method notes, 1024x1024: 2080 tokens at step 1, MLP 2448 at step 22, 3696 at 49
    assert (counts[1].attn_tokens, counts[1].mlp_tokens) == (2080, 2080)
    assert (counts[20].attn_tokens, counts[20].mlp_tokens) == (2416, 2416)
    assert (counts[22].attn_tokens, counts[22].mlp_tokens) == (4096, 2448)
    assert (counts[49].attn_tokens, counts[49].mlp_tokens) == (4096, 3696)
    structure = [counts[s].attn_tokens for s in range(21) if s % 3]
    assert min(structure) == 2080 and max(structure) == 2416
    # the same counts come out of real partitions
    x = torch.randn(1, 4096, 8)
    grid = window_grid(64, 64, 2)
    assert window_partition(x, grid, counts[1].count).num_groups == 2080
    assert detail_partition(x, grid, counts[22].count).num_groups == 2448


def test_progress_start_end_and_switch():
    cfg = SDTMConfig(start=0.2, end=0.8, switch=0.5, protect_every=0)
    phases = [step_plan(cfg, s, 11).phase for s in range(11)]
    assert phases == [Phase.FULL, Phase.FULL] + [Phase.STRUCTURE] * 4 + [Phase.DETAIL] * 3 + [Phase.FULL] * 2
    assert progress_at(0, 1) == 0.0 and progress_at(9, 10) == 1.0
    with pytest.raises(ValueError, match="step must be in"):
        progress_at(10, 10)
    tome = SDTMConfig(method="tome", protect_every=0)
    assert {step_plan(tome, s, 10).phase for s in range(10)} == {Phase.STRUCTURE}
    plan = step_plan(tome, 5, 10)
    bm = block_merge(tome, plan, 32, 32)
    assert bm.kind == "bipartite" and bm.attn_tokens == bm.mlp_tokens == 1024 - bm.count


def test_protected_blocks_and_block_range():
    cfg = SDTMConfig(protect_blocks_every=4)
    assert [b for b in range(24) if block_is_merged(cfg, b, 24)] == [b for b in range(23) if b % 4]
    cfg = SDTMConfig(block_start=2, block_end=5)
    assert [b for b in range(24) if block_is_merged(cfg, b, 24)] == [2, 3, 4, 5]
    assert [b for b in range(4) if block_is_merged(SDTMConfig(), b, 4)] == [0, 1, 2, 3]


def test_config_rejects_out_of_range_values_by_name():
    for kwargs, message in [
        ({"ratio": 1.5}, r"ratio must be in \[0.0, 1.0\], got 1.5"),
        ({"window": 1}, r"window must be in \[2, 8\]"),
        ({"window": 2.5}, r"window must be a whole number"),
        ({"protect_every": -1}, r"protect_every must be in"),
        ({"method": "fast"}, r"method must be one of"),
        ({"merge_mode": "max"}, r"merge_mode must be one of"),
        ({"start": 0.6, "end": 0.4}, r"start \(0.6\) must not be after end \(0.4\)"),
        ({"block_start": 5, "block_end": 3}, r"block_start \(5\) must not be after block_end \(3\)"),
        ({"cache_fresh_weight": "x"}, r"cache_fresh_weight must be a number"),
    ]:
        with pytest.raises(ValueError, match=message):
            SDTMConfig(**kwargs)


def test_step_index_follows_the_sigma_schedule():
    sigmas = [1.0, 0.8, 0.55, 0.3, 0.1, 0.0]
    run = RunState(SDTMConfig(), sigmas, seed=0)
    assert run.num_steps == 5
    assert [run.step_index(s) for s in sigmas[:-1]] == [0, 1, 2, 3, 4]
    assert run.step_index(0.675) == 1  # a midpoint evaluation belongs to the earlier step
    assert run.step_index(0.8 * (1 + 1e-7)) == 1 and run.step_index(0.8 * (1 - 1e-7)) == 1
    assert run.step_index(5.0) == 0 and run.step_index(0.01) == 4
    # img2img: a run over the tail of a schedule counts its own steps
    assert [RunState(SDTMConfig(), sigmas[2:], 0).step_index(s) for s in sigmas[2:-1]] == [0, 1, 2]


def test_priority_counter_counts_merged_streaks():
    run = RunState(SDTMConfig(), [1.0, 0.0], seed=0)
    layout = layout_key((1, 0), 2, 64)
    x = torch.randn(2, 64, 8)
    grid = window_grid(8, 8, 2)
    counter = run.priority(layout, x.device)
    assert counter.shape == (2, 64) and counter.eq(0).all()
    history = []
    for i in range(4):
        part = window_partition(x if i < 2 else torch.randn(2, 64, 8), grid, 4)
        run.update_priority(layout, part)
        history.append(part.merged.clone())
    # the first two partitions (same tokens) merged the same tokens: each of those counted 2 after them
    assert torch.equal(history[0], history[1]) and history[0].any() and not history[0].all()
    # the counter is, per token, the length of its run of consecutive merged steps ending now
    streak = torch.zeros(2, 64, dtype=torch.int32)
    for merged in history:
        streak = torch.where(merged, streak + 1, torch.zeros_like(streak))
    assert torch.equal(counter, streak)
    assert run.priority(layout, x.device) is counter
    other = run.priority(layout_key((0,), 1, 64), x.device)
    assert other.shape == (1, 64) and other.eq(0).all()


def test_cache_is_keyed_by_layout_and_released():
    run = RunState(SDTMConfig(), [1.0, 0.5, 0.0], seed=0)
    both, cond = layout_key((1, 0), 2, 16), layout_key((0,), 1, 16)
    value = torch.randn(2, 16, 8)
    run.store(3, "attn", both, value)
    assert run.cached(3, "attn", both, value) is value
    assert run.cached(3, "attn", cond, value[:1]) is None  # another batch composition
    assert run.cached(3, "mlp", both, value) is None
    assert run.cached(3, "attn", both, value.half()) is None  # another dtype
    assert run.stats.cache_misses == 3 and run.stats.cache_blends == 1
    assert run.stats.cache_bytes_peak == value.numel() * 4
    run.release()
    assert run.cache_bytes == 0 and run.cached(3, "attn", both, value) is None


def _merge_maps_after_sampling(sampling_seed: int, merge_seed: int = -1) -> dict:
    """Sample a tiny SD3.5-medium through ComfyUI's KSampler with the SDTM Advanced patch; the noise is
    disabled and the latent fixed, so the sampling seed can reach the result only through SDTM."""
    from harness.comfy_env import import_comfy, load_pack
    from harness.tiny_sd3 import conditioning, tiny_model
    pack, nodes = load_pack(), import_comfy()
    patched = pack.advanced.execute(
        tiny_model("sd3.5-medium", seed=4), method="sdtm", ratio=0.4, deviation=0.2, switch_percent=0.3,
        start_percent=0.0, end_percent=1.0, window=2, priority_weight=0.05, protect_steps_every=0,
        protect_blocks_every=0, block_start=0, block_end=-1, cache=False, cache_fresh_weight=0.1, merge_mode="mean",
        merge_seed=merge_seed, round_to=8).args[0]
    patched.model_options["transformer_options"]["sdtm"].record_maps = True  # in-process: no prompt to read
    latent = torch.randn(1, 16, 32, 32, generator=torch.Generator().manual_seed(5))
    nodes.common_ksampler(patched, sampling_seed, 6, 3.0, "euler", "sgm_uniform", conditioning(1, seed=11),
                          conditioning(1, seed=12), {"samples": latent}, disable_noise=True)
    info = patched.model_options["transformer_options"]["sdtm"]
    assert info.latest().report["seed"] == (sampling_seed if merge_seed < 0 else merge_seed)
    return info.latest().maps["groups"]


def test_the_samplers_seed_drives_the_merge_rng_unless_a_merge_seed_is_set():
    first, again, other = (_merge_maps_after_sampling(seed) for seed in (1, 1, 2))
    assert first.keys() == again.keys() == other.keys() and first

    def same(a: dict, b: dict) -> bool:
        return all(torch.equal(a[k], b[k]) for k in a)

    assert same(first, again)  # the same sampling seed reproduces every merge
    assert not same(first, other)  # another sampling seed picks other detail-step merges
    # a fixed merge seed makes the merges independent of the sampling seed
    fixed = [_merge_maps_after_sampling(seed, merge_seed=7) for seed in (1, 2)]
    assert same(*fixed)


def test_flop_model_reproduces_the_reference_figures():
    shape = MODEL_SHAPES["sd3-medium"]
    grid = token_grid(1024, 1024)
    assert grid == (64, 64)
    with_protect = schedule_cost(shape, grid, reference_config(50), 50)
    without = schedule_cost(shape, grid, reference_config(50, protect_steps_frequency=0), 50)
    # method notes: "about 1.23x less transformer compute (about 1.39x without protected steps)"
    assert with_protect.speedup == pytest.approx(1.23, abs=0.01)
    assert without.speedup == pytest.approx(1.39, abs=0.025)
    # issue 5's figures for one structure block at ratio 0.5
    for res, expected in ((512, 1.77), (1024, 2.24)):
        h, w = token_grid(res, res)
        plan = step_plan(SDTMConfig(ratio=0.5, deviation=0.0, protect_every=0), 1, 10)
        bm = block_merge(SDTMConfig(ratio=0.5, deviation=0.0, protect_every=0), plan, h, w)
        full = block_flops(shape, h * w, h * w, 154, False, False)
        merged = block_flops(shape, bm.attn_tokens, bm.mlp_tokens, 154, False, False)
        assert full / merged == pytest.approx(expected, abs=0.01)
    assert token_grid(1344, 768) == (84, 48) and token_grid(1000, 1000) == (63, 63)


def test_flop_model_counts_what_the_blocks_run():
    shape = MODEL_SHAPES["sd3.5-medium"]
    cfg = SDTMConfig(protect_every=4)
    cost = schedule_cost(shape, (40, 40), cfg, 12)
    for sc in cost.steps:
        bm = block_merge(cfg, step_plan(cfg, sc.step, 12), 40, 40)
        assert (sc.attn_tokens, sc.mlp_tokens) == (bm.attn_tokens, bm.mlp_tokens)
        expected = sum(block_flops(shape, bm.attn_tokens, bm.mlp_tokens, 154, b == 23, b < 13) for b in range(24))
        assert sc.flops == pytest.approx(expected)
    assert cost.steps[0].flops == cost.steps[0].flops_full


class _NoHostSync(TorchDispatchMode):
    """Fails on every op that reads a tensor value back to the host or has a data-dependent shape."""

    FORBIDDEN = {"_local_scalar_dense", "nonzero", "masked_select", "_unique2", "unique_dim", "unique_consecutive",
                 "bincount", "item", "equal", "is_nonzero"}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.__name__.split(".")[0]
        if name in self.FORBIDDEN:
            raise AssertionError(f"host sync or data-dependent shape in the hot path: {func}")
        if name in ("index", "index_put", "index_put_", "_index_put_impl_") and any(
                isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in (args[1] or ())):
            raise AssertionError(f"host sync (boolean mask index) in the hot path: {func}")
        if name == "_to_copy" and kwargs and kwargs.get("device") not in (None, args[0].device):
            raise AssertionError(f"device transfer in the hot path: {func} {kwargs}")
        return func(*args, **(kwargs or {}))


def _devices():
    return ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.mark.parametrize("device", _devices())
def test_hot_path_never_syncs_with_the_host(device):
    torch.manual_seed(0)
    x = torch.randn(2, 33 * 47, 64, device=device)
    run = RunState(SDTMConfig(), [1.0, 0.5, 0.0], seed=3)
    layout = layout_key((1, 0), 2, 33 * 47)
    grid = run.grid(33, 47, x.device)
    gen = run.generator(x.device)
    prio = run.priority(layout, x.device)
    cached = torch.randn_like(x)
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
    try:
        with _NoHostSync():
            for part in (window_partition(x, grid, 160, prio, 0.05), detail_partition(x, grid, 512, prio, gen)):
                run.update_priority(layout, part)
                y = unmerge_tokens(merge_tokens(x, part), part)
                blend_with_cache(y, cached, part, 0.1)
                merge_tokens(x, part, mode="prune")
    finally:
        if device == "cuda":
            torch.cuda.set_sync_debug_mode(0)


def test_the_no_sync_check_catches_a_sync():
    with pytest.raises(AssertionError, match="host sync"):
        with _NoHostSync():
            torch.ones(3).sum().item()
    with pytest.raises(AssertionError, match="host sync"):
        with _NoHostSync():
            torch.arange(4)[torch.tensor([True, False, True, False])]
