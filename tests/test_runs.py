"""Every report belongs to its run, and a run knows where it sits in the schedule: split sampling
(KSamplerAdvanced 0-4 then 4-8), a two-model refiner chain, Heun's corrector calls, a run with no step
left; the Merge Map's odd inputs. Real ComfyUI (tiny random SD3 models, ComfyUI's own samplers)."""
import math
import time

import numpy as np
import pytest
import torch

from harness.comfy_env import import_comfy, load_pack
from harness.tiny_sd3 import conditioning, tiny_model

STEPS, HW = 8, (32, 48)  # 16 x 24 image tokens


@pytest.fixture(scope="module")
def pack():
    return load_pack()


@pytest.fixture(scope="module")
def base():
    return tiny_model("sd3-medium", seed=0)


def advanced(pack, model, **kw):
    d = dict(method="sdtm", ratio=0.4, deviation=0.2, switch_percent=0.41, start_percent=0.0, end_percent=1.0,
             window=2, priority_weight=0.05, protect_steps_every=3, protect_blocks_every=0, block_start=0,
             block_end=-1, cache=True, cache_fresh_weight=0.1, merge_mode="mean", merge_seed=-1, round_to=8)
    d.update(kw)
    return pack.advanced.execute(model, **d).args[0]


def ksampler(model, latent, steps=STEPS, start=None, last=None, add_noise=True, full_denoise=False,
             sampler="euler", cfg=3.0, seed=0, scheduler="sgm_uniform", denoise=1.0):
    """ComfyUI's KSampler / KSamplerAdvanced path (nodes.common_ksampler)."""
    nodes = import_comfy()
    (out,) = nodes.common_ksampler(model, seed, steps, cfg, sampler, scheduler, conditioning(1, seed=11),
                                   conditioning(1, seed=12), {"samples": latent}, denoise=denoise,
                                   disable_noise=not add_noise, start_step=start, last_step=last,
                                   force_full_denoise=full_denoise)
    return out["samples"]


def info_of(model):
    return model.model_options["transformer_options"]["sdtm"]


def plans(report):
    """step -> (phase, image tokens of attention and MLP per block call) as the run recorded them."""
    return {s["step"]: (s["phase"], s["attn_tokens"] // s["block_calls"], s["mlp_tokens"] // s["block_calls"])
            for s in report["steps"]}


def report_of(model, latent):
    found = info_of(model).run_of(latent)
    assert found is not None
    return found.report


@pytest.mark.parametrize("split", [4, 5])  # 4: a full step comes first; 5: a detail step (cache, counters, RNG)
def test_a_split_run_continues_the_single_run(pack, base, split):
    """KSamplerAdvanced 0-k then k-8 on the returned latent gives the single run's latent (mean difference at
    most 1e-6, the sampler's own rounding; a split that started afresh differed by 7e-4): the
    second part continues the first's plan, priority counters, blending cache and merge RNG. Running the
    second part again (a re-queued prompt whose first part ComfyUI serves from its cache) gives it again."""
    patched = advanced(pack, base)
    empty = torch.zeros(1, 16, *HW)
    single = ksampler(patched, empty)
    single_report = report_of(patched, single)
    first = ksampler(patched, empty, start=0, last=split)
    first_report = report_of(patched, first)
    second = ksampler(patched, first, start=split, last=STEPS, add_noise=False, full_denoise=True)
    second_report = report_of(patched, second)
    assert {**plans(first_report), **plans(second_report)} == plans(single_report)
    assert (first_report["first_step"], second_report["first_step"]) == (0, split)
    assert (first_report["continued"], second_report["continued"]) == (False, True)
    assert second_report["progress"] == pytest.approx(single_report["progress"][split:], abs=1e-9)
    assert second_report["cache"]["blends"] > 0  # the first part's cache reached the second
    # the sampler alone: the same split without SDTM differs from its single run by float rounding
    unpatched = ksampler(base, empty)
    unpatched_split = ksampler(base, ksampler(base, empty, start=0, last=split), start=split, last=STEPS,
                               add_noise=False, full_denoise=True)
    split_diff = float((second - single).abs().mean())
    print(f"split {split}: mean |split - single| {split_diff:.3g} with SDTM, "
          f"{float((unpatched_split - unpatched).abs().mean()):.3g} without; single with vs without SDTM "
          f"{float((single - unpatched).abs().mean()):.3g}")
    assert split_diff <= 1e-6
    again = ksampler(patched, first, start=split, last=STEPS, add_noise=False, full_denoise=True)
    assert torch.equal(again, second)


def test_an_unrelated_run_after_a_split_run_starts_afresh(pack, base):
    """The probe's sequence: a split run 0-5 of 10 steps (simple), then an unrelated img2img on the same
    patched model (4 steps, denoise 0.5, its own latent and seed) that starts at the sigma where the split
    run stopped. It is not that run's continuation: it gives the img2img of a freshly patched model."""
    empty = torch.zeros(1, 16, *HW)
    photo = torch.randn(1, 16, *HW, generator=torch.Generator().manual_seed(21))
    patched = advanced(pack, base)
    ksampler(patched, empty, steps=10, start=0, last=5, scheduler="simple")
    after = ksampler(patched, photo, steps=4, denoise=0.5, seed=9, scheduler="simple")
    fresh_model = advanced(pack, base)
    fresh = ksampler(fresh_model, photo, steps=4, denoise=0.5, seed=9, scheduler="simple")
    assert torch.equal(after, fresh)
    after_report, fresh_report = report_of(patched, after), report_of(fresh_model, fresh)
    assert not after_report["continued"]
    assert (after_report["first_step"], plans(after_report)) == (fresh_report["first_step"], plans(fresh_report))


def test_a_hires_pass_on_an_upscaled_latent_starts_afresh(pack, base):
    """A second pass on an edited (here upscaled) latent from the stopping sigma is a new run."""
    nodes = import_comfy()
    patched = advanced(pack, base)
    first = ksampler(patched, torch.zeros(1, 16, *HW), start=0, last=4)
    (upscaled,) = nodes.LatentUpscaleBy().upscale({"samples": first}, "nearest-exact", 1.5)
    second = ksampler(patched, upscaled["samples"], start=4, last=STEPS, add_noise=False, full_denoise=True)
    assert not report_of(patched, second)["continued"]


def test_a_two_model_refiner_chain_gets_the_single_runs_plan(pack, base):
    refiner = advanced(pack, tiny_model("sd3-medium", seed=1))
    patched = advanced(pack, base)
    empty = torch.zeros(1, 16, *HW)
    single_report = report_of(patched, ksampler(patched, empty))
    first = ksampler(patched, empty, start=0, last=5)
    second = ksampler(refiner, first, start=5, last=STEPS, add_noise=False, full_denoise=True)
    second_report = report_of(refiner, second)
    assert plans(second_report) == {s: p for s, p in plans(single_report).items() if s >= 5}
    assert second_report["first_step"] == 5


def test_heun_gets_one_plan_per_step_with_its_corrector_calls(pack, base):
    patched = advanced(pack, base)
    out = ksampler(patched, torch.zeros(1, 16, *HW), steps=6, sampler="heun")
    report = report_of(patched, out)
    depth = len(base.get_model_object("diffusion_model").joint_blocks)
    per_step = {s["step"]: s for s in report["steps"]}
    assert sorted(per_step) == list(range(6))
    assert [per_step[s]["block_calls"] for s in range(6)] == [2 * depth] * 5 + [depth]
    assert report["evaluations"] == 2 * 6 - 1  # the last step (to sigma 0) is an Euler step
    euler = report_of(patched, ksampler(patched, torch.zeros(1, 16, *HW), steps=6))
    assert {s: p[0] for s, p in plans(report).items()} == {s: p[0] for s, p in plans(euler).items()}
    assert [s for s, p in plans(report).items() if p[0] == "full"] == [0, 3]


def test_a_run_with_no_step_left_is_exactly_as_without_sdtm(pack, base):
    import comfy.samplers
    nodes = import_comfy()
    patched = advanced(pack, base)
    sigmas = comfy.samplers.calculate_sigmas(base.get_model_object("model_sampling"), "sgm_uniform", 4)
    latent = torch.randn(1, 16, *HW, generator=torch.Generator().manual_seed(3))
    noise = torch.randn(1, 16, *HW, generator=torch.Generator().manual_seed(4))
    outputs = []
    for model in (base, patched):
        guider = comfy.samplers.CFGGuider(model)
        guider.set_conds(conditioning(1, seed=11), conditioning(1, seed=12))
        guider.set_cfg(3.0)
        sampler = comfy.samplers.sampler_object("euler")
        outputs.append(guider.sample(noise, latent, sampler, sigmas[-1:], seed=1))  # SplitSigmas at the last step
    assert torch.equal(outputs[0], outputs[1])
    assert nodes is not None


def test_reports_of_two_samplers_on_one_model_stay_apart(pack, base):
    patched = advanced(pack, base)
    a = ksampler(patched, torch.zeros(1, 16, 16, 16), steps=4, seed=42)
    b = ksampler(patched, torch.zeros(1, 16, 32, 16), steps=6, seed=5)
    report_node = import_comfy().NODE_CLASS_MAPPINGS["SDTM_RunReport"]
    import json
    shown_a = json.loads(report_node.execute(patched, {"samples": a}).args[0])
    shown_b = json.loads(report_node.execute(patched, {"samples": b}).args[0])
    assert (shown_a["num_steps"], shown_a["seed"]) == (4, 42)
    assert (shown_b["num_steps"], shown_b["seed"]) == (6, 5)
    with pytest.raises(ValueError, match="samples: this LATENT was not produced by a sampling run"):
        report_node.execute(patched, {"samples": a + 1.0})
    assert json.loads(report_node.execute(patched).args[0])["seed"] == 5  # no samples: the newest run


def test_a_run_that_dropped_out_of_the_kept_runs_is_named_so(pack, base):
    patched = advanced(pack, base)
    first = ksampler(patched, torch.zeros(1, 16, 16, 16), steps=2, seed=0)
    for seed in range(1, 1 + info_of(patched).RUNS_KEPT):
        ksampler(patched, torch.zeros(1, 16, 16, 16), steps=2, seed=seed)
    report_node = import_comfy().NODE_CLASS_MAPPINGS["SDTM_RunReport"]
    with pytest.raises(ValueError, match="no longer kept: the model keeps its last 8 runs"):
        report_node.execute(patched, {"samples": first})


@pytest.mark.parametrize("sampler", ["dpm_fast", "dpm_adaptive"])
def test_samplers_that_pick_their_own_points_report_the_steps_they_ran(pack, base, sampler):
    """dpm_fast / dpm_adaptive evaluate the model at points of their own within the schedule: the report
    lists the schedule's steps and, apart, the steps whose sigmas the model was evaluated at."""
    patched = advanced(pack, base)
    out = ksampler(patched, torch.zeros(1, 16, *HW), steps=6, sampler=sampler)
    report = report_of(patched, out)
    assert report["num_steps"] == 6
    assert report["steps_run"] == sorted(s["step"] for s in report["steps"])
    summary = import_comfy().NODE_CLASS_MAPPINGS["SDTM_RunReport"].execute(patched, {"samples": out})
    text = summary.ui["summary"][0] if isinstance(summary.ui, dict) else summary.ui.as_dict()["summary"][0]
    assert text.startswith("SDTM advanced sdtm: 6 steps (0-5), seed 0")
    assert report["steps_run"] != list(range(6))  # its own points: not one evaluation per scheduled step
    assert f"the sampler evaluated the model within steps {report['steps_run'][0]}-" in text


def test_wall_time_leaves_out_model_loading(pack, base):
    import comfy.patcher_extension
    patched = advanced(pack, base)
    loading = 0.6

    def slow_loading(executor, *args, **kwargs):  # as a model being moved to the GPU would take
        time.sleep(loading)
        return executor(*args, **kwargs)

    patched.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.PREPARE_SAMPLING, "test", slow_loading)
    started = time.perf_counter()
    out = ksampler(patched, torch.zeros(1, 16, 16, 16), steps=3)
    total = time.perf_counter() - started
    report = report_of(patched, out)
    assert total > loading and report["wall_seconds"] < total - loading
    assert 0 < report["first_evaluation_seconds"] <= report["wall_seconds"]


def test_steps_where_nothing_merges_are_full_steps(pack, base):
    patched = advanced(pack, base, protect_steps_every=0, round_to=16)
    out = ksampler(patched, torch.zeros(1, 16, 8, 8), steps=4)  # 4 x 4 tokens: no count reaches 16
    report = report_of(patched, out)
    assert report["phases"]["full"]["steps"] == [0, 1, 2, 3]
    assert report["phases"]["structure"]["steps"] == [] and report["phases"]["detail"]["steps"] == []


def test_the_run_report_shows_a_readable_summary(pack, base):
    patched = advanced(pack, base)
    out = ksampler(patched, torch.zeros(1, 16, *HW))
    result = import_comfy().NODE_CLASS_MAPPINGS["SDTM_RunReport"].execute(patched, {"samples": out})
    (summary,) = result.ui["summary"]
    report = report_of(patched, out)
    assert result.ui["text"] == [result.args[0]]
    lines = summary.splitlines()
    assert lines[0].startswith("SDTM advanced sdtm: 8 steps (0-7), seed 0")
    structure = report["phases"]["structure"]
    share = structure["attn_tokens"] / structure["tokens"]
    assert f"structure: steps {structure['steps'][0]}" in summary and f"attention {share:.0%}" in summary
    assert f"FLOP-model speedup {report['flop_speedup']:.2f}x" in summary and "MiB peak" in summary


def test_an_auraflow_model_is_refused_with_its_own_name(pack):
    from comfy.ldm.aura.mmdit import MMDiT as AuraMMDiT
    aura = AuraMMDiT.__new__(AuraMMDiT)
    torch.nn.Module.__init__(aura)
    with pytest.raises(pack.hook.UnsupportedModelError) as caught:
        pack.hook.check_supported(aura)
    message = str(caught.value)
    assert "AuraFlow" in message and "comfy.ldm.aura.mmdit.MMDiT" in message
    assert "is MMDiT, which" not in message


# -- Merge Map: odd inputs ---------------------------------------------------------------------
GRID = (4, 6)


def synthetic_run():
    groups = torch.arange(24)
    groups[1], groups[6], groups[7] = 0, 0, 0  # one merged window at the top left
    maps = {"grid": GRID, "groups": {(1, 0): groups, (2, 0): groups.clone()}}
    steps = [{"step": s, "phase": "structure", "block_calls": 1, "tokens": 24, "attn_tokens": 21, "mlp_tokens": 21,
              "flops": 1.0, "flops_full": 1.2} for s in range(4)]
    report = {"label": "test", "seed": 0, "num_steps": 4, "first_step": 0, "flop_speedup": 1.2, "steps": steps}
    return maps, report


@pytest.fixture(scope="module")
def render(pack):
    import sys
    return sys.modules[pack.hook.__name__.rsplit(".", 1)[0] + ".merge_map"].render_merge_map


def test_merge_map_refuses_a_nan_opacity(render):
    maps, report = synthetic_run()
    with pytest.raises(ValueError, match=r"opacity must be a number in \[0, 1\], got nan"):
        render(maps, report, None, 0, "1", math.nan)


def test_merge_map_refuses_an_image_of_another_aspect(render):
    maps, report = synthetic_run()
    with pytest.raises(ValueError, match="not the image of this run"):
        render(maps, report, torch.rand(1, 64, 32, 3), 0, "1", 0.5)  # portrait image, landscape 4 x 6 grid
    picture = render(maps, report, torch.rand(1, 60, 96, 3), 0, "1", 0.5)  # odd latent rows: 4 x 6 tokens still
    assert picture.shape[0] == 1


def test_merge_map_of_a_tiny_image_is_enlarged_to_a_readable_panel(render):
    maps, report = synthetic_run()
    picture = render(maps, report, torch.rand(1, 16, 24, 3), 0, "1", 0.5)
    assert picture.shape[2] >= 288  # the panel and its title, not 24 pixels wide


def test_merge_map_shows_a_repeated_step_once(render):
    maps, report = synthetic_run()
    once = render(maps, report, None, 0, "1", 0.5)
    assert torch.equal(render(maps, report, None, 0, "1,1", 0.5), once)


def test_merge_map_refuses_an_empty_batch_by_name(render):
    maps, report = synthetic_run()
    with pytest.raises(ValueError, match="image must be a batch of at least one image"):
        render(maps, report, torch.zeros(0, 64, 96, 3), 0, "1", 0.5)


def test_merge_map_draws_over_a_grey_and_alpha_image(render):
    maps, report = synthetic_run()
    grey_alpha = torch.stack([torch.full((64, 96), 0.5), torch.ones(64, 96)], dim=-1).unsqueeze(0)
    picture = render(maps, report, grey_alpha, 0, "1", 0.0)  # opacity 0: the underlay itself
    pixels = (picture[0].numpy() * 255).round().astype(np.uint8)
    assert tuple(pixels[14 + 3 * 48 + 5, 5 * 48 + 5]) == (128, 128, 128)  # an untinted cell, enlarged 3x


def test_feeds_merge_map_follows_links_downstream(pack):
    """The Apply nodes keep merge maps only when their prompt has a Merge Map downstream of them."""
    import sys
    feeds = sys.modules[pack.hook.__name__.rsplit(".", 1)[0] + ".sdtm_nodes"].feeds_merge_map
    prompt = {"1": {"class_type": "CheckpointLoaderSimple", "inputs": {}},
              "2": {"class_type": "SDTM_Apply", "inputs": {"model": ["1", 0]}},
              "3": {"class_type": "LoraLoaderModelOnly", "inputs": {"model": ["2", 0]}},
              "4": {"class_type": "KSampler", "inputs": {"model": ["3", 0], "seed": 1}},
              "5": {"class_type": "SDTM_RunReport", "inputs": {"model": ["3", 0], "samples": ["4", 0]}}}
    assert not feeds(prompt, "2")
    prompt["6"] = {"class_type": "SDTM_MergeMap", "inputs": {"model": ["3", 0], "samples": ["4", 0]}}
    assert feeds(prompt, "2") and feeds(prompt, "4") and not feeds(prompt, "6")  # 6 is the Merge Map itself
    assert not feeds(None, "2") and not feeds(prompt, None)
