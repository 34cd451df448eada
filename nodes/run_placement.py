"""Where a sampling run sits in its schedule: each step's progress on the model's sigma scale, its first step's
index, and whether it is the rest of a run that stopped part-way (KSamplerAdvanced 0-4 then 4-8), whose state
it then continues. The rule: it starts at the sigma where that run stopped, from the very latent it returned,
adds no noise, has its seed, and its sigmas continue that run's schedule under one of the host's schedulers at
one step count. Anything else starts afresh, and says why when it starts where a kept run stopped."""
from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass

import torch

from ..sdtm_ops import RunCarry, percent_of_sigma, steps_after, steps_before
from .run_records import PatchInfo

log = logging.getLogger("SDTM")
_CLOSE = 1e-5  # relative tolerance of a sigma match (float32 round trips)


@dataclass(frozen=True)
class Placement:
    """``progress``: each sigma of the run's schedule on the progress scale (the final one included);
    ``first_step``: the index of its first step in the whole schedule; ``carry``: the state of the run it
    continues (on the model's device), or None; ``afresh_because``: why a run that starts where a kept run
    stopped is not its rest; ``total_steps``: the whole schedule's step count where the release's
    step-counted progress needs it (else None)."""

    progress: list[float]
    first_step: int
    carry: RunCarry | None
    afresh_because: str | None
    total_steps: int | None


def sigma_progress(model_sampling, schedule: list[float]) -> list[float]:
    """Progress in [0, 1] of each sigma of ``schedule`` on the model's sigma scale (``model_sampling``:
    the host's model_sampling object), as ComfyUI's own start/end percents are read."""
    return [percent_of_sigma(float(sigma), model_sampling.percent_to_sigma) for sigma in schedule]


def _host_schedules(model_sampling, step_counts) -> Iterator[list[float]]:
    """The sigmas of every scheduler of the host (``comfy.samplers.calculate_sigmas`` and its
    SCHEDULER_NAMES) at each step count of ``step_counts``; nothing on a host without them."""
    import comfy.samplers
    calculate = getattr(comfy.samplers, "calculate_sigmas", None)
    names = getattr(comfy.samplers, "SCHEDULER_NAMES", None) or ()
    if calculate is None:
        return
    for steps in step_counts:
        for name in names:
            yield [float(v) for v in calculate(model_sampling, name, steps).reshape(-1).tolist()]


def _same(a: float, b: float) -> bool:
    return abs(a - b) <= _CLOSE * max(abs(a), 1e-3)


def has_host_schedules() -> bool:
    import comfy.samplers
    return getattr(comfy.samplers, "calculate_sigmas", None) is not None


def one_schedule(model_sampling, before: tuple[float, ...], after: list[float]) -> bool:
    """Whether ``before`` (a stopped run's sigmas) followed by ``after`` (a new run's, starting at
    before's last) is one stretch of a schedule of one of the host's schedulers at one step count: the
    sigmas KSamplerAdvanced or SplitSigmas give the two parts of one run. A run with another step count
    or scheduler that happens to start at the same sigma is not. A final 0 of ``after`` may be a forced
    full denoise, so it is not compared. Without the host's schedulers, True."""
    if not has_host_schedules():
        return True
    whole = list(before) + list(after[1:])
    compared = whole[:-1] if whole[-1] == 0.0 and len(whole) > 2 else whole
    least = len(whole) - 1  # longer schedules too: a part of a run with denoise < 1
    for sigmas in _host_schedules(model_sampling, range(least, 2 * least + 33)):
        start = next((i for i in range(len(sigmas) - len(compared) + 1) if _same(sigmas[i], compared[0])), None)
        if start is not None and all(_same(a, b) for a, b in zip(sigmas[start:start + len(compared)], compared)):
            return True
    return False


def whole_schedule_steps(model_sampling, schedule: list[float], first_step: int, estimate: int) -> int:
    """The step count of the whole schedule of a run that stops part-way: the one of the host's schedulers whose
    sigmas from ``first_step`` on begin with ``schedule``, searched up to twice ``estimate`` (the count
    estimated from the run's own steps, returned when none matches)."""
    end = first_step + len(schedule)
    for sigmas in _host_schedules(model_sampling, range(end, 2 * estimate + 33)):
        if len(sigmas) >= end and all(_same(a, b) for a, b in zip(sigmas[first_step:end], schedule)):
            return len(sigmas) - 1
    return estimate


def continuation_problem(carry: RunCarry, model_sampling, schedule: list[float], noise, seed) -> str | None:
    """Why a run that starts where ``carry``'s run stopped, from the latent it returned, is not the rest of
    that run (None: it is): it adds noise, has another seed, or another schedule."""
    if isinstance(noise, torch.Tensor) and bool(torch.count_nonzero(noise)):
        return "it adds noise (the rest of a run adds none: add_noise disabled)"
    if carry.sampler_seed is not None and seed is not None and int(seed) != carry.sampler_seed:
        return f"its seed {int(seed)} is not the seed {carry.sampler_seed} of the part that stopped there"
    if not one_schedule(model_sampling, carry.sigmas, schedule):
        return ("its sigmas are not the rest of that part's schedule (another step count or scheduler, or "
                "sigmas none of ComfyUI's schedulers make)")
    return None


def place_run(info: PatchInfo, guider, schedule: list[float], arguments: dict) -> Placement:
    """Where the run of ``guider.outer_sample(**arguments)`` on ``schedule`` (its sigmas, the final one
    included) sits: progress read now on the model's sigma scale (a ModelSamplingSD3 node after SDTM changes
    it), its first step (the carry's end for a continuation, else estimated from its first sigma) and the carry
    of the run it continues."""
    model_sampling = guider.model_patcher.get_model_object("model_sampling")
    progress = sigma_progress(model_sampling, schedule)
    carry, reason = info.carry_for(schedule[0], arguments.get("latent_image"))
    if carry is not None:
        reason = continuation_problem(carry, model_sampling, schedule, arguments.get("noise"),
                                      arguments.get("seed"))
    if reason is not None:
        log.warning("SDTM %s: this run starts where an earlier part of a split run stopped, from the latent it "
                    "returned, but it starts afresh: %s.", info.label, reason)
        carry = None
    first_step = carry.end_step if carry is not None else steps_before(progress)
    total = None  # the release's step-counted progress needs the whole schedule's step count
    if schedule[-1] > 0 and "step_progress" in info.config.release:
        total = whole_schedule_steps(model_sampling, schedule, first_step,
                                     first_step + len(schedule) - 1 + steps_after(progress))
    if carry is not None:
        carry = carry.to(guider.model_patcher.load_device)
    return Placement(progress, first_step, carry, reason, total)
