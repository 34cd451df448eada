"""SDTM Merge Map and the run statistics, on the real ComfyUI with a tiny model."""
import numpy as np
import pytest
import torch

from block_probe import BlockProbe
from harness.comfy_env import import_comfy, load_pack
from harness.tiny_sd3 import sample, tiny_model

STEPS, LATENT = 10, (32, 48)  # 16 x 24 image tokens
H, W = LATENT[0] // 2, LATENT[1] // 2


@pytest.fixture(scope="module")
def run():
    pack = load_pack()
    nodes = import_comfy()
    model = tiny_model("sd3.5-medium", seed=4)
    patched = pack.advanced.execute(model, ratio=0.4, protect_steps_every=4, round_to=8).args[0]
    patched.model_options["transformer_options"]["sdtm"].record_maps = True  # in-process: no prompt to read
    with BlockProbe(patched, 154) as probe:
        sample(probe.model, latent_hw=LATENT, steps=STEPS, cfg=3.0)
    info = patched.model_options["transformer_options"]["sdtm"]
    return {"pack": pack, "node": nodes.NODE_CLASS_MAPPINGS["SDTM_MergeMap"], "patched": patched, "probe": probe,
            "info": info, "model": model}


def test_recorded_partitions_are_what_the_blocks_ran(run):
    groups = run["info"].latest().maps["groups"]
    assert run["info"].latest().maps["grid"] == (H, W)
    seen = {(c.step, c.block): c for c in run["probe"].calls}
    merged_steps = set()
    for (step, block), g in groups.items():
        call = seen[(step, block)]
        n_groups = int(g.max()) + 1
        attn, mlp = call.attn_seq[0] - 154, call.mlp_tokens
        assert mlp == n_groups  # the MLP saw one token per group
        assert attn in (n_groups, H * W)  # structure: shortened like the MLP; detail: full length
        merged_steps.add(step)
    # every step whose blocks saw fewer tokens has a recorded partition, and no other
    shortened = {c.step for c in run["probe"].calls if c.mlp_tokens < H * W}
    assert merged_steps == shortened and merged_steps


def test_merge_map_tints_exactly_the_merged_tokens(run):
    groups = run["info"].latest().maps["groups"]
    block = 1
    steps = sorted({s for s, b in groups if b == block})
    chosen = [steps[0], steps[-1]]  # a structure step and a detail step
    base = torch.full((1, 8 * LATENT[0], 8 * LATENT[1], 3), 0.5)
    picture = run["node"].execute(run["patched"], block, ",".join(map(str, chosen)), 1.0, image=base).args[0]
    assert picture.dtype == torch.float32 and picture.dim() == 4 and picture.shape[0] == 1 and picture.shape[-1] == 3
    assert 0.0 <= float(picture.min()) and float(picture.max()) <= 1.0
    pixels = (picture[0].numpy() * 255).round().astype(np.uint8)
    cell, title = 16, 14
    panel_w = 8 * LATENT[1]
    for i, step in enumerate(chosen):
        g = groups[(step, block)]
        merged = (torch.bincount(g)[g] > 1).reshape(H, W).numpy()
        assert merged.any() and not merged.all()
        for r in range(H):
            for c in range(W):
                px = pixels[title + r * cell + cell // 2, i * panel_w + c * cell + cell // 2]
                assert (tuple(px) != (128, 128, 128)) == merged[r, c], (step, r, c)
        # tokens of one group share one colour
        flat = g.reshape(H, W).numpy()
        for gid in np.unique(flat[merged])[:10]:
            rr, cc = np.nonzero(flat == gid)
            colours = {tuple(pixels[title + r * cell + cell // 2, i * panel_w + c * cell + cell // 2])
                       for r, c in zip(rr, cc)}
            assert len(colours) == 1


def test_merge_map_without_image_and_bad_inputs(run):
    node, patched = run["node"], run["patched"]
    picture = node.execute(patched, -1, "auto", 0.55).args[0]
    assert picture.shape[-1] == 3 and picture.shape[2] >= W * 16
    with pytest.raises(ValueError, match="steps must be 'auto' or comma separated"):
        node.execute(patched, -1, "one, two", 0.5)
    with pytest.raises(ValueError, match="outside the run's 0..9"):
        node.execute(patched, -1, "3,25", 0.5)
    with pytest.raises(ValueError, match="block 7 merged no tokens"):
        node.execute(patched, 7, "auto", 0.5)
    fresh = run["pack"].apply.execute(run["model"], "fast", -1.0, 0.0, 1.0, -1.0).args[0]
    with pytest.raises(ValueError, match="has not been sampled yet"):
        node.execute(fresh, -1, "auto", 0.5)
    with pytest.raises(ValueError, match="carries no SDTM patch"):
        node.execute(run["model"], -1, "auto", 0.5)


def test_statistics_agree_with_the_blocks_and_the_flop_model(run):
    ops = run["pack"].ops
    report = run["info"].latest().report
    per_step = {s["step"]: s for s in report["steps"]}
    assert sorted(per_step) == list(range(STEPS))
    observed = {}
    for c in run["probe"].calls:
        o = observed.setdefault(c.step, [0, 0, 0])
        o[0] += c.batch * (c.attn_seq[0] - 154)
        o[1] += c.batch * c.mlp_tokens
        o[2] += c.batch * H * W
    for step, (attn, mlp, total) in observed.items():
        s = per_step[step]
        assert (s["attn_tokens"], s["mlp_tokens"], s["tokens"]) == (attn, mlp, total), step
    config = ops.SDTMConfig(**report["config"])
    diffusion = run["model"].get_model_object("diffusion_model")
    shape = ops.MMDiTShape("tiny", len(diffusion.joint_blocks), diffusion.hidden_size,
                           dual_attention_blocks=tuple(diffusion.x_block_self_attn_layers))
    expected = ops.schedule_cost(shape, (H, W), config, STEPS, progress=report["progress"]).speedup
    assert report["flop_speedup"] == pytest.approx(expected, rel=1e-6)


def test_the_merge_map_picture_command_saves_a_small_palette_picture_of_a_real_run(tmp_path):
    """commands.merge_map_picture (the README's and the docs page's picture) samples the photo fixture through
    ComfyUI and draws the node's map of that run; --colors saves it with a palette (small enough for the
    Registry archive), and a palette outside 2-256 colours is refused."""
    from PIL import Image

    from commands import merge_map_picture
    out = merge_map_picture.main(["--steps", "4", "--size", "32", "--scale", "1", "--colors", "32",
                                  "--out", str(tmp_path / "map.png")])
    picture = Image.open(out)
    assert picture.mode == "P" and picture.width >= 288
    assert 8 < len(picture.getcolors()) <= 32  # merged groups tinted in their own colours, within the palette
    with pytest.raises(SystemExit):
        merge_map_picture.main(["--colors", "300", "--out", str(tmp_path / "x.png")])
