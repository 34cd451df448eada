"""SDTM (Structure-then-Detail Token Merging) for MMDiT image tokens, in plain PyTorch.

Nothing in this package imports ComfyUI: other front ends can use it as it is.
"""
from .config import MERGE_MODES, METHODS, SDTMConfig
from .cost import MODEL_SHAPES, MMDiTShape, ScheduleCost, StepCost, block_flops, schedule_cost, token_grid
from .merge import blend_with_cache, cached_share, merge_tokens, proportional_bias, unmerge_tokens
from .partition import (
    Partition,
    WindowGrid,
    detail_merge_count,
    detail_partition,
    structure_merge_count,
    tome_partition,
    window_grid,
    window_partition,
)
from .schedule import (
    BlockMerge,
    Phase,
    StepPlan,
    block_is_merged,
    block_merge,
    percent_of_sigma,
    progress_at,
    ratio_at,
    reference_config,
    step_plan,
    steps_after,
    steps_before,
)
from .state import RunCarry, RunState, RunStats, StepStats, layout_key, tensor_bytes

__all__ = [
    "SDTMConfig", "METHODS", "MERGE_MODES",
    "Partition", "WindowGrid", "window_grid", "window_partition", "detail_partition", "tome_partition",
    "structure_merge_count", "detail_merge_count",
    "merge_tokens", "unmerge_tokens", "blend_with_cache", "cached_share", "proportional_bias",
    "Phase", "StepPlan", "BlockMerge", "progress_at", "percent_of_sigma", "steps_before", "steps_after", "ratio_at",
    "step_plan",
    "block_is_merged",
    "block_merge", "reference_config",
    "RunCarry", "RunState", "RunStats", "StepStats", "layout_key", "tensor_bytes",
    "MMDiTShape", "MODEL_SHAPES", "token_grid", "block_flops", "StepCost", "ScheduleCost", "schedule_cost",
]
