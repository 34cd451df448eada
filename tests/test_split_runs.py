"""A split run equals its single run in every case, and only the real rest of a run takes its state up.

KSamplerAdvanced 0-k then k-S on the returned latent, swept over start / end / switch percents, cut
points, presets and step counts (a first part that merges nothing included: it still keeps the cache its
continuation blends with). Runs that start where a part stopped but are not its rest (noise added, another
seed, another step count landing on the same sigma) give what a freshly patched model gives, and their
reports say why they started afresh. A continuation whose state was dropped (more split runs interleaved
than the model keeps) says so. Real ComfyUI, tiny random SD3 models, ComfyUI's own samplers."""
import logging
import sys

import pytest
import torch
from test_runs import HW, STEPS, advanced, info_of, ksampler, plans, report_of

from harness.tiny_sd3 import tiny_model
from sdtm_ops.knobs import KNOBS, PRESET_VALUE

TOLERANCE = 1e-5  # max |split - single|: the sampler's own rounding (unpatched split vs single: about 2.5e-6)


@pytest.fixture(scope="module")
def pack():
    from harness.comfy_env import load_pack
    return load_pack()


@pytest.fixture(scope="module")
def base():
    return tiny_model("sd3-medium", seed=0)


def split_and_single(model, steps, cut, sampler="euler", scheduler="sgm_uniform"):
    """(single latent, second part's latent, first part's report, second part's report)."""
    empty = torch.zeros(1, 16, *HW)
    single = ksampler(model, empty, steps=steps, sampler=sampler, scheduler=scheduler)
    first = ksampler(model, empty, steps=steps, start=0, last=cut, sampler=sampler, scheduler=scheduler)
    second = ksampler(model, first, steps=steps, start=cut, last=steps, add_noise=False, full_denoise=True,
                      sampler=sampler, scheduler=scheduler)
    return single, second, report_of(model, first), report_of(model, second)


SPLITS = [  # (knobs of SDTM Advanced, steps, cut): the cases first
    (dict(ratio=0.4, start_percent=0.3), 8, 4),  # the first part merges nothing: it must still store
    (dict(ratio=0.4, start_percent=0.48), 30, 16),
    (dict(ratio=0.5, start_percent=0.6, end_percent=0.9), 12, 5),
    (dict(ratio=0.5, switch_percent=0.6), 8, 3),
    (dict(ratio=0.6, switch_percent=0.2, start_percent=0.1), 10, 7),
    (dict(ratio=0.5, start_percent=0.0, end_percent=0.4), 8, 5),  # merging ends in the first part
    (dict(ratio=0.3, protect_steps_every=2), 9, 2),
    (dict(ratio=0.4, start_percent=0.3, rules="release"), 8, 4),  # the release's step-counted rules
    (dict(ratio=0.5, switch_percent=0.1, start_percent=0.5, rules="release"), 30, 14),
]


@pytest.mark.parametrize("knobs,steps,cut", SPLITS, ids=[f"{s}-{c}-{sorted(k.items())}" for k, s, c in SPLITS])
def test_a_split_run_equals_its_single_run(pack, base, knobs, steps, cut):
    patched = advanced(pack, base, **knobs)
    single, second, first_report, second_report = split_and_single(patched, steps, cut)
    assert second_report["continued"] and second_report["afresh_because"] is None
    assert float((second - single).abs().max()) <= TOLERANCE
    assert {**plans(first_report), **plans(second_report)} == plans(report_of(patched, single))


@pytest.mark.parametrize("preset", ["reference", "quality", "balanced", "fast"])
# single-step samplers: a multistep one (dpmpp_2m) restarts its history in each part, with or without SDTM
@pytest.mark.parametrize("sampler,scheduler", [("euler", "sgm_uniform"), ("euler", "karras"), ("heun", "beta")])
def test_every_preset_splits_exactly(pack, base, preset, sampler, scheduler):
    knobs = {k.input: PRESET_VALUE if k.preset_override else k.default for k in KNOBS if k.sdtm_position is not None}
    patched = pack.apply.execute(base, preset, **knobs).args[0]
    single, second, _, second_report = split_and_single(patched, 10, 4, sampler, scheduler)
    assert second_report["continued"]
    assert float((second - single).abs().max()) <= TOLERANCE


def fresh_run(pack, base, latent, **sampler):
    """The same run on a freshly patched model (nothing kept from earlier runs), and its report."""
    model = advanced(pack, base, ratio=0.4, start_percent=0.3)
    out = ksampler(model, latent, **sampler)
    return out, report_of(model, out)


NOT_CONTINUATIONS = {  # run after 0-4 of 8 on its latent -> (its sampler arguments, words of the reason)
    "KSampler denoise 0.5, seed 3": (dict(steps=8, denoise=0.5, seed=3), "adds noise"),
    "KSamplerAdvanced 4-8 adding noise, seed 77": (dict(start=4, last=8, seed=77, full_denoise=True), "adds noise"),
    "noiseless 4-8 with another seed": (dict(start=4, last=8, seed=5, add_noise=False, full_denoise=True), "seed"),
    "noiseless 16 steps from step 8": (dict(steps=16, start=8, last=16, add_noise=False, full_denoise=True),
                                       "schedule"),
}


@pytest.mark.parametrize("name", list(NOT_CONTINUATIONS))
def test_a_run_that_is_not_the_rest_starts_afresh_and_says_why(pack, base, name, caplog):
    sampler, words = NOT_CONTINUATIONS[name]
    patched = advanced(pack, base, ratio=0.4, start_percent=0.3)
    first = ksampler(patched, torch.zeros(1, 16, *HW), start=0, last=4)
    with caplog.at_level(logging.WARNING, logger="SDTM"):
        after = ksampler(patched, first, **sampler)
    report = report_of(patched, after)
    fresh, fresh_report = fresh_run(pack, base, first, **sampler)
    assert torch.equal(after, fresh)
    assert not report["continued"] and words in report["afresh_because"]
    assert (report["first_step"], report["seed"], plans(report)) == (
        fresh_report["first_step"], fresh_report["seed"], plans(fresh_report))
    assert report["seed"] == sampler.get("seed", 0)
    assert any("starts afresh" in r.getMessage() and words in r.getMessage() for r in caplog.records)
    if "16 steps" in name:  # numbered in its own 16-step schedule
        assert report["first_step"] == 8 and report["num_steps"] == 8
    assert "started afresh" in sys.modules[pack.module.__name__ + ".nodes.sdtm_nodes"].readable_report(report)


def test_a_dropped_carry_is_reported_and_the_run_starts_afresh(pack, base, caplog):
    """Three split runs interleaved on one model (A1, B1, C1, A2): the model keeps the state of its last
    CARRIES_KEPT part-way runs, so A2 starts afresh, and the console and the report say so; B2 and C2
    still continue theirs."""
    patched = advanced(pack, base)
    kept = info_of(patched).CARRIES_KEPT
    empty = torch.zeros(1, 16, *HW)
    firsts = [ksampler(patched, empty, seed=i, start=0, last=4) for i in range(kept + 1)]
    with caplog.at_level(logging.WARNING, logger="SDTM"):
        seconds = [ksampler(patched, first, seed=i, start=4, last=STEPS, add_noise=False, full_denoise=True)
                   for i, first in enumerate(firsts)]
    reports = [report_of(patched, second) for second in seconds]
    assert [r["continued"] for r in reports] == [False] + [True] * kept
    assert "dropped" in reports[0]["afresh_because"]
    assert any("dropped" in r.getMessage() for r in caplog.records)
    fresh_model = advanced(pack, base)
    fresh = ksampler(fresh_model, firsts[0], start=4, last=STEPS, add_noise=False, full_denoise=True)
    assert torch.equal(seconds[0], fresh)
    for i in range(1, kept + 1):  # the others equal their single runs
        single_model = advanced(pack, base)
        single = ksampler(single_model, empty, seed=i)
        assert float((seconds[i] - single).abs().max()) <= TOLERANCE
