"""The fixture trainer resumes from its checkpoint: an interrupted run continued with ``--resume``
writes the same weights and loss log as an uninterrupted one (a run of 6 steps of the deep
fixture's architecture: 8 joint blocks of width 128)."""
import pytest
import torch

from harness.comfy_env import import_comfy
from photo_fixture import train_fixture


def test_resume_gives_the_uninterrupted_result(tmp_path):
    import_comfy()
    config = train_fixture.TrainConfig(steps=6, depth=train_fixture.DEEP_DEPTH, blocks=train_fixture.DEEP_BLOCKS,
                                       val_every=2, warmup=2)
    whole, whole_rows = train_fixture.train(config, tmp_path / "whole" / "loss.csv")
    log = tmp_path / "parts" / "loss.csv"
    stopped, _ = train_fixture.train(config, log, checkpoint_every=3, stop_after=4)
    assert stopped is None
    assert train_fixture.checkpoint_path(log).is_file()
    resumed, resumed_rows = train_fixture.train(config, log, checkpoint_every=3, resume=True)
    assert sorted(resumed) == sorted(whole)
    assert any(k.startswith(f"joint_blocks.{train_fixture.DEEP_BLOCKS - 1}.") for k in whole)
    assert [k for k in whole if not torch.equal(whole[k], resumed[k])] == []
    assert [float(r["loss"]) for r in resumed_rows] == [float(r["loss"]) for r in whole_rows]
    assert not train_fixture.checkpoint_path(log).exists()  # removed once the run is complete
    other = train_fixture.TrainConfig(steps=6, depth=train_fixture.DEEP_DEPTH, blocks=train_fixture.DEEP_BLOCKS,
                                      val_every=2, warmup=2, lr=5e-4)
    train_fixture.train(config, log, checkpoint_every=3, stop_after=3)
    with pytest.raises(ValueError, match="another training config"):
        train_fixture.train(other, log, checkpoint_every=3, resume=True)


def test_the_deep_fixture_loads_with_its_eight_blocks_and_samples():
    """The committed deep fixture comes through ComfyUI's detection with MMDiT's num_blocks (UNETLoader
    alone would build 2 blocks of width 128 and drop the rest): 8 joint blocks, every weight loaded,
    and a finite sample through the KSampler path."""
    from photo_fixture import photo_codec
    from photo_fixture.sample import sample_fixture
    import_comfy()
    config = photo_codec.fixture_metadata(photo_codec.DEEP_FIXTURE)["config"]
    assert (config["depth"], config["blocks"]) == (train_fixture.DEEP_DEPTH, train_fixture.DEEP_BLOCKS)
    model, clip = photo_codec.load_fixture(photo_codec.DEEP_FIXTURE)
    diffusion = model.model.diffusion_model
    assert len(diffusion.joint_blocks) == train_fixture.DEEP_BLOCKS
    assert diffusion.hidden_size == 64 * train_fixture.DEEP_DEPTH
    from safetensors.torch import load_file
    stored = load_file(str(photo_codec.DEEP_FIXTURE))
    loaded = diffusion.state_dict()
    assert sorted(stored) == sorted(k for k in loaded if k in stored) and len(stored) == len(loaded)
    assert all(torch.equal(stored[k].float(), loaded[k].float()) for k in stored)
    positive = photo_codec.prompt_conditioning(clip, photo_codec.PHOTOS[0].caption)
    negative = photo_codec.prompt_conditioning(clip, photo_codec.UNCONDITIONAL_PROMPT)
    latent = sample_fixture(model, 0, positive, negative, 2, (16, 16))
    assert latent.shape == (1, photo_codec.LATENT_CHANNELS, 16, 16) and torch.isfinite(latent).all()
