"""When to merge and how much: the ratio schedule, the phases, protected steps and blocks.

A step's phase and ratio are functions of its progress p in [0, 1]; protected steps of its step index.
In a sampling run, p is read on the model's sigma scale (:func:`percent_of_sigma`, the inverse of the
host's ``percent_to_sigma``, as its own start/end percents are), so a run split over several samplers
gets the plan of the single run. Without sigmas (the FLOP model) p = s / (S - 1). The token counts each
block uses come from :func:`block_merge`, which the hook, the FLOP model and the statistics all call.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum

from .config import SDTMConfig
from .knobs import RELEASE_SWITCH_STEPS
from .partition import detail_merge_count, structure_merge_count

__all__ = ["Phase", "StepPlan", "BlockMerge", "ratio_at", "progress_at", "percent_of_sigma", "steps_before",
           "steps_after", "step_plan", "structure_until", "block_is_merged", "block_merge", "reference_config"]


class Phase(str, Enum):
    FULL = "full"  # every block at full length (outside [start, end], or a protected step)
    STRUCTURE = "structure"  # window merging, attention and MLP shortened
    DETAIL = "detail"  # bipartite merging, attention at full length, MLP shortened


@dataclass(frozen=True)
class StepPlan:
    step: int
    num_steps: int
    progress: float
    phase: Phase
    ratio: float
    protected: bool  # a full step that refreshes the blending cache


@dataclass(frozen=True)
class BlockMerge:
    """What one block does: ``kind`` "none", "window" (collapse ``count`` windows) or "bipartite"
    (merge ``count`` src tokens); image tokens seen by attention and by the MLP."""

    kind: str
    count: int
    attn_tokens: int
    mlp_tokens: int


def progress_at(step: int, num_steps: int) -> float:
    """Progress of step ``step`` (0-based) of ``num_steps``: step / (num_steps - 1), 0 for one step."""
    if num_steps < 1 or not 0 <= step < num_steps:
        raise ValueError(f"step must be in [0, {num_steps - 1}], got {step}")
    return step / (num_steps - 1) if num_steps > 1 else 0.0


def ratio_at(config: SDTMConfig, progress: float) -> float:
    """The reference's cosine schedule: ratio + deviation at progress 0 falling to
    ratio - deviation at progress 1, clamped to [0, 1]. Ratio 0 is off, whatever the deviation."""
    if config.ratio <= 0.0:
        return 0.0
    r = (config.ratio - config.deviation) + 2.0 * config.deviation * math.cos(math.pi / 2.0 * progress)
    return min(1.0, max(0.0, r))


_EPS = 1e-7  # above the resolution of percent_of_sigma, far below one step of any real schedule


def percent_of_sigma(sigma: float, percent_to_sigma: Callable[[float], float], iterations: int = 48) -> float:
    """The progress p in [0, 1] at which ``percent_to_sigma`` (non-increasing, the host's model_sampling
    function) reaches ``sigma``: the smallest p with percent_to_sigma(p) <= sigma, by bisection."""
    if float(percent_to_sigma(0.0)) <= sigma:
        return 0.0
    lo, hi = 0.0, 1.0
    for _ in range(iterations):
        mid = (lo + hi) / 2.0
        if float(percent_to_sigma(mid)) <= sigma:
            hi = mid
        else:
            lo = mid
    return hi


def steps_before(progress: list[float]) -> int:
    """Estimated number of schedule steps before a run that starts part-way (KSamplerAdvanced from step
    k, a refiner pass): ``progress`` holds the run's sigmas on the progress scale, final sigma included.
    Exact for schedules uniform in progress (sgm_uniform, simple); 0 for a run that starts at 0."""
    if len(progress) < 2 or progress[0] <= _EPS:
        return 0
    steps = len(progress) - 1
    # the step width from the run's own steps; the final one may jump to sigma 0 early (full denoise)
    per_step = (progress[steps - 1] - progress[0]) / (steps - 1) if steps >= 2 else progress[1] - progress[0]
    return max(0, round(progress[0] / per_step)) if per_step > _EPS else 0


def structure_until(config: SDTMConfig, step: int, progress: float) -> bool:
    """Whether a merging step is in the structure phase: its progress <= switch (the pack), or with the
    release's ``switch_step`` rule its index <= switch x 49 (step 20 with 0.41), whatever the step count."""
    if "switch_step" in config.release:
        return step <= config.switch * (RELEASE_SWITCH_STEPS - 1) + 1e-6
    return progress <= config.switch + _EPS


def steps_after(progress: list[float]) -> int:
    """Estimated number of schedule steps after a run that stops part-way (KSamplerAdvanced 0-k of S):
    ``progress`` holds the run's sigmas on the progress scale, its last (non-zero) sigma included. Exact for
    schedules uniform in progress (sgm_uniform, simple); 0 for a run that reaches progress 1."""
    steps = len(progress) - 1
    width = (progress[-1] - progress[0]) / steps if steps >= 1 else 0.0
    return max(0, round((1.0 - progress[-1]) / width)) if width > _EPS else 0


def step_plan(config: SDTMConfig, step: int, num_steps: int, progress: float | None = None) -> StepPlan:
    """The phase and ratio of step ``step`` (its index in the whole schedule, for protected steps);
    ``progress`` defaults to step / (num_steps - 1), which the release's ``step_progress`` rule always uses."""
    if progress is None or "step_progress" in config.release:
        p = progress_at(step, num_steps)
    else:
        p = min(1.0, max(0.0, float(progress)))
    if not (config.start - _EPS <= p <= config.end + _EPS):
        return StepPlan(step, num_steps, p, Phase.FULL, 0.0, False)
    if config.protect_every > 0 and step % config.protect_every == 0:
        return StepPlan(step, num_steps, p, Phase.FULL, 0.0, True)
    if config.method == "tome":
        phase = Phase.STRUCTURE  # ToMe shortens attention and MLP on every merged step
    else:
        phase = Phase.STRUCTURE if structure_until(config, step, p) else Phase.DETAIL
    return StepPlan(step, num_steps, p, phase, ratio_at(config, p), False)


def block_is_merged(config: SDTMConfig, block: int, num_blocks: int) -> bool:
    """Protected blocks (every ``protect_blocks_every``-th and then the last) and blocks outside
    [block_start, block_end] never merge."""
    last = num_blocks - 1
    end = last if config.block_end == -1 else min(config.block_end, last)
    if not config.block_start <= block <= end:
        return False
    f = config.protect_blocks_every
    return not (f > 0 and (block % f == 0 or block == last))


def block_merge(config: SDTMConfig, plan: StepPlan, h: int, w: int) -> BlockMerge:
    """Merged counts for a block on an ``h x w`` token grid at this step (the same for every
    merging block of the step)."""
    n = h * w
    k = config.window
    num_windows = (h // k) * (w // k)
    if plan.phase is Phase.FULL:
        return BlockMerge("none", 0, n, n)
    if config.method == "sdtm" and plan.phase is Phase.STRUCTURE:
        count = structure_merge_count(n, plan.ratio, k * k, num_windows, config.round_to)
        left = n - (k * k - 1) * count
        attn = n if config.structure_attention == "full" else left
        return BlockMerge("window", count, attn, left) if count else BlockMerge("none", 0, n, n)
    count = detail_merge_count(n, plan.ratio, (k * k - 1) * num_windows, config.round_to)
    if not count:
        return BlockMerge("none", 0, n, n)
    attn = n - count if plan.phase is Phase.STRUCTURE else n  # ToMe merges attention too
    return BlockMerge("bipartite", count, attn, n - count)


def reference_config(num_steps: int = 50, switch_step: int = 20, protect_steps_frequency: int = 3,
                     **changes) -> SDTMConfig:
    """The official release's absolute-step defaults for a run of ``num_steps`` steps: structure
    phase for steps s <= switch_step, full steps where s % protect_steps_frequency == 0."""
    if num_steps < 2:
        raise ValueError(f"num_steps must be >= 2, got {num_steps}")
    return SDTMConfig(switch=switch_step / (num_steps - 1), protect_every=protect_steps_frequency, **changes)
