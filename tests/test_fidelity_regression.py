"""Fidelity regression on the photo fixture (tests/fixtures/sdtm_photo_mmdit.safetensors, a small
SD3-architecture MMDiT trained on photographs, docs/FIXTURE.md): every preset of the SDTM node must keep
its image as close to the unmerged one as the committed benchmark found, so a change that wrecks fidelity
fails here.

Same model, prompts, sampler, size and metric as ``benchmarks/bench_fidelity.py`` (whose functions it
uses), at its first three seeds. The floor is read from the committed benchmark result
(docs/images/fixture_fidelity.json, written by ``python -m benchmarks.bench_fidelity``): each preset's mean
PSNR at these seeds there, less a margin, so rerunning the benchmark moves it too."""
import json
from pathlib import Path

import pytest
import torch

from benchmarks import bench_fidelity as bench
from photo_fixture import photo_codec
from photo_fixture.sample import sample_fixture

SEEDS = (0, 1, 2)
FIDELITY_JSON = Path(__file__).resolve().parents[1] / "docs" / "images" / "fixture_fidelity.json"
FIXTURE_RESULTS = "photo fixture (trained)"
# Thread count and library versions move PSNR by a few tenths of a dB; a wreck costs several dB.
MARGIN_DB = 2.0


def committed_psnr(family: str, preset: str) -> list[float]:
    """PSNR against unmerged at SEEDS of one case of the committed fidelity benchmark, which must have
    sampled the way this test does."""
    committed = json.loads(FIDELITY_JSON.read_text())
    setup = committed["setup"]
    assert (setup["steps"], setup["size_px"]) == (bench.STEPS, bench.SIZE_PX) and setup["seeds"] > max(SEEDS)
    (case,) = [c for c in committed["results"][FIXTURE_RESULTS] if (c["family"], c["preset"]) == (family, preset)]
    return [case["psnr"][seed] for seed in SEEDS]


def psnr_floor_db(preset: str) -> float:
    values = committed_psnr("sdtm", preset)
    return sum(values) / len(values) - MARGIN_DB


@pytest.fixture(scope="module")
def setup(photo_fixture_setup):
    return photo_fixture_setup


def test_the_floor_tells_the_default_preset_from_a_wreck(setup):
    """In the committed results, plain ToMe at the default preset's FLOP-model speedup and ToMe on the default
    preset's own schedule fall below the default preset's floor at these seeds: the floor would catch a
    change that merged as carelessly as either."""
    default = setup[0].presets.DEFAULT_PRESET
    floor = psnr_floor_db(default)
    for family, preset in (("tome-plain", default), ("tome-schedule", default)):
        values = committed_psnr(family, preset)
        assert sum(values) / len(values) < floor, (family, preset)


def test_fixture_is_an_sd3_model_to_comfyui(setup):
    import comfy.latent_formats
    import comfy.supported_models
    _, model, _ = setup
    assert type(model.model.model_config) is comfy.supported_models.SD3
    assert isinstance(model.model.latent_format, comfy.latent_formats.SD3)
    assert model.model.model_sampling.shift == comfy.supported_models.SD3.sampling_settings["shift"]
    metadata = photo_codec.fixture_metadata()
    # The fixture learned its prompts as this text encoder encodes them: a changed random CLIP-L
    # (harness.tiny_sd3.clip_l_state_dict) would silently turn its prompts into noise.
    assert metadata["clip_l_sha256"] == photo_codec.fixture_clip_digest()


def preset_names() -> list[str]:
    from harness.comfy_env import load_pack
    return list(load_pack().presets.PRESETS)


@pytest.mark.parametrize("preset", preset_names())
def test_every_preset_keeps_fidelity_on_the_photo_fixture(setup, preset):
    from harness.image_metrics import psnr
    pack, model, clip = setup
    latent_hw = (bench.SIZE_PX // photo_codec.PIXELS_PER_LATENT,) * 2
    negative = photo_codec.prompt_conditioning(clip, photo_codec.UNCONDITIONAL_PROMPT)
    tokens = (latent_hw[0] // 2, latent_hw[1] // 2)
    # the benchmark's equal-FLOP ToMe rows aim at the speedup the preset's runs get (their sigma-scale progress)
    (target,) = [case.target_speedup for case in bench.build_cases(pack, bench.fixture_shape(pack, model, clip), tokens,
                                                                   bench.run_progress(pack, model, bench.STEPS))
                 if (case.family, case.preset) == ("sdtm", preset)]
    values = []
    for seed in SEEDS:
        positive = photo_codec.prompt_conditioning(clip, photo_codec.PHOTOS[seed % len(photo_codec.PHOTOS)].caption)
        reference = photo_codec.decode(sample_fixture(model, seed, positive, negative, bench.STEPS, latent_hw))
        patched = pack.apply.execute(model, preset, -1.0, 0.0, 1.0, -1.0).args[0]
        merged = photo_codec.decode(sample_fixture(patched, seed, positive, negative, bench.STEPS, latent_hw))
        report = patched.model_options["transformer_options"][pack.hook.KEY].latest().report
        expected = pack.ops.schedule_cost(bench.fixture_shape(pack, model, clip), tokens,
                                          pack.presets.preset_config(preset), bench.STEPS,
                                          progress=report["progress"]).speedup
        assert report["flop_speedup"] == pytest.approx(expected), "the preset did not merge as its schedule says"
        assert report["flop_speedup"] == pytest.approx(target), "the benchmark matches ToMe to another schedule"
        assert not torch.equal(merged, reference)
        values.append(float(psnr(merged, reference)[0]))
    mean, floor = sum(values) / len(values), psnr_floor_db(preset)
    assert mean >= floor, (f"{preset} preset: mean PSNR {mean:.2f} dB (seeds {SEEDS}: "
                           f"{', '.join(f'{v:.2f}' for v in values)}) < floor {floor:.2f} dB "
                           f"(committed mean less {MARGIN_DB} dB, {FIDELITY_JSON.name})")


def test_photo_codec_is_invertible_and_checks_its_input():
    pixels = torch.rand(2, 3, 10, 14, generator=torch.Generator().manual_seed(0))
    latent = photo_codec.encode(pixels)
    assert latent.shape == (2, photo_codec.LATENT_CHANNELS, 5, 7)
    assert torch.allclose(photo_codec.decode(latent), pixels, atol=1e-6)
    assert photo_codec.decode_to_comfy_image(latent).shape == (2, 10, 14, 3)
    per_pixel = photo_codec.EMPTY_LATENT_PER_PIXEL
    assert photo_codec.empty_latent_size(14, 10) == (14 * per_pixel, 10 * per_pixel)
    with pytest.raises(ValueError, match="pixels must be RGB"):
        photo_codec.encode(torch.rand(1, 4, 8, 8))
    with pytest.raises(ValueError, match="height and width must be even"):
        photo_codec.encode(torch.rand(1, 3, 7, 8))
    with pytest.raises(ValueError, match="latent must be shaped"):
        photo_codec.decode(torch.rand(1, 4, 8, 8))
    with pytest.raises(ValueError, match="width_px must be a positive even"):
        photo_codec.empty_latent_size(9, 8)
