"""The error-reduction options of SDTM Advanced (issue 14, point 2) in sdtm_ops, on CPU: proportional
attention and full attention in the structure phase. (A third idea, deviation unmerge, was measured and
dropped: docs/BENCHMARKS.md.)"""
import pytest
import torch
from test_engine_partition import _partitions
from test_engine_schedule import _NoHostSync

from sdtm_ops import (
    MODEL_SHAPES,
    Phase,
    SDTMConfig,
    StepPlan,
    block_merge,
    merge_tokens,
    proportional_bias,
    schedule_cost,
    token_grid,
    unmerge_tokens,
)


def _parts(x, h, w, ratio=0.5, seed=0):
    """The window, detail and ToMe partitions of x (test_engine_partition's, without their group counts)."""
    return {kind: part for kind, (part, _) in _partitions(x, h, w, ratio, seed).items()}


def _x(batch, n, c=8, seed=0):
    return torch.randn(batch, n, c, generator=torch.Generator().manual_seed(seed))


def test_proportional_bias_is_zero_on_text_and_log_size_on_groups():
    x = _x(2, 16 * 16)
    for part in _parts(x, 16, 16).values():
        bias = proportional_bias(part, 7, torch.float16)
        assert bias.shape == (2, 1, 7 + part.num_groups) and bias.dtype == torch.float16
        assert torch.equal(bias[..., :7], torch.zeros(2, 1, 7, dtype=torch.float16))
        torch.testing.assert_close(bias[:, 0, 7:].float(), part.sizes.float().log(), atol=1e-3, rtol=1e-3)
        assert torch.equal(proportional_bias(part, 0, torch.float32), part.sizes.float().log().unsqueeze(1))
        assert (bias[:, 0, 7:part.num_singletons + 7] == 0).all()


def test_proportional_attention_equals_full_attention_over_identical_members():
    """A group whose members carry identical keys and values, merged to one key with log(size) added, draws
    exactly the attention its members drew: the output equals attention over the unmerged tokens."""
    torch.manual_seed(0)
    B, H, D, T = 2, 2, 8, 5
    tokens = torch.randn(B, 8 * 8, H * D)
    for part in _parts(tokens, 8, 8).values():
        grouped = unmerge_tokens(merge_tokens(tokens, part), part)  # members identical within a group
        k_img, v_img = grouped * 0.7, grouped * 1.3
        k_txt, v_txt = torch.randn(B, T, H * D), torch.randn(B, T, H * D)
        q = torch.randn(B, T + 64, H * D)

        def attend(k, v, mask=None):
            split = lambda t: t.view(B, -1, H, D).transpose(1, 2)  # noqa: E731
            mask = None if mask is None else mask.unsqueeze(1)  # [B, 1, 1, M], as ComfyUI's attention does
            out = torch.nn.functional.scaled_dot_product_attention(split(q), split(k), split(v), attn_mask=mask)
            return out.transpose(1, 2).reshape(B, -1, H * D)

        full = attend(torch.cat((k_txt, k_img), 1), torch.cat((v_txt, v_img), 1))
        k_m, v_m = merge_tokens(k_img, part), merge_tokens(v_img, part)
        sized = attend(torch.cat((k_txt, k_m), 1), torch.cat((v_txt, v_m), 1), proportional_bias(part, T, q.dtype))
        plain = attend(torch.cat((k_txt, k_m), 1), torch.cat((v_txt, v_m), 1))
        torch.testing.assert_close(sized, full, atol=1e-5, rtol=1e-5)
        assert (plain - full).abs().max() > 1e-3  # without the bias merged keys draw too little attention


def test_full_structure_attention_keeps_attention_and_merges_the_mlp():
    plan = StepPlan(1, 30, 0.1, Phase.STRUCTURE, 0.5, False)
    merged = block_merge(SDTMConfig(), plan, 64, 64)
    full = block_merge(SDTMConfig(structure_attention="full"), plan, 64, 64)
    assert merged.kind == full.kind == "window" and merged.count == full.count > 0
    assert (full.attn_tokens, full.mlp_tokens) == (64 * 64, merged.mlp_tokens) and merged.attn_tokens < 4096
    detail = StepPlan(20, 30, 0.7, Phase.DETAIL, 0.5, False)
    assert block_merge(SDTMConfig(structure_attention="full"), detail, 64, 64) == block_merge(SDTMConfig(), detail,
                                                                                              64, 64)
    shape, grid = MODEL_SHAPES["sd3-medium"], token_grid(1024, 1024)
    assert 1.0 < schedule_cost(shape, grid, SDTMConfig(structure_attention="full"), 30).speedup \
        < schedule_cost(shape, grid, SDTMConfig(), 30).speedup


def test_an_unknown_structure_attention_is_refused_by_name():
    with pytest.raises(ValueError, match="structure_attention must be one of merged, full"):
        SDTMConfig(structure_attention="half")


def test_the_options_never_sync_with_the_host():
    x = _x(2, 33 * 47, 16)
    with _NoHostSync():
        for part in _parts(x, 33, 47).values():
            proportional_bias(part, 77, torch.float16)
