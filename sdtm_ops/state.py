"""Per-run state: priority counters, blending caches, the seeded merge RNG and statistics.

A :class:`RunState` is created when a sampling run starts and released when it ends; nothing here is
global. Counters and caches are keyed by the batch layout (which cond/uncond chunks a model call
carries, its batch size and token count), so a call with another composition or shape can never
read tensors of a different one.

A run that stops part-way through its schedule (KSamplerAdvanced 0-4 of 8) hands a :class:`RunCarry` to
its continuation (4-8 on the latent it returned): the counters, the cache and the merge RNG's state, so
that the split run computes what the single run does. The carry is read-only; a continuation copies what
it changes, so the same carry can start the same continuation again (a re-queued prompt).
"""
from __future__ import annotations

import bisect
from dataclasses import dataclass, field, replace

import torch

from .config import SDTMConfig
from .partition import Partition, WindowGrid, detail_partition, tome_partition, window_grid, window_partition
from .schedule import BlockMerge, Phase, StepPlan, block_merge, ratio_at, step_plan

__all__ = ["RunCarry", "RunState", "RunStats", "StepStats", "layout_key", "tensor_bytes"]


def tensor_bytes(tensors) -> int:
    """Bytes of the tensors (an iterable), from their shapes: no device read."""
    return sum(t.numel() * t.element_size() for t in tensors)


def layout_key(chunks: tuple[int, ...], batch: int, num_tokens: int) -> tuple:
    """Identity of a model call's batch composition: its chunk types (0 cond, 1 uncond), its batch
    size and its number of image tokens."""
    return (tuple(chunks), int(batch), int(num_tokens))


@dataclass
class StepStats:
    """Counts for one step, summed over its model calls and blocks (image tokens x samples)."""

    phase: Phase
    block_calls: int = 0
    tokens: int = 0  # unmerged image tokens that passed through the blocks
    attn_tokens: int = 0  # image tokens the attention saw
    mlp_tokens: int = 0  # image tokens the MLP saw
    flops: float = 0.0  # FLOP-model cost of what ran
    flops_full: float = 0.0  # FLOP-model cost of the same calls unmerged

    def add(self, other: "StepStats") -> None:
        self.block_calls += other.block_calls
        self.tokens += other.tokens
        self.attn_tokens += other.attn_tokens
        self.mlp_tokens += other.mlp_tokens
        self.flops += other.flops
        self.flops_full += other.flops_full


@dataclass
class RunStats:
    steps: dict = field(default_factory=dict)  # step -> StepStats
    model_calls: int = 0
    cache_stores: int = 0
    cache_blends: int = 0
    cache_misses: int = 0  # merged blocks that found no cache of their layout: plain unmerge
    cache_bytes_peak: int = 0
    state_bytes_peak: int = 0  # everything the run holds at once: cache, counters, merge-map tables
    maps_bytes: int = 0  # the merge-map tables alone (0 unless a Merge Map reads the run)
    patched_calls: int = 0  # model calls in which at least one joint block went through the patch
    bypassed_calls: int = 0  # model calls whose joint blocks all bypassed the patch (skip-layer guidance, ...)
    wall_seconds: float = 0.0  # sampling, from the first model evaluation on (model loading excluded)
    first_evaluation_seconds: float = 0.0  # the first evaluation alone: compilation and warm-up land here
    evaluations: int = 0  # sampler model evaluations (cond and uncond together; Heun: two per step)

    def record(self, phase: Phase, step: int, batch: int, tokens: int, attn_tokens: int,
               mlp_tokens: int, flops: float, flops_full: float) -> None:
        s = self.steps.setdefault(step, StepStats(phase))
        s.add(StepStats(phase, 1, batch * tokens, batch * attn_tokens, batch * mlp_tokens, flops, flops_full))

    def phase_totals(self) -> dict:
        """Phase -> (steps of that phase, their summed StepStats)."""
        totals = {p: ([], StepStats(p)) for p in Phase}
        for step in sorted(self.steps):
            s = self.steps[step]
            totals[s.phase][0].append(step)
            totals[s.phase][1].add(s)
        return totals

    @property
    def flops(self) -> float:
        return sum(s.flops for s in self.steps.values())

    @property
    def flops_full(self) -> float:
        return sum(s.flops_full for s in self.steps.values())

    @property
    def flop_speedup(self) -> float:
        return self.flops_full / self.flops if self.flops else 1.0

    def as_dict(self) -> dict:
        def counts(s: StepStats) -> dict:
            return {"block_calls": s.block_calls, "tokens": s.tokens, "attn_tokens": s.attn_tokens,
                    "mlp_tokens": s.mlp_tokens, "flops": s.flops, "flops_full": s.flops_full}

        return {
            "model_calls": self.model_calls,
            "evaluations": self.evaluations,
            "wall_seconds": round(self.wall_seconds, 4),
            "first_evaluation_seconds": round(self.first_evaluation_seconds, 4),
            "flop_speedup": self.flop_speedup,
            "cache": {"stores": self.cache_stores, "blends": self.cache_blends,
                      "misses": self.cache_misses, "peak_bytes": self.cache_bytes_peak},
            "memory": {"peak_bytes": self.state_bytes_peak, "merge_map_bytes": self.maps_bytes},
            "bypassed_calls": self.bypassed_calls,
            "phases": {p.value: {"steps": steps, **counts(total)} for p, (steps, total) in self.phase_totals().items()},
            "steps": [{"step": k, "phase": s.phase.value, **counts(s)} for k, s in sorted(self.steps.items())],
        }

    def summary(self) -> str:
        parts = []
        for p, (steps, s) in self.phase_totals().items():
            if not steps:
                continue
            if p is Phase.FULL:
                parts.append(f"full {len(steps)} steps")
            else:
                parts.append(f"{p.value} {len(steps)} steps (attention {s.attn_tokens / s.tokens:.0%}, "
                             f"MLP {s.mlp_tokens / s.tokens:.0%} of image tokens)")
        text = "; ".join(parts) or "no model calls"
        text += f"; FLOP-model speedup {self.flop_speedup:.2f}x; wall {self.wall_seconds:.2f} s"
        others = (self.wall_seconds - self.first_evaluation_seconds) / max(1, self.evaluations - 1)
        if self.evaluations > 1 and self.first_evaluation_seconds > 3 * others + 0.05:
            text += f" (the first model evaluation {self.first_evaluation_seconds:.2f} s: compilation or warm-up)"
        if self.state_bytes_peak:
            text += f"; state {self.state_bytes_peak / 2**20:.1f} MiB peak"
            if self.maps_bytes:
                text += f" (merge map {self.maps_bytes / 2**20:.1f} MiB)"
        if self.cache_stores:
            text += f", {self.cache_blends} cache blends"
        if self.cache_misses:
            text += f", {self.cache_misses} merged blocks without a cache of their batch layout (plain unmerge)"
        return text


@dataclass(frozen=True)
class RunCarry:
    """The state a finished run hands to its continuation: the index of the step after its last
    (``end_step``), the merge seed, the priority counters and blending cache by key, and the merge RNG's
    state per device. Never changed after it is made: :class:`RunState` copies the counters it updates and
    only replaces cache entries, so the same carry can start a continuation any number of times."""

    end_step: int
    seed: int
    priority: dict
    cache: dict
    generator_states: dict
    sigmas: tuple[float, ...] = ()  # the stopped run's own schedule, its last sigma included
    sampler_seed: int | None = None  # the seed its sampler was given (a continuation must be given the same)

    @property
    def nbytes(self) -> int:
        return tensor_bytes([*self.priority.values(), *self.cache.values(), *self.generator_states.values()])

    def to(self, device: torch.device) -> RunCarry:
        """The same carry with its counters and cache on ``device`` (once, as the continuation starts)."""
        return replace(self, priority={k: v.to(device) for k, v in self.priority.items()},
                       cache={k: v.to(device) for k, v in self.cache.items()})


def tail_plans(config: SDTMConfig, progress: float) -> list[StepPlan]:
    """Plans that bound what the steps after ``progress`` can merge: the ratio falls with progress, so the
    rest merges at most what an unprotected step at its earliest merging progress would, in either phase
    (which phase comes when depends on rules that count steps the part cannot see). Empty when every step is
    protected or merging has ended."""
    first = max(progress, config.start)
    if config.protect_every == 1 or first > config.end:
        return []
    phases = (Phase.STRUCTURE,) if config.method == "tome" else (Phase.STRUCTURE, Phase.DETAIL)
    return [StepPlan(1, 2, first, phase, ratio_at(config, first), False) for phase in phases]


class RunState:
    """State of one sampling run. ``sample_sigmas`` is the run's schedule (final 0 included).

    ``progress`` (one value per step, on the model's sigma scale) and ``first_step`` (the index of this
    run's first step in the whole schedule, for protected steps) place the run within a schedule that
    may be split over several samplers; by default the run is the whole schedule. ``corrector_sampler``:
    the sampler evaluates the model a second time at the NEXT step's sigma within a step (Heun).
    ``carry``: the state of the run this one continues (its first step is then ``carry.end_step``, and
    its counters, cache and merge RNG continue that run's). ``record_maps``: keep each step's grouping
    for a merge map (off by default: it costs memory that only a merge map uses). ``tail_progress``: for a run
    that stops part-way, the progress of its last sigma, where the rest of the schedule begins (its
    protected steps then keep the cache whenever the rest may merge, as the single run's do). ``total_steps``:
    the whole schedule's step count, for a run that stops part-way (default: this run ends the schedule); only
    the release's step-counted progress ``s / (S - 1)`` reads it.
    """

    def __init__(self, config: SDTMConfig, sample_sigmas: list[float], seed: int,
                 progress: list[float] | None = None, first_step: int = 0, corrector_sampler: bool = False,
                 carry: RunCarry | None = None, record_maps: bool = False,
                 tail_progress: float | None = None, total_steps: int | None = None) -> None:
        if len(sample_sigmas) < 2:
            raise ValueError(f"a sampling run needs at least 2 sigmas, got {len(sample_sigmas)}")
        self.config = config
        self.num_steps = len(sample_sigmas) - 1
        if carry is not None:
            first_step, seed = carry.end_step, carry.seed
        self.first_step = int(first_step)
        self.continued = carry is not None
        self.record_maps = bool(record_maps)
        self.sampler_seed = int(seed)
        self.seed = int(seed if (config.seed < 0 or carry is not None) else config.seed) % (2**64)
        self.schedule = tuple(float(s) for s in sample_sigmas)
        self.tail_progress = tail_progress
        self._sigmas = list(self.schedule[:-1])
        # ascending copy of the schedule without its final entry, for bisection
        self._sigmas_ascending = sorted(self._sigmas)
        if progress is None:
            total = self.first_step + self.num_steps
            progress = [(self.first_step + s) / (total - 1) if total > 1 else 0.0 for s in range(self.num_steps)]
        if len(progress) != self.num_steps:
            raise ValueError(f"progress needs one value per step ({self.num_steps}), got {len(progress)}")
        total = self.first_step + self.num_steps if total_steps is None else int(total_steps)
        self.plans = [step_plan(config, self.first_step + s, total, progress=p) for s, p in enumerate(progress)]
        self.corrector_sampler = bool(corrector_sampler)
        self.active_plan: StepPlan | None = None  # the plan of the sampler evaluation under way
        self.started: float | None = None  # perf_counter at the first model evaluation
        self._evaluation: tuple[int, set] | None = None  # (local step, sigmas evaluated in it)
        self._generators: dict[str, torch.Generator] = {}
        self._generator_states: dict[str, torch.Tensor] = {} if carry is None else dict(carry.generator_states)
        # the carry's counters are copied (they are updated in place); its cache entries are only ever replaced
        self._priority: dict[tuple, torch.Tensor] = {} if carry is None else {
            k: v.clone() for k, v in carry.priority.items()}
        self._cache: dict[tuple, torch.Tensor] = {} if carry is None else dict(carry.cache)
        self._counted: set[tuple] = set(self._priority)
        self._grids: dict[tuple, WindowGrid] = {}
        self._constants: dict[tuple, object] = {}
        self._merges: dict[tuple, bool] = {}
        self._maps: dict[tuple[int, int], torch.Tensor] = {}  # (step, block) -> [B, N] rows; sample 0's are groups
        self.map_grid: tuple[int, int] | None = None
        self.stats = RunStats()
        self._cache_bytes = tensor_bytes(self._cache.values())
        self._priority_bytes = tensor_bytes(self._priority.values())
        self._note_memory()

    def merges_on(self, h: int, w: int) -> bool:
        """Whether any step of this run, or of the rest of its schedule when it stops part-way, merges tokens
        on an h x w grid (if none does, protected steps need not keep a cache)."""
        if (h, w) not in self._merges:
            plans = list(self.plans)
            if self.tail_progress is not None:
                plans += tail_plans(self.config, self.tail_progress)
            self._merges[(h, w)] = any(block_merge(self.config, plan, h, w).kind != "none" for plan in plans)
        return self._merges[(h, w)]

    # -- progress ---------------------------------------------------------------------------
    def step_index(self, sigma: float) -> int:
        """The local step whose interval [sigma_{s+1}, sigma_s] contains ``sigma``: a sigma of the
        schedule maps to its own step, one between two entries (midpoint samplers) to the
        earlier step. A relative tolerance of 1e-5 absorbs float round trips."""
        tol = abs(sigma) * 1e-5
        at_or_above = len(self._sigmas_ascending) - bisect.bisect_left(self._sigmas_ascending, sigma - tol)
        return min(max(at_or_above - 1, 0), self.num_steps - 1)

    def begin_evaluation(self, sigma: float) -> StepPlan:
        """The plan of one model evaluation of the sampler (all its cond/uncond calls) at ``sigma``.

        For a corrector sampler an evaluation below the current step's sigmas that this step has not
        yet evaluated is the step's own corrector call (Heun's second call at the next step's sigma),
        so every call of a step gets the step's plan."""
        step = self.step_index(sigma)
        current = self._evaluation
        if (self.corrector_sampler and current is not None and step > current[0]
                and not any(abs(sigma - seen) <= abs(seen) * 1e-5 for seen in current[1])):
            current[1].add(sigma)
            step = current[0]
        elif current is None or step != current[0]:
            self._evaluation = (step, {sigma})
        else:
            current[1].add(sigma)
        return self.plans[step]

    def plan_at(self, sigma: float) -> StepPlan:
        """The plan of the step being evaluated at ``sigma`` (set by begin_evaluation, else from sigma)."""
        current = self._evaluation
        if current is not None and any(abs(sigma - seen) <= abs(seen) * 1e-5 for seen in current[1]):
            return self.plans[current[0]]
        return self.plans[self.step_index(sigma)]

    # -- RNG, grids -------------------------------------------------------------------------
    def generator(self, device: torch.device) -> torch.Generator:
        """The merge RNG on ``device``: seeded from the run's seed, or where the continued run left it."""
        key = str(device)
        if key not in self._generators:
            generator = torch.Generator(device=device).manual_seed(self.seed)
            if key in self._generator_states:
                generator.set_state(self._generator_states[key])
            self._generators[key] = generator
        return self._generators[key]

    def constant(self, key: tuple, device: torch.device | None, make):
        """A value made once per run (and device, unless None): blend weights and the like, so that no
        block launches a kernel or copies to the device for it; also per-run Python values (the model's
        shape)."""
        full_key = (*key, str(device))
        if full_key not in self._constants:
            self._constants[full_key] = make()
        return self._constants[full_key]

    def grid(self, h: int, w: int, device: torch.device) -> WindowGrid:
        key = (h, w, self.config.window, str(device))
        if key not in self._grids:
            self._grids[key] = window_grid(h, w, self.config.window, device)
        return self._grids[key]

    # -- priority counter ("last_independent") ----------------------------------------------
    def priority(self, layout: tuple, device: torch.device) -> torch.Tensor:
        """The [B, N] counter of this layout (zeros when first asked for)."""
        counter = self._priority.get(layout)
        if counter is None:
            _, batch, tokens = layout
            counter = torch.zeros(batch, tokens, dtype=torch.int32, device=device)
            self._priority[layout] = counter
            self._priority_bytes += tensor_bytes([counter])
            self._note_memory()
        return counter

    def counted(self, layout: tuple) -> bool:
        """Whether a partition of this layout has updated its counter in this run (or the run it continues):
        the release's "a counter exists" (before that its detail phase picks random dst)."""
        return layout in self._counted

    def update_priority(self, layout: tuple, part: Partition) -> None:
        """Add 1 to every token, then reset the tokens that stayed singletons: ``merged * (counter + 1)``
        in one op, written in place. With the release's ``dst_counted`` rule every dst of a detail
        partition counts as merged (``part.grouped``), one that received no src included."""
        counter = self.priority(layout, part.rows.device)
        mask = part.grouped if "dst_counted" in self.config.release else part.merged
        torch.addcmul(mask, counter, mask, out=counter)
        self._counted.add(layout)

    def partition(self, metric: torch.Tensor, grid: WindowGrid, merge: BlockMerge, layout: tuple) -> Partition | None:
        """The partition of one merging block (``merge``: its kind and count, from :func:`block_merge`) from its
        metric [B, N, C], with this run's rules (the pack's or the release's: ``config.release``), counter and
        merge RNG; the counter is updated. None when it merges nothing."""
        cfg = self.config
        if cfg.method == "tome":
            return tome_partition(metric, grid, merge.count, self.generator(metric.device))
        priority = self.priority(layout, metric.device)
        rules = cfg.release
        if merge.kind == "window":
            part = window_partition(metric, grid, merge.count, priority, cfg.priority_weight,
                                    mean_bonus="mean_bonus" in rules)
        else:
            first = "first_dst" in rules  # the release: random dst only while no counter exists
            part = detail_partition(metric, grid, merge.count, priority if self.counted(layout) or not first else None,
                                    self.generator(metric.device), first_dst=first,
                                    blend_every_dst="dst_blended" in rules)
        if part is not None:
            self.update_priority(layout, part)
        return part

    # -- merge maps -------------------------------------------------------------------------
    def record_partition(self, step: int, block: int, part: Partition, h: int, w: int) -> None:
        """Keep the grouping of the first sample of the first call of this step and block: a reference
        to the partition's row table [B, N] (no copy, no kernel launch in the block; sample 0's rows are
        its groups), on the device until the run ends."""
        if not self.record_maps or (step, block) in self._maps or self.map_grid not in (None, (h, w)):
            return
        self.map_grid = (h, w)
        self._maps[(step, block)] = part.rows
        self.stats.maps_bytes += tensor_bytes([part.rows])
        self._note_memory()

    def merge_maps(self) -> dict[tuple[int, int], torch.Tensor] | None:
        """The recorded groupings, moved to the CPU in one transfer: (step, block) -> [N] int64; None when
        the run did not record them (``record_maps`` off)."""
        if not self.record_maps:
            return None
        if not self._maps:
            return {}
        keys = list(self._maps)
        stacked = torch.stack([self._maps[k][0] for k in keys]).cpu()
        return dict(zip(keys, stacked))

    # -- blending cache ---------------------------------------------------------------------
    def store(self, block: int, branch: str, layout: tuple, value: torch.Tensor) -> None:
        key = (block, branch, layout)
        old = self._cache.get(key)
        self._cache_bytes += tensor_bytes([value]) - (0 if old is None else tensor_bytes([old]))
        self._cache[key] = value
        self.stats.cache_stores += 1
        self.stats.cache_bytes_peak = max(self.stats.cache_bytes_peak, self._cache_bytes)
        self._note_memory()

    def _note_memory(self) -> None:
        held = self._cache_bytes + self._priority_bytes + self.stats.maps_bytes
        self.stats.state_bytes_peak = max(self.stats.state_bytes_peak, held)

    def cached(self, block: int, branch: str, layout: tuple, like: torch.Tensor) -> torch.Tensor | None:
        """The stored output of this block, branch and layout if it matches ``like`` in shape,
        dtype and device; otherwise None, counted as a miss."""
        value = self._cache.get((block, branch, layout))
        if value is None or value.shape != like.shape or value.dtype != like.dtype or value.device != like.device:
            self.stats.cache_misses += 1
            return None
        self.stats.cache_blends += 1
        return value

    @property
    def cache_bytes(self) -> int:
        return self._cache_bytes

    def carry(self, store_on: torch.device | None = None) -> RunCarry:
        """The state a continuation of this run starts from (call it when the run has ended, before
        :meth:`release`): its tensors, moved to ``store_on`` when given (the CPU, to free the
        accelerator between the two parts), and the merge RNG's state."""
        def keep(t: torch.Tensor) -> torch.Tensor:
            return t if store_on is None else t.to(store_on)
        states = dict(self._generator_states)
        states.update({key: g.get_state() for key, g in self._generators.items()})
        return RunCarry(self.first_step + self.num_steps, self.seed,
                        {k: keep(v) for k, v in self._priority.items()},
                        {k: keep(v) for k, v in self._cache.items()}, states, self.schedule, self.sampler_seed)

    def release(self) -> None:
        """Drop every tensor of the run (the statistics stay)."""
        self._cache.clear()
        self._maps.clear()
        self._priority.clear()
        self._counted.clear()
        self._cache_bytes = self._priority_bytes = 0
        self._grids.clear()
        self._constants.clear()
        self._generators.clear()
