"""The error-reduction options of SDTM Advanced (issue 14, point 2) on the real ComfyUI: a tiny random SD3
model loaded by ComfyUI's own loader, sampled through its KSampler path, with ComfyUI's attention override
observing what each attention call really got."""
import pytest
import torch

from harness.comfy_env import load_pack
from harness.tiny_sd3 import sample, tiny_model

TEXT_TOKENS = 154  # tiny_sd3.conditioning() default
LATENT = (32, 32)  # a 16 x 16 token grid
STEPS = 6
BALANCED = dict(ratio=0.5, deviation=0.2, protect_steps_every=3)


@pytest.fixture(scope="module")
def pack():
    return load_pack()


@pytest.fixture(scope="module")
def model():
    return tiny_model("sd3-medium", seed=0)


def advanced(pack, model, **knobs):
    return pack.advanced.execute(model, **{**BALANCED, **knobs}).args[0]


def observed(patched):
    """Sample ``patched`` with an attention override that records (sequence length, mask) per call."""
    calls = []

    def attention(func, *args, **kwargs):
        calls.append((args[0].shape[1], kwargs.get("mask")))
        return func(*args, **kwargs)

    probe = patched.clone()
    probe.model_options["transformer_options"]["optimized_attention_override"] = attention
    return sample(probe, latent_hw=LATENT, steps=STEPS), calls


def test_proportional_attention_adds_log_group_sizes_to_merged_keys(pack, model):
    plain, plain_calls = observed(advanced(pack, model))
    sized, calls = observed(advanced(pack, model, proportional_attention=True))
    n = (LATENT[0] // 2) * (LATENT[1] // 2)
    shortened = [(seq, mask) for seq, mask in calls if seq < TEXT_TOKENS + n]
    assert shortened and len(shortened) == sum(seq < TEXT_TOKENS + n for seq, _ in plain_calls)
    for seq, mask in shortened:
        assert mask is not None and mask.shape == (2, 1, seq)  # one row, broadcast over heads and queries
        assert torch.equal(mask[..., :TEXT_TOKENS], torch.zeros_like(mask[..., :TEXT_TOKENS]))
        sizes = mask[..., TEXT_TOKENS:].float().exp()
        torch.testing.assert_close(sizes, sizes.round())  # log of whole group sizes
        torch.testing.assert_close(sizes.sum(-1), torch.full((2, 1), float(n)))  # the groups hold all N tokens
        assert (sizes > 1.5).any()
    assert all(mask is None for seq, mask in calls if seq == TEXT_TOKENS + n)  # full-length attention: no bias
    assert all(mask is None for _, mask in plain_calls)
    assert torch.isfinite(sized).all() and not torch.equal(sized, plain)


def test_full_structure_attention_keeps_every_attention_at_full_length(pack, model):
    merged, merged_calls = observed(advanced(pack, model))
    full, calls = observed(advanced(pack, model, structure_attention="full"))
    n = (LATENT[0] // 2) * (LATENT[1] // 2)
    assert any(seq < TEXT_TOKENS + n for seq, _ in merged_calls)
    assert {seq for seq, _ in calls} == {TEXT_TOKENS + n}
    assert torch.isfinite(full).all() and not torch.equal(full, merged)
    patched = advanced(pack, model, structure_attention="full")
    sample(patched, latent_hw=LATENT, steps=STEPS)
    info = patched.model_options["transformer_options"]["sdtm"]
    structure = info.latest().report["phases"]["structure"]
    assert structure["steps"] and structure["attn_tokens"] == structure["tokens"] > structure["mlp_tokens"]


def test_the_options_off_are_bit_identical_to_today(pack, model):
    base = sample(advanced(pack, model), latent_hw=LATENT, steps=STEPS)
    same = advanced(pack, model, proportional_attention=False, structure_attention="merged")
    assert torch.equal(sample(same, latent_hw=LATENT, steps=STEPS), base)
