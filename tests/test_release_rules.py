"""The ``rules`` knob: the official release's rules (``sdtm_ops.knobs.RELEASE_RULES``), each on small hand-made
inputs where the release and the pack give different answers (the release's answer with ``rules`` release or
with that rule switched on alone, the pack's otherwise), a 30-step schedule's phase per step, and through
ComfyUI's own sampler: the reference preset (release rules) gives the same image whatever the sampler seed."""
import math

import pytest
import torch
from test_engine_schedule import _devices, _NoHostSync

from harness.comfy_env import import_comfy, load_pack
from harness.tiny_sd3 import conditioning, tiny_model


@pytest.fixture(scope="module")
def pack():
    return load_pack()


def run_state(ops, rules: str, steps: int = 30, seed: int = 0):
    return ops.RunState(ops.SDTMConfig(rules=rules), [1.0 - s / steps for s in range(steps + 1)], seed=seed)


def modes(rule: str) -> list[tuple[str, bool]]:
    """(rules value, whether the release's ``rule`` is on): the pack, the release, the rule alone, another alone."""
    other = "mean_bonus" if rule != "mean_bonus" else "first_dst"
    return [("pack", False), ("release", True), (f"pack+{rule}", True), (f"pack+{other}", False)]


def test_the_rules_knob_accepts_pack_release_and_single_rules(pack):
    ops = pack.ops
    assert ops.SDTMConfig().rules == "pack" and ops.SDTMConfig().release == frozenset()
    assert ops.SDTMConfig(rules="release").release == frozenset(ops.knobs.RELEASE_RULES)
    assert ops.SDTMConfig(rules="pack+mean_bonus+first_dst").release == {"mean_bonus", "first_dst"}
    for bad in ("Release", "pack+", "pack+nothing", "release+mean_bonus", "", 3):
        with pytest.raises(ValueError, match=r"rules must be one of pack, release or pack\+RULE"):
            ops.SDTMConfig(rules=bad)
    knob = ops.knobs.KNOB_BY_INPUT["rules"]
    assert knob.choices == ("pack", "release") and ops.knobs.KNOBS[-1] is knob  # a new widget goes last
    assert pack.presets.PRESETS["reference"][0].rules == "release"
    assert all(config.rules == "pack" for name, (config, _) in pack.presets.PRESETS.items() if name != "reference")


def test_the_advanced_node_refuses_an_unknown_rules_value(pack):
    problem = pack.advanced.validate_inputs(rules="official")
    assert isinstance(problem, str) and "rules must be one of pack, release" in problem
    assert pack.advanced.validate_inputs(rules="release") is True


def structure_case():
    """An 8 x 8 grid: window 0 uniform (cosine 1), window 1 less so but long merged (counter 10), the other
    windows orthogonal tokens. Bonus of window 1 over the largest counter: 0.05 * 4 * 40 / 10 = 0.8, below the
    similarity gap 16 - 10 = 6 (scores scaled by K^2 = 16); over the mean (40 / 64): 12.8, above it."""
    e = torch.eye(4)
    grid_tokens = torch.zeros(8, 8, 4)
    for r in range(0, 8, 2):
        for c in range(0, 8, 2):
            grid_tokens[r, c], grid_tokens[r, c + 1], grid_tokens[r + 1, c], grid_tokens[r + 1, c + 1] = e
    grid_tokens[0:2, 0:2] = e[0]  # window 0: all alike
    grid_tokens[0:2, 2:4] = e[0]
    grid_tokens[1, 3] = e[1]  # window 1: three alike, one not
    counter = torch.zeros(8, 8, dtype=torch.int32)
    counter[0:2, 2:4] = 10
    return grid_tokens.reshape(1, 64, 4), counter.reshape(1, 64)


@pytest.mark.parametrize("rules,release", modes("mean_bonus"))
def test_structure_bonus_divides_the_counter_by_its_mean_in_the_release(pack, rules, release):
    ops = pack.ops
    metric, counter = structure_case()
    run = run_state(ops, rules)
    layout = ops.layout_key((0,), 1, 64)
    run.priority(layout, metric.device).copy_(counter)
    part = run.partition(metric, run.grid(8, 8, metric.device), ops.BlockMerge("window", 1, 61, 61), layout)
    collapsed = set(part.rep[0, part.num_singletons:].tolist())  # the first member of the collapsed window
    assert collapsed == ({2} if release else {0})


def detail_case(ops, rules: str, seed: int = 0):
    """A 4 x 4 grid (4 windows) of random tokens whose counters are all 3 (a counter exists): 3 src merge
    into the 4 dst, so at least one dst receives none."""
    metric = torch.rand(1, 16, 2, generator=torch.Generator().manual_seed(7))
    run = run_state(ops, rules, seed=seed)
    layout = ops.layout_key((0,), 1, 16)
    grid = run.grid(4, 4, metric.device)
    run.update_priority(layout, ops.window_partition(metric, grid, 1))  # the run's first partition
    run.priority(layout, metric.device).fill_(3)
    part = run.partition(metric, grid, ops.BlockMerge("bipartite", 3, 16, 13), layout)
    dst = part.rep[0, part.num_singletons:].tolist()
    sizes = part.sizes[0, part.num_singletons:].tolist()
    lonely = [t for t, size in zip(dst, sizes) if size == 1]
    assert lonely and len(lonely) < len(dst)
    return run.priority(layout, metric.device)[0], part, dst, lonely


@pytest.mark.parametrize("rules,release", modes("first_dst"))
def test_detail_dst_among_equal_counters_is_the_windows_first_member_in_the_release(pack, rules, release):
    ops = pack.ops
    seen = {tuple(detail_case(ops, rules, seed)[2]) for seed in range(6)}
    if release:
        assert seen == {tuple(ops.window_grid(4, 4, 2).members[:, 0].tolist())}  # tokens 0, 2, 8, 10
    else:
        assert len(seen) > 1  # the seeded merge RNG breaks the ties


def test_release_picks_random_dst_only_while_no_counter_exists(pack):
    ops = pack.ops
    chosen = set()
    for seed in range(6):
        run = run_state(ops, "release", seed=seed)
        part = run.partition(torch.rand(2, 16, 2, generator=torch.Generator().manual_seed(7)),
                             run.grid(4, 4, torch.device("cpu")), ops.BlockMerge("bipartite", 3, 16, 13),
                             ops.layout_key((0, 1), 2, 16))
        chosen.add(tuple(part.rep[0, part.num_singletons:].tolist()))
    assert len(chosen) > 1
    odd = run_state(ops, "release", seed=1)  # an odd batch (no cond/uncond pair): the first member
    part = odd.partition(torch.rand(1, 16, 2), odd.grid(4, 4, torch.device("cpu")),
                         ops.BlockMerge("bipartite", 3, 16, 13), ops.layout_key((0,), 1, 16))
    assert part.rep[0, part.num_singletons:].tolist() == ops.window_grid(4, 4, 2).members[:, 0].tolist()


@pytest.mark.parametrize("rules,release", modes("dst_counted"))
def test_a_dst_without_src_counts_as_merged_in_the_release(pack, rules, release):
    counter, part, dst, lonely = detail_case(pack.ops, rules)
    for t in range(16):
        if t in lonely:
            assert counter[t] == (4 if release else 0), t
        else:  # merged src and dst that received a src: 3 + 1 under both rules; unmerged src: 0
            assert counter[t] == (4 if part.merged[0, t] else 0), t


@pytest.mark.parametrize("rules,release", modes("dst_blended"))
def test_every_dst_is_blended_with_the_cache_in_the_release(pack, rules, release):
    _, part, dst, lonely = detail_case(pack.ops, rules)
    out = pack.ops.blend_with_cache(torch.zeros(1, 16, 2), torch.ones(1, 16, 2), part, 0.1)
    for t in range(16):
        blended = bool(part.merged[0, t]) or (release and t in lonely)  # unmerged src stay fresh under both
        assert out[0, t].tolist() == pytest.approx([0.9, 0.9] if blended else [0.0, 0.0]), t


def release_phases(steps: int) -> list[str]:
    """The release's schedule: full at s % 3 == 0, structure while s <= 20, detail after."""
    return ["full" if s % 3 == 0 else "structure" if s <= 20 else "detail" for s in range(steps)]


@pytest.mark.parametrize("steps", [4, 8, 30, 50])
def test_release_switches_at_absolute_step_20_at_any_step_count(pack, steps):
    ops = pack.ops
    release, switch_only = ops.SDTMConfig(rules="release"), ops.SDTMConfig(rules="pack+switch_step")
    sigma_scale = [0.997 * s / (steps - 1) for s in range(steps)]  # progress as SD3's sigmas give it
    for config in (release, switch_only):
        assert [ops.step_plan(config, s, steps, sigma_scale[s]).phase.value for s in range(steps)] == \
            release_phases(steps)
    pack_phases = [ops.step_plan(ops.SDTMConfig(), s, steps).phase.value for s in range(steps)]
    expected_pack = ["full" if s % 3 == 0 else "structure" if s / (steps - 1) <= 0.41 else "detail"
                     for s in range(steps)]
    assert pack_phases == expected_pack
    if steps == 30:  # the release keeps structure through step 20, the pack through step 11
        assert pack_phases != release_phases(30)
        assert max(s for s, p in enumerate(pack_phases) if p == "structure") == 11


@pytest.mark.parametrize("rules,release", modes("step_progress"))
def test_release_progress_counts_steps_not_sigmas(pack, rules, release):
    ops = pack.ops
    config = ops.SDTMConfig(rules=rules, protect_every=0)
    for s in range(1, 29):
        on_sigmas = 0.997 * s / 29
        plan = ops.step_plan(config, s, 30, on_sigmas)
        assert plan.ratio == pytest.approx(ops.ratio_at(config, s / 29 if release else on_sigmas), abs=1e-12)
        assert plan.ratio != pytest.approx(ops.ratio_at(config, on_sigmas if release else s / 29), abs=1e-9)


def test_release_run_state_plans_the_releases_schedule_from_any_sigmas(pack):
    """A RunState given progress on the sigma scale (as the hook gives it) still plans the release's steps."""
    ops = pack.ops
    config = ops.SDTMConfig(rules="release")
    sigmas = [math.cos(math.pi / 2 * s / 30) for s in range(31)]
    run = ops.RunState(config, sigmas, seed=0, progress=[1 - sigma for sigma in sigmas[:-1]])
    assert [plan.phase.value for plan in run.plans] == release_phases(30)
    assert [plan.progress for plan in run.plans] == [s / 29 for s in range(30)]


STEPS, HW = 24, (32, 48)  # 16 x 24 image tokens; steps 22 and 23 are detail steps of the release


def sample(model, seed: int, latent: torch.Tensor) -> torch.Tensor:
    """ComfyUI's KSamplerAdvanced path without added noise: the seed reaches only SDTM's merge RNG."""
    nodes = import_comfy()
    (out,) = nodes.common_ksampler(model, seed, STEPS, 3.0, "euler", "sgm_uniform", conditioning(1, seed=11),
                                   conditioning(1, seed=12), {"samples": latent}, disable_noise=True)
    return out["samples"]


def test_the_reference_preset_gives_the_same_image_whatever_the_sampler_seed(pack):
    model = tiny_model("sd3-medium", seed=0)
    latent = torch.randn(1, 16, *HW, generator=torch.Generator().manual_seed(5))
    reference = pack.apply.execute(model, "reference", -1.0, 0.0, 1.0, -1.0).args[0]
    config = pack.presets.PRESETS["reference"][0].replace(rules="pack")
    pack_rules = pack.advanced.execute(model, **{k.input: getattr(config, k.field) for k in pack.ops.knobs.KNOBS})
    pack_rules = pack_rules.args[0]
    first, second = sample(reference, 1, latent), sample(reference, 2, latent)
    report = reference.model_options["transformer_options"]["sdtm"].run_of(second).report
    phases = {s["step"]: s["phase"] for s in report["steps"]}
    assert {phases[22], phases[23]} == {"detail"} and report["config"]["rules"] == "release"
    assert torch.equal(first, second)
    assert not torch.equal(sample(pack_rules, 1, latent), sample(pack_rules, 2, latent))  # the pack's depends on it


def test_methods_table_is_the_measured_json(pack):
    """docs/METHOD.md's "Where the pack differs from the release" is benchmarks.bench_release_rules' table of
    the committed JSON, with a row per rule and every fixture and step count the issue names."""
    from benchmarks import bench_release_rules as bench
    data = bench.load()
    assert set(data["results"]) == {f"{f}/{s}" for f in ("deep", "dense-32") for s in (30, 50)}
    rows = {key: [r["name"] for r in rows] for key, rows in data["results"].items()}
    expected = ["pack", "release", *(f"pack+{rule}" for rule in pack.ops.knobs.RELEASE_RULES)]
    assert all(names == expected for names in rows.values()), rows
    assert bench.method_section(bench.METHOD.read_text()) == bench.method_table(data, pack.ops.knobs.RELEASE_RULES)


def test_release_progress_in_a_split_run_counts_the_whole_schedules_steps(pack):
    """KSamplerAdvanced 0-12 then 12-30 of a 30-step schedule uniform in progress (sgm_uniform): the first part
    stops at sigma > 0 and is told the whole schedule's step count (the hook finds it among the host's schedulers,
    else estimates it from the run's own step width: steps_after), so both parts plan the single run's steps
    (progress s / 29, structure through step 20)."""
    ops = pack.ops
    config = ops.SDTMConfig(rules="release")
    progress = [s / 30 for s in range(31)]  # the whole schedule's sigmas on the progress scale, final 0 -> 1
    sigmas = [1.0 - p for p in progress]
    single = ops.RunState(config, sigmas, seed=0, progress=progress[:-1])
    assert ops.steps_after(progress[:13]) == 18
    first = ops.RunState(config, sigmas[:13], seed=0, progress=progress[:12], total_steps=12 + 18)
    second = ops.RunState(config, sigmas[12:], seed=0, progress=progress[12:30], first_step=12)
    assert [(p.phase, p.ratio, p.progress) for p in first.plans + second.plans] == \
        [(p.phase, p.ratio, p.progress) for p in single.plans]
    assert [p.phase.value for p in single.plans] == release_phases(30)
    alone = ops.RunState(config, sigmas[:13], seed=0, progress=progress[:12])  # not told: 12 steps
    assert [p.progress for p in alone.plans] != [p.progress for p in single.plans[:12]]


@pytest.mark.parametrize("device", _devices())
def test_release_rules_never_sync_with_the_host(pack, device):
    """GPU first: the release's partitions (mean bonus, first dst by argmax, random dst while no counter exists,
    every dst counted and blended) read no value back to the host and make no data-dependent shape."""
    ops = pack.ops
    x = torch.randn(2, 33 * 47, 64, device=device, generator=torch.Generator(device).manual_seed(0))
    run = ops.RunState(ops.SDTMConfig(rules="release"), [1.0, 0.5, 0.0], seed=3)
    grid = run.grid(33, 47, x.device)
    counted, fresh = ops.layout_key((1, 0), 2, 33 * 47), ops.layout_key((0, 1), 2, 33 * 47)
    cached = torch.randn_like(x)
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
    try:
        with _NoHostSync():
            for merge, layout in ((ops.BlockMerge("bipartite", 512, 0, 0), fresh),  # no counter yet: random dst
                                  (ops.BlockMerge("window", 160, 0, 0), counted),
                                  (ops.BlockMerge("bipartite", 512, 0, 0), counted)):  # argmax dst
                part = run.partition(x, grid, merge, layout)
                ops.blend_with_cache(ops.unmerge_tokens(ops.merge_tokens(x, part), part), cached, part, 0.1)
    finally:
        if device == "cuda":
            torch.cuda.set_sync_debug_mode(0)
