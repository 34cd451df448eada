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


def test_a_wider_position_table_has_the_narrow_one_at_its_centre():
    """The 64 x 64 table keeps the 32 x 32 table's spacing and centre: ComfyUI's centre crop of it for a
    32 x 32 token grid is the 32 x 32 table (up to float rounding), and it reaches further out."""
    import_comfy()
    hidden = 64 * train_fixture.DEEP_DEPTH
    narrow = train_fixture.position_table(hidden, train_fixture.POS_EMBED_MAX).view(32, 32, hidden)
    wide = train_fixture.position_table(hidden, train_fixture.DENSE_POS_EMBED_MAX).view(64, 64, hidden)
    assert (wide[16:48, 16:48] - narrow).abs().max() < 1e-5
    assert (wide[:32, :32] - narrow).abs().max() > 0.1  # the corners are new positions, not the narrow table


def test_init_from_the_deep_fixture_samples_at_32x32_tokens_as_the_deep_fixture_does(tmp_path):
    """A 64 x 64-table model started from the deep fixture (before any training) gives, through
    ComfyUI's detection and KSampler, the deep fixture's latent at 32 x 32 tokens bit for bit."""
    from photo_fixture import photo_codec
    from photo_fixture.sample import sample_fixture
    import_comfy()
    config = train_fixture.TrainConfig(depth=train_fixture.DEEP_DEPTH, blocks=train_fixture.DEEP_BLOCKS,
                                       pos_embed_max=train_fixture.DENSE_POS_EMBED_MAX)
    model = train_fixture.build_model(torch.Generator().manual_seed(0), config.depth, config.blocks,
                                      config.pos_embed_max)
    model.load_state_dict(train_fixture.initial_weights(photo_codec.DEEP_FIXTURE, model))
    extended = tmp_path / "extended.safetensors"
    train_fixture.save_fixture(train_fixture.fixture_state_dict(model), extended, config, 0.0, 0.0)
    latents = []
    for fixture in (photo_codec.DEEP_FIXTURE, extended):
        unet, clip = photo_codec.load_fixture(fixture)
        assert unet.model.diffusion_model.pos_embed_max_size == (32 if fixture != extended else 64)
        positive = photo_codec.prompt_conditioning(clip, photo_codec.PHOTOS[1].caption)
        negative = photo_codec.prompt_conditioning(clip, photo_codec.UNCONDITIONAL_PROMPT)
        latents.append(sample_fixture(unet, 0, positive, negative, 2, (64, 64)))
    assert torch.equal(latents[0], latents[1])


def test_init_from_refuses_another_architecture(tmp_path):
    import_comfy()
    from photo_fixture import photo_codec
    model = train_fixture.build_model(torch.Generator().manual_seed(0), train_fixture.DEPTH, train_fixture.DEPTH)
    with pytest.raises(ValueError, match="do not match the model|another depth"):
        train_fixture.initial_weights(photo_codec.DEEP_FIXTURE, model)
    wide = train_fixture.build_model(torch.Generator().manual_seed(0), train_fixture.DEEP_DEPTH,
                                     train_fixture.DEEP_BLOCKS, 33)
    with pytest.raises(ValueError, match="wider by an even number"):
        train_fixture.initial_weights(photo_codec.DEEP_FIXTURE, wide)


def test_a_fine_tuning_run_resumes_bit_identically(tmp_path):
    """From the deep fixture with a 64 x 64 table (the dense fixture's recipe at small crops): an
    interrupted run resumed from its checkpoint ends with the uninterrupted run's weights and losses."""
    from photo_fixture import photo_codec
    import_comfy()
    config = train_fixture.TrainConfig(steps=4, depth=train_fixture.DEEP_DEPTH, blocks=train_fixture.DEEP_BLOCKS,
                                       pos_embed_max=train_fixture.DENSE_POS_EMBED_MAX, crops=((64, 2), (32, 2)),
                                       val_every=2, warmup=1,
                                       init_from=photo_codec.file_digest(photo_codec.DEEP_FIXTURE))
    whole, whole_rows = train_fixture.train(config, tmp_path / "whole.csv", init_from=photo_codec.DEEP_FIXTURE)
    log = tmp_path / "parts.csv"
    train_fixture.train(config, log, checkpoint_every=2, stop_after=2, init_from=photo_codec.DEEP_FIXTURE)
    resumed, resumed_rows = train_fixture.train(config, log, checkpoint_every=2, resume=True,
                                                init_from=photo_codec.DEEP_FIXTURE)
    assert [k for k in whole if not torch.equal(whole[k], resumed[k])] == []
    assert [float(r["loss"]) for r in resumed_rows] == [float(r["loss"]) for r in whole_rows]
    with pytest.raises(ValueError, match="sha256"):
        train_fixture.train(config, tmp_path / "other.csv", init_from=photo_codec.FIXTURE)


def test_crops_option_is_checked():
    assert train_fixture.parse_crops("256x2,128x4") == ((256, 2), (128, 4))
    for bad in ("256", "250x2", "256x0", "x2"):
        with pytest.raises(ValueError, match="PIXELSxBATCH"):
            train_fixture.parse_crops(bad)


def test_the_dense_fixture_loads_and_samples_at_64x64_tokens_with_sdtm():
    """The committed dense fixture (the deep fixture fine-tuned at SD3's 1024x1024 token density) comes through
    ComfyUI's detection with its 8 blocks and 64 x 64 position table, and samples at 64 x 64 image tokens
    (256 pixels) through the KSampler path, unpatched and with SDTM's default preset."""
    from harness.comfy_env import load_pack
    from photo_fixture import photo_codec
    from photo_fixture.sample import sample_fixture
    import_comfy()
    model, clip = photo_codec.load_fixture(photo_codec.DENSE_FIXTURE)
    diffusion = model.model.diffusion_model
    assert len(diffusion.joint_blocks) == train_fixture.DEEP_BLOCKS
    assert diffusion.pos_embed.shape[1] == train_fixture.DENSE_POS_EMBED_MAX ** 2
    positive = photo_codec.prompt_conditioning(clip, photo_codec.PHOTOS[1].caption)
    negative = photo_codec.prompt_conditioning(clip, photo_codec.UNCONDITIONAL_PROMPT)
    plain = sample_fixture(model, 0, positive, negative, 2, (128, 128))
    pack = load_pack()
    patched = pack.apply.execute(model, "balanced", -1.0, 0.0, 1.0, -1.0).args[0]
    merged = sample_fixture(patched, 0, positive, negative, 2, (128, 128))
    assert plain.shape == merged.shape == (1, photo_codec.LATENT_CHANNELS, 128, 128)
    assert torch.isfinite(plain).all() and torch.isfinite(merged).all()
    report = patched.model_options["transformer_options"][pack.hook.KEY].run_of(merged).report
    assert report["latent_shape"] == [1, 16, 128, 128] and report["flop_speedup"] > 1.0


def test_the_dense_fixture_denoises_64x64_token_crops_better_than_where_it_started():
    """Held-out 256-pixel crops (photo_fixture.density_check's, two of them): the dense fixture's loss is below
    the deep fixture's with only its position table widened (what the fine-tuning started from)."""
    from safetensors.torch import load_file

    from photo_fixture import density_check, photo_codec
    import_comfy()
    context, pooled = train_fixture.text_conditioning([p.caption for p in photo_codec.PHOTOS])
    batch = [t[::14] for t in density_check.held_out_set(256, context, pooled)]  # photos 0 and 3, 2 crops
    dense = density_check.dense_model({k: v.float() for k, v in load_file(str(photo_codec.DENSE_FIXTURE)).items()})
    start = density_check.dense_model(train_fixture.initial_weights(photo_codec.DEEP_FIXTURE, train_fixture.build_model(
        torch.Generator().manual_seed(0), train_fixture.DEEP_DEPTH, train_fixture.DEEP_BLOCKS,
        train_fixture.DENSE_POS_EMBED_MAX)))
    assert density_check.held_out_loss(dense, batch) < density_check.held_out_loss(start, batch)
