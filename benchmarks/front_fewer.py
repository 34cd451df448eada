"""The cheapest accelerator every user already has: the unpatched model at fewer steps. The ``fewer`` group of
``benchmarks.bench_front`` (and of the pass front, ``benchmarks.bench_pass``): the unpatched model sampled with
k of the run's S steps (same sampler and scheduler, the scheduler's own schedule of k steps), measured like every
other setting against the unpatched full-S image of the same seed. Its compute is counted by the same hooks: a
k-step run makes k model calls where the reference made S, so its estimated speedup is S / k.

Also the ``--resume`` bookkeeping shared by the fronts: merging a run's rows into the committed JSON's rows in
their order, so a run of one group leaves every other row (and the variants and timings) as they were."""
from __future__ import annotations

import re

from benchmarks.front_settings import Setting

# Step counts per full step count S: enough points to place every preset (1.1x-2x) and LazyCache's sweep
# against fewer steps by interpolation, and one or two past 2.5x.
FEWER_STEPS = {50: (45, 42, 40, 34, 30, 25, 20, 17),
               30: (27, 26, 24, 20, 18, 15, 12, 10),
               20: (18, 17, 16, 14, 12, 10, 8),
               10: (9, 8, 7, 6, 5, 4),
               8: (7, 6, 5, 4, 3),
               4: (3, 2)}
FAMILY = "fewer-steps"


def step_counts(steps: int) -> tuple[int, ...]:
    """The fewer-step counts measured for a run of ``steps`` steps (S): the table above, or about 0.9, 0.8, 0.67,
    0.5, 0.4 and 0.33 of S."""
    if steps in FEWER_STEPS:
        return FEWER_STEPS[steps]
    counts = sorted({max(1, round(steps * f)) for f in (0.9, 0.8, 2 / 3, 0.5, 0.4, 1 / 3)} - {steps}, reverse=True)
    return tuple(counts)


def name(k: int, steps: int) -> str:
    return f"fewer steps {k}/{steps}"


def fewer_settings(steps: int, counts: tuple[int, ...] | None = None) -> list[Setting]:
    """The unpatched model at each of ``counts`` (default :func:`step_counts`) steps."""
    return [Setting(name(k, steps), FAMILY, {"steps": k, "of": steps}, lambda model: model, steps=k)
            for k in (counts or step_counts(steps))]


def merged_rows(previous: list[dict], current: list[dict]) -> list[dict]:
    """The previous run's rows in their order, each replaced by this run's row of the same name where it has one,
    then this run's new rows in its order."""
    mine = {r["name"]: r for r in current}
    out = [mine.get(r["name"], r) for r in previous]
    seen = {r["name"] for r in previous}
    return out + [r for r in current if r["name"] not in seen]


def variant_seeds(setup: dict, result: dict, default: int) -> int:
    """How many seeds a sampler variant of a front was measured with: recorded with it, or (older runs) in the
    command the front records (``--variant-seeds``), else ``default``."""
    if "seeds" in result:
        return result["seeds"]
    given = re.search(r"--variant-seeds[ =](\d+)", setup.get("command", ""))
    return int(given.group(1)) if given else default


def variant_fronts(name: str, data: dict) -> dict[str, dict]:
    """Each sampler variant of a front (``bench_front --variants``) as a front of its own, named
    <name>@<sampler/scheduler/steps>, its setup the front's with the variant's sampler, steps and seeds."""
    out = {}
    for variant, result in data.get("variants", {}).items():
        sampler, scheduler, steps = variant.split("/")
        setup = {**data["setup"], "sampler": sampler, "scheduler": scheduler, "steps": int(steps),
                 "seeds": variant_seeds(data["setup"], result, data["setup"]["seeds"]), "variant_of": name}
        out[f"{name}@{variant}"] = {"setup": setup, "results": result["rows"]}
    return out


def resumed_setup(previous: dict, now: dict) -> dict:
    """A resumed front's setup: the first run's, with this run's command, groups, threads and torch appended to
    its ``resumed`` list."""
    return {**previous, "resumed": previous.get("resumed", []) + [
        {k: now[k] for k in ("command", "groups", "threads", "torch")}]}
