"""The fixture trainer resumes from its checkpoint: an interrupted run continued with ``--resume``
writes the same weights and loss log as an uninterrupted one (a run of 6 steps of the deep
fixture's architecture: 8 joint blocks of width 128)."""
import pytest
import torch

from photo_fixture import train_fixture
from harness.comfy_env import import_comfy


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
