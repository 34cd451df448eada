"""The SDTM nodes on the real ComfyUI: tiny random SD3-family models built and loaded by ComfyUI's own
classes, sampled through ComfyUI's own KSampler path."""
import logging
import math

import pytest
import torch

from block_probe import BlockProbe
from harness.comfy_env import import_comfy, load_pack
from harness.tiny_sd3 import VARIANTS, sample, tiny_model

TEXT_TOKENS = 154  # conditioning() default


@pytest.fixture(scope="module")
def pack():
    return load_pack()


@pytest.fixture(scope="module")
def models():
    return {name: tiny_model(name, seed=i) for i, name in enumerate(VARIANTS)}


def apply(pack, model, preset="fast", **knobs):
    return pack.apply.execute(model, preset, **knobs).args[0]


def advanced(pack, model, **knobs):
    """SDTM Advanced with its defaults (``sdtm_ops.knobs.KNOBS``) but for ``knobs``."""
    return pack.advanced.execute(model, **knobs).args[0]


def options_snapshot(model):
    to = model.model_options["transformer_options"]
    return sorted(to), sorted(to.get("patches_replace", {}).get("dit", {})), sorted(model.model_options)


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_no_merging_is_bit_identical(pack, models, variant):
    model = models[variant]
    base = sample(model, steps=4)
    for patched in (apply(pack, model, ratio=0.0),
                    advanced(pack, model, ratio=0.0, deviation=0.0),
                    apply(pack, model, start_percent=0.5, end_percent=0.6)):  # no step of 4 has progress in [0.5, 0.6]
        assert torch.equal(sample(patched, steps=4), base)


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_merging_changes_the_output_and_never_the_callers_model(pack, models, variant):
    model = models[variant]
    before = options_snapshot(model)
    base = sample(model, steps=6)
    for patched in (apply(pack, model, "fast"), apply(pack, model, "reference"),
                    advanced(pack, model, method="tome", protect_steps_every=0)):
        out = sample(patched, steps=6)
        assert torch.isfinite(out).all()
        assert not torch.equal(out, base)
        assert (out - base).abs().mean() < base.abs().mean()  # merged, not destroyed
    assert options_snapshot(model) == before
    assert torch.equal(sample(model, steps=6), base)


CASES = [  # latent (H, W), batch, cfg
    ((128, 128), 1, 4.5),  # 64 x 64 tokens (1024 px)
    ((96, 160), 3, 1.0),  # 48 x 80, landscape, batch 3, cfg 1 (one chunk per call)
    ((80, 80), 3, 4.5),  # 40 x 40
    ((65, 93), 1, 1.0),  # odd latent: padded to 66 x 94, 33 x 47 tokens
    ((65, 93), 3, 4.5),
]


@pytest.mark.parametrize("latent_hw,batch,cfg", CASES)
def test_any_grid_batch_and_cfg(pack, models, latent_hw, batch, cfg):
    model = models["sd3-medium"]
    # every step merges (no full steps): step 0 a structure step, the last a detail step
    patched = advanced(pack, model, ratio=0.5, deviation=0.2, protect_steps_every=0, cache=False)
    h, w = math.ceil(latent_hw[0] / 2), math.ceil(latent_hw[1] / 2)
    with BlockProbe(patched, TEXT_TOKENS) as probe:
        out = sample(probe.model, latent_hw=latent_hw, batch=batch, cfg=cfg, steps=4)
    assert out.shape == (batch, 16, *latent_hw) and torch.isfinite(out).all()
    chunks = 1 if cfg == 1.0 else 2
    assert {c.batch for c in probe.calls} == {batch * chunks}
    seen = probe.image_tokens_by_step()
    assert all(attn < h * w for attn, _ in seen[0])  # step 0 is a structure step: attention shortened
    assert all(attn == h * w and mlp < h * w for attn, mlp in seen[3])  # the last step is a detail step
    base = sample(model, latent_hw=latent_hw, batch=batch, cfg=cfg, steps=4)
    assert not torch.equal(out, base)


def sigma_progress(model, steps, denoise=1.0):
    """Each step's progress on the flow model's sigma scale (as ComfyUI's percents: sigma = shift(1 - p)),
    for KSampler's sgm_uniform schedule; derived here by inverting the shift in closed form."""
    import comfy.samplers
    ms = model.get_model_object("model_sampling")
    sigmas = comfy.samplers.calculate_sigmas(ms, "sgm_uniform", int(steps / denoise))[-(steps + 1):]
    return [1.0 - float(s) / (ms.shift - (ms.shift - 1.0) * float(s)) for s in sigmas[:-1]]


def _expected_tokens(n, h, w, step, steps, ratio=0.3, dev=0.2, switch=0.41, protect=3, progress=None):
    """Image tokens (attention, MLP) of a merging block, derived here from the method notes; ``progress``:
    the step's progress on the sigma scale (default step / (steps - 1))."""
    if protect and step % protect == 0:
        return n, n
    p = step / (steps - 1) if progress is None else progress
    r = min(1.0, max(0.0, (ratio - dev) + 2 * dev * math.cos(math.pi / 2 * p)))
    n_red = int(n * r)
    windows = (h // 2) * (w // 2)
    if p <= switch:
        count = min(n_red // 3, windows) // 16 * 16
        return n - 3 * count, n - 3 * count
    return n, n - min(3 * windows, n_red) // 16 * 16


def test_blocks_follow_the_schedule_step_by_step(pack, models):
    model = models["sd3.5-medium"]  # dual-attention blocks included
    patched = advanced(pack, model)  # the release's defaults
    steps, (h, w) = 10, (24, 40)
    with BlockProbe(patched, TEXT_TOKENS) as probe:
        sample(probe.model, latent_hw=(2 * h, 2 * w), steps=steps, cfg=3.0)
    seen = probe.image_tokens_by_step()
    assert sorted(seen) == list(range(steps))
    progress = sigma_progress(model, steps)
    for s in range(steps):
        assert seen[s] == {_expected_tokens(h * w, h, w, s, steps, progress=progress[s])}, s
    dual = [c for c in probe.calls if c.block in (0, 1)]
    assert all(len(c.attn_seq) == 2 and c.attn_seq[1] == c.attn_seq[0] - TEXT_TOKENS for c in dual)


def test_separate_cond_and_uncond_calls_keep_the_schedule(pack):
    model = tiny_model("sd3-medium", seed=5)
    model.model.memory_usage_factor = 1e12  # as if memory were short: ComfyUI runs cond and uncond apart
    patched = advanced(pack, model)
    steps, (h, w) = 10, (24, 24)
    with BlockProbe(patched, TEXT_TOKENS) as probe:
        out = sample(probe.model, latent_hw=(2 * h, 2 * w), steps=steps, cfg=4.5)
    assert torch.isfinite(out).all()
    assert {c.chunks for c in probe.calls} == {(0,), (1,)}
    seen = probe.image_tokens_by_step()
    progress = sigma_progress(model, steps)
    for s in range(steps):
        assert seen[s] == {_expected_tokens(h * w, h, w, s, steps, progress=progress[s])}, s
    report = patched.model_options["transformer_options"]["sdtm"].latest().report
    assert report["cache"]["misses"] == 0 and report["cache"]["blends"] > 0


def test_img2img_and_two_samplers_in_a_row(pack, models):
    model = models["sd3.5-large"]
    patched = advanced(pack, model, protect_steps_every=0)
    h, w = 20, 28
    with BlockProbe(patched, TEXT_TOKENS) as probe:
        first = sample(probe.model, latent_hw=(2 * h, 2 * w), steps=6)
        n_first = len(probe.calls)
        second = sample(probe.model, latent=first, steps=8, denoise=0.5, seed=3)  # a hires-fix style pass
    assert torch.isfinite(second).all()
    # the hires pass (denoise 0.5) is the second half of a 16-step schedule: its progress from 0.5 on
    for calls, steps, denoise in ((probe.calls[:n_first], 6, 1.0), (probe.calls[n_first:], 8, 0.5)):
        seen = {}
        for c in calls:
            seen.setdefault(c.step, set()).add((c.attn_seq[0] - TEXT_TOKENS, c.mlp_tokens))
        assert sorted(seen) == list(range(steps))
        progress = sigma_progress(model, steps, denoise)
        for s in range(steps):
            assert seen[s] == {_expected_tokens(h * w, h, w, s, steps, protect=0, progress=progress[s])}, (steps, s)
    report = patched.model_options["transformer_options"]["sdtm"].latest().report
    assert report["num_steps"] == 8


def test_same_seed_same_image_and_the_seed_matters(pack, models):
    patched = advanced(pack, models["sd3-medium"], protect_steps_every=0, switch_percent=0.0)  # detail: random dst
    a = sample(patched, steps=4, seed=1)
    assert torch.equal(sample(patched, steps=4, seed=1), a)
    fixed = advanced(pack, models["sd3-medium"], protect_steps_every=0, switch_percent=0.0, merge_seed=5)
    other = advanced(pack, models["sd3-medium"], protect_steps_every=0, switch_percent=0.0, merge_seed=6)
    assert not torch.equal(sample(fixed, steps=4, seed=1), sample(other, steps=4, seed=1))


def test_cache_is_freed_when_sampling_ends_and_when_it_fails(pack, models):
    model = models["sd3-medium"]
    patched = advanced(pack, model)
    sample(patched, steps=7)
    report = patched.model_options["transformer_options"]["sdtm"].latest().report
    assert report["cache"]["stores"] > 0 and report["cache"]["peak_bytes"] > 0
    no_cache = apply(pack, model, "turbo")  # cache off: no per-block tensor is kept between steps
    sample(no_cache, steps=7)
    report = no_cache.model_options["transformer_options"]["sdtm"].latest().report
    assert report["cache"]["stores"] == 0 and report["cache"]["peak_bytes"] == 0
    assert report["flop_speedup"] > 1.0

    runs = []
    hook = pack.hook

    class Boom(RuntimeError):
        pass

    def failing_wrapper(executor, *args, **kwargs):
        runs.append(args[5][hook.RUN_KEY])
        out = executor(*args, **kwargs)
        if len(runs) == 4:
            raise Boom("interrupted")
        return out

    import comfy.patcher_extension
    failing = patched.clone()
    failing.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.APPLY_MODEL, "test-fail", failing_wrapper)
    with pytest.raises(Boom):
        sample(failing, steps=7)
    run = runs[0]
    assert run.cache_bytes == 0 and not run._priority and not run._cache
    assert hook.RUN_KEY not in failing.model_options["transformer_options"]


def test_stacking_two_sdtm_nodes_keeps_the_later(pack, models, caplog):
    model = models["sd3-medium"]
    fast = apply(pack, model, "fast")
    with caplog.at_level(logging.INFO, logger="SDTM"):
        stacked = apply(pack, fast, "reference")
    assert "replaces it" in caplog.text
    direct = apply(pack, model, "reference")
    assert torch.equal(sample(stacked, steps=6), sample(direct, steps=6))
    assert len(stacked.get_wrappers(comfy_wrappers().OUTER_SAMPLE, "sdtm")) == 1


def comfy_wrappers():
    import comfy.patcher_extension
    return comfy.patcher_extension.WrappersMP


def test_lora_weights_apply_under_sdtm(pack, models):
    import comfy.lora
    import comfy.sd
    model = models["sd3-medium"]
    keys = comfy.lora.model_lora_keys_unet(model.model, {})
    target = "diffusion_model.joint_blocks.1.x_block.mlp.fc1.weight"
    lora_key = next(k for k, v in keys.items() if v == target and k.startswith("lora_unet_"))
    out_f, in_f = model.get_model_object("diffusion_model").joint_blocks[1].x_block.mlp.fc1.weight.shape
    g = torch.Generator().manual_seed(0)
    lora = {f"{lora_key}.lora_up.weight": torch.randn(out_f, 4, generator=g),
            f"{lora_key}.lora_down.weight": torch.randn(4, in_f, generator=g)}
    lora_then_sdtm = apply(pack, comfy.sd.load_lora_for_models(model, None, lora, 1.0, 0)[0], "fast")
    sdtm_then_lora = comfy.sd.load_lora_for_models(apply(pack, model, "fast"), None, lora, 1.0, 0)[0]
    a, b = sample(lora_then_sdtm, steps=4), sample(sdtm_then_lora, steps=4)
    assert torch.equal(a, b)
    assert not torch.equal(a, sample(apply(pack, model, "fast"), steps=4))
    # the LoRA'd clone reports its runs through the patch it inherited
    assert sdtm_then_lora.model_options["transformer_options"]["sdtm"].latest().report["num_steps"] == 4


def test_non_mmdit_model_gets_a_clear_error(pack):
    import_comfy()
    import comfy.model_patcher
    import comfy.supported_models
    config = comfy.supported_models.SDXL({
        "model_channels": 32, "in_channels": 4, "out_channels": 4, "num_res_blocks": [1, 1], "channel_mult": [1, 2],
        "transformer_depth": [0, 1], "transformer_depth_output": [0, 0, 1, 1], "transformer_depth_middle": 1,
        "context_dim": 2048, "use_linear_in_transformer": True, "adm_in_channels": 2816,
        "use_temporal_attention": False, "use_spatial_transformer": True, "image_size": 32, "legacy": False})
    sdxl = comfy.model_patcher.ModelPatcher(config.get_model({}), torch.device("cpu"), torch.device("cpu"))
    with pytest.raises(pack.hook.UnsupportedModelError, match="SDTM supports SD3-medium.*UNetModel"):
        apply(pack, sdxl)
    with pytest.raises(pack.hook.UnsupportedModelError, match="UNetModel"):
        advanced(pack, sdxl)
    assert "sdtm" not in sdxl.model_options["transformer_options"]


def test_summary_reports_what_ran(pack, models, caplog):
    patched = advanced(pack, models["sd3-medium"])
    with caplog.at_level(logging.INFO, logger="SDTM"):
        sample(patched, latent_hw=(48, 48), steps=10)
    report = patched.model_options["transformer_options"]["sdtm"].latest().report
    phases = report["phases"]
    # progress on the sigma scale: step s of 10 (sgm_uniform) is at s/10, so switch 0.41 ends the
    # structure phase after step 4 (on the old s/(S-1) scale, after step 3)
    assert report["progress"] == pytest.approx([s / 10 for s in range(10)], abs=5e-3)
    assert phases["full"]["steps"] == [0, 3, 6, 9]
    assert phases["structure"]["steps"] == [1, 2, 4]
    assert phases["detail"]["steps"] == [5, 7, 8]
    assert phases["detail"]["attn_tokens"] == phases["detail"]["tokens"]
    assert phases["structure"]["attn_tokens"] < phases["structure"]["tokens"]
    assert report["flop_speedup"] > 1.0 and report["wall_seconds"] > 0
    assert "SDTM" in caplog.text and "FLOP-model speedup" in caplog.text and "cache" in caplog.text



def test_skip_layer_guidance_stacks_in_either_order(pack, models):
    nodes = import_comfy()
    slg = nodes.NODE_CLASS_MAPPINGS["SkipLayerGuidanceSD3"]
    model = models["sd3-medium"]
    sdtm = apply(pack, model, "fast")
    sdtm_then_slg = slg.execute(sdtm, "1", 3.0, 0.0, 1.0).args[0]
    slg_then_sdtm = apply(pack, slg.execute(model, "1", 3.0, 0.0, 1.0).args[0], "fast")
    a, b = sample(sdtm_then_slg, steps=4), sample(slg_then_sdtm, steps=4)
    assert torch.isfinite(a).all() and torch.equal(a, b)
    assert not torch.equal(a, sample(sdtm, steps=4))  # the guidance's extra calls took effect
    report = slg_then_sdtm.model_options["transformer_options"]["sdtm"].latest().report
    assert report["model_calls"] > 4  # the sampler's calls plus skip-layer guidance's own


def test_skip_layer_guidance_over_every_block_runs_its_calls_unmerged(pack, models, caplog):
    """Skip-layer guidance that skips every joint block (layers "0,1,2" of a 3-block model) bypasses SDTM in
    its extra calls: they run unmerged with one log line, in either order of the two nodes, and sampling
    goes on (it used to abort with "none of the joint blocks went through SDTM's block patch")."""
    nodes = import_comfy()
    slg = nodes.NODE_CLASS_MAPPINGS["SkipLayerGuidanceSD3"]
    model = models["sd3-medium"]
    layers = ",".join(str(i) for i in range(len(model.get_model_object("diffusion_model").joint_blocks)))
    sdtm_then_slg = slg.execute(apply(pack, model, "fast"), layers, 3.0, 0.0, 1.0).args[0]
    slg_then_sdtm = apply(pack, slg.execute(model, layers, 3.0, 0.0, 1.0).args[0], "fast")
    with caplog.at_level(logging.INFO, logger="SDTM"):
        a, b = sample(sdtm_then_slg, steps=4), sample(slg_then_sdtm, steps=4)
    assert torch.isfinite(a).all() and torch.equal(a, b)
    assert caplog.text.count("such calls run unmerged") == 2  # once per patched model
    report = slg_then_sdtm.model_options["transformer_options"]["sdtm"].latest().report
    assert report["bypassed_calls"] > 0 and report["flop_speedup"] > 1.0


def test_ratio_zero_is_off_on_both_nodes(pack, models):
    """Ratio 0 turns merging off whatever the deviation (SDTM Advanced keeps its default 0.2): bit-identical
    to the unpatched model, as on the SDTM node."""
    model = models["sd3-medium"]
    unpatched = sample(model, steps=4)
    assert torch.equal(sample(advanced(pack, model, ratio=0.0), steps=4), unpatched)
    assert torch.equal(sample(apply(pack, model, "fast", ratio=0.0), steps=4), unpatched)
