"""FLOP model of an MMDiT under an SDTM schedule.

Counts the matrix multiplications of the joint blocks (linear layers and attention; norms,
activations and the merge itself are not counted), so it states what merging can save at most.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from .config import SDTMConfig
from .schedule import Phase, block_is_merged, block_merge, step_plan

__all__ = ["MMDiTShape", "MODEL_SHAPES", "token_grid", "block_flops", "StepCost", "ScheduleCost",
           "schedule_cost"]


@dataclass(frozen=True)
class MMDiTShape:
    """The sizes of an SD3-family MMDiT that decide its cost, and the two structural settings a model
    of that family is built with (benchmarks build random-weight models from this table)."""

    name: str
    depth: int  # number of joint blocks
    hidden: int  # 64 * depth in SD3 models
    text_tokens: int = 154  # 77 CLIP + 77 T5 tokens
    mlp_ratio: float = 4.0
    dual_attention_blocks: tuple[int, ...] = ()  # blocks with a second image-only attention (MMDiT-X)
    patch: int = 2
    qk_norm: str | None = None  # "rms" in SD3.5 models
    pos_embed_max_size: int = 192  # side of the learned position table, in tokens


MODEL_SHAPES = {
    "sd3-medium": MMDiTShape("sd3-medium", 24, 1536),
    "sd3.5-medium": MMDiTShape("sd3.5-medium", 24, 1536, dual_attention_blocks=tuple(range(13)), qk_norm="rms",
                                pos_embed_max_size=384),
    "sd3.5-large": MMDiTShape("sd3.5-large", 38, 2432, qk_norm="rms"),
}


def token_grid(height: int, width: int, patch: int = 2, vae_scale: int = 8) -> tuple[int, int]:
    """Image-token grid (h, w) for an image of height x width pixels: the latent is
    (height // 8, width // 8), padded to the patch size."""
    lat_h, lat_w = height // vae_scale, width // vae_scale
    return -(-lat_h // patch), -(-lat_w // patch)


def block_flops(shape: MMDiTShape, attn_tokens: int, mlp_tokens: int, text_tokens: int,
                last: bool, dual: bool) -> float:
    """FLOPs of one joint block for one sample (2 per multiply-add), given the image tokens the
    attention and the MLP see (the residual stream stays full length and costs nothing here)."""
    c, m = shape.hidden, text_tokens
    mlp = 2.0 * 2.0 * shape.mlp_ratio * c * c  # fc1 + fc2 per token
    qkv, proj = 2.0 * 3 * c * c, 2.0 * c * c
    seq = attn_tokens + m
    flops = attn_tokens * (qkv + proj) + mlp_tokens * mlp  # image side
    flops += 2.0 * 2.0 * seq * seq * c  # joint attention: QK^T and AV
    flops += m * qkv if last else m * (qkv + proj + mlp)  # text side; the last block keeps only qkv
    if dual:
        flops += attn_tokens * (qkv + proj) + 2.0 * 2.0 * attn_tokens * attn_tokens * c
    return flops


@dataclass(frozen=True)
class StepCost:
    step: int
    phase: Phase
    ratio: float
    attn_tokens: int  # per merging block
    mlp_tokens: int
    flops: float  # whole model, one sample
    flops_full: float


@dataclass(frozen=True)
class ScheduleCost:
    shape: MMDiTShape
    grid: tuple[int, int]
    steps: list[StepCost] = field(default_factory=list)

    @property
    def flops(self) -> float:
        return sum(s.flops for s in self.steps)

    @property
    def flops_full(self) -> float:
        return sum(s.flops_full for s in self.steps)

    @property
    def speedup(self) -> float:
        return self.flops_full / self.flops


def schedule_cost(shape: MMDiTShape, grid: tuple[int, int], config: SDTMConfig, num_steps: int,
                  text_tokens: int | None = None, progress: list[float] | None = None) -> ScheduleCost:
    """Per step: the image tokens a merging block's attention and MLP see, and the transformer
    FLOPs (one sample, one model call) against the same step unmerged. ``progress``: each step's
    progress as a run measured it on its sigma scale (default step / (num_steps - 1))."""
    h, w = grid
    n = h * w
    m = shape.text_tokens if text_tokens is None else text_tokens
    steps = []
    for s in range(num_steps):
        plan = step_plan(config, s, num_steps, None if progress is None else progress[s])
        bm = block_merge(config, plan, h, w)
        total = full = 0.0
        for b in range(shape.depth):
            last, dual = b == shape.depth - 1, b in shape.dual_attention_blocks
            f_full = block_flops(shape, n, n, m, last, dual)
            full += f_full
            total += block_flops(shape, bm.attn_tokens, bm.mlp_tokens, m, last, dual) \
                if block_is_merged(config, b, shape.depth) else f_full
        steps.append(StepCost(s, plan.phase, plan.ratio, bm.attn_tokens, bm.mlp_tokens, total, full))
    return ScheduleCost(shape, grid, steps)
