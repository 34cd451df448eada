"""The one table of SDTM's knobs: every setting of the method, with the node input that shows it.

``SDTMConfig`` (its fields, defaults and accepted ranges), the SDTM and SDTM Advanced nodes (inputs,
defaults, min / max / step, tooltips, validation), the evaluation CLI's options and the benchmarks'
node inputs are all derived from ``KNOBS``. Adding a knob is one row here. Input names are part of
saved workflows and never change; the SDTM Advanced node shows the knobs in table order (its
widgets are positional in saved workflows, so a new row goes at the end).
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

__all__ = ["Knob", "KNOBS", "KNOB_BY_FIELD", "KNOB_BY_INPUT", "ORDERED", "PERCENT_HELP", "PRESET_VALUE",
           "RELEASE_RULES", "RELEASE_SWITCH_STEPS", "knob_problem", "order_problem", "release_rules"]

PERCENT_HELP = ("Progress is read on the model's sigma scale, as ComfyUI's own start/end percents: with "
                "sgm_uniform or simple, step s of S is at about s/S (30 steps: 0.41 means steps 0-12), and a run "
                "split over several samplers keeps the single run's plan.")
PRESET_VALUE = -1  # on the SDTM node, this value of a preset-overriding input keeps the preset's value

# The official release's 50 steps: with release rules the switch knob is read on this run (0.41 -> step 20).
RELEASE_SWITCH_STEPS = 50
# Where the official release's rules differ from the pack's: name -> (the release, the pack). The ``rules``
# knob is "pack" (none of them), "release" (all of them) or, for benchmarks and tests, "pack+NAME[+NAME...]"
# (the pack's rules with the named release rules switched on).
RELEASE_RULES: dict[str, tuple[str, str]] = {
    "mean_bonus": ("structure-phase priority bonus: counter / (its mean over the sample's tokens + 1e-6)",
                   "counter / its largest value in the sample"),
    "dst_counted": ("detail phase: every dst counts as merged (its counter keeps rising), one that received no "
                    "src included", "a dst that received no src is a singleton (its counter is reset to 0)"),
    "dst_blended": ("detail phase: every dst is blended with the cache", "only tokens in groups of two or more"),
    "first_dst": ("detail-phase dst among equal counters: the first member of the window (random only while no "
                  "counter exists); the same image whatever the sampler seed",
                  "a random member from the seeded merge RNG"),
    "switch_step": (f"end of the structure phase: an absolute step, structure while step <= switch x "
                    f"{RELEASE_SWITCH_STEPS - 1} (20 with 0.41), at any step count",
                    "progress: structure while the step's progress <= switch"),
    "step_progress": ("progress of the ratio schedule (and of start / end): step index s / (S - 1)",
                      "the step's sigma on the model's scale"),
}


@dataclass(frozen=True)
class Knob:
    """One setting: the config field, the node input / CLI option that sets it, and its accepted values."""

    input: str  # node input name (stable: saved workflows use it); the CLI option is --input-with-dashes
    field: str  # SDTMConfig field
    kind: type  # float, int, bool or str
    default: object
    tooltip: str
    low: float | None = None  # accepted range, inclusive (numbers)
    high: float | None = None
    step: float | None = None  # widget step (floats)
    choices: tuple[str, ...] = ()  # accepted values (str)
    # The SDTM node (presets) shows the knob at this position among its knob inputs; None: SDTM Advanced only.
    sdtm_position: int | None = None
    preset_override: bool = False  # on the SDTM node: PRESET_VALUE keeps the preset's value
    sdtm_high: float | None = None  # the SDTM node's highest value, where lower than ``high``
    # str knobs: values accepted besides ``choices`` (which the node shows), with a description for errors
    accepts: Callable[[str], bool] | None = None
    accepts_text: str = ""

    @property
    def option(self) -> str:
        """The evaluation CLI's option."""
        return "--" + self.input.replace("_", "-")

    def bounds(self, sdtm_node: bool = False) -> tuple[float, float]:
        """(lowest, highest) a node shows; ``sdtm_node``: the SDTM node's, with its preset value."""
        low, high = self.low, self.high
        if sdtm_node and self.preset_override:
            low = PRESET_VALUE
        if sdtm_node and self.sdtm_high is not None:
            high = self.sdtm_high
        return low, high


KNOBS: tuple[Knob, ...] = (
    Knob("method", "method", str, "sdtm", choices=("sdtm", "tome"),
         tooltip="sdtm: structure-then-detail merging. tome: plain ToMe (random dst per window, global bipartite "
                 "matching, attention and MLP merged on every merged step) on the same ratio schedule, for A/B "
                 "comparisons."),
    Knob("ratio", "ratio", float, 0.3, low=0.0, high=1.0, step=0.01, sdtm_position=0, preset_override=True,
         sdtm_high=0.95,
         tooltip="Centre of the cosine ratio schedule: the fraction of image tokens merged away in the middle of "
                 "sampling (ratio + deviation at the first step, ratio - deviation at the last). 0 turns merging off, "
                 "whatever the deviation."),
    Knob("deviation", "deviation", float, 0.2, low=0.0, high=1.0, step=0.01,
         tooltip="Half-range of the schedule: ratio + deviation at the first step, ratio - deviation at the last "
                 "(clamped to 0..1)."),
    # the official release's switch_step 20 of 50, as progress: steps 0-20 of 50 are structure steps
    Knob("switch_percent", "switch", float, 0.41, low=0.0, high=1.0, step=0.01, sdtm_position=3,
         preset_override=True,
         tooltip="Last progress of the structure phase (whole windows merged, attention shortened); later steps "
                 "are detail steps (single tokens merged, MLP only). " + PERCENT_HELP),
    Knob("start_percent", "start", float, 0.0, low=0.0, high=1.0, step=0.01, sdtm_position=1,
         tooltip="Merging starts at this progress. " + PERCENT_HELP),
    Knob("end_percent", "end", float, 1.0, low=0.0, high=1.0, step=0.01, sdtm_position=2,
         tooltip="Merging stops after this progress. " + PERCENT_HELP),
    Knob("window", "window", int, 2, low=2, high=8,
         tooltip="Window side k: k x k token windows (2 = 2x2, as in the paper). Tokens outside whole windows "
                 "are never merged."),
    Knob("priority_weight", "priority_weight", float, 0.05, low=0.0, high=10.0, step=0.01,
         tooltip="a_s: how much windows of long-merged tokens are favoured in the structure phase, keeping merge "
                 "patterns stable over time."),
    Knob("protect_steps_every", "protect_every", int, 3, low=0, high=1000,
         tooltip="Every P-th step (s % P == 0) runs at full length and refreshes the cache. 0 = off."),
    Knob("protect_blocks_every", "protect_blocks_every", int, 0, low=0, high=1000,
         tooltip="f > 0: blocks l % f == 0 and the last block never merge. 0 = off."),
    Knob("block_start", "block_start", int, 0, low=0, high=1000, tooltip="First joint block that merges (0-based)."),
    Knob("block_end", "block_end", int, -1, low=-1, high=1000,
         tooltip="Last joint block that merges; -1 = the model's last block."),
    Knob("cache", "use_cache", bool, True,
         tooltip="Keep the protected steps' attention and MLP outputs and blend them into merged positions. Costs "
                 "two full-size tensors per block (the summary logs the size); freed when sampling ends, except that "
                 "a run that stops part-way keeps a copy on the CPU for its continuation."),
    Knob("cache_fresh_weight", "cache_fresh_weight", float, 0.1, low=0.0, high=1.0, step=0.01,
         tooltip="mcw: weight of the fresh value at merged positions when blending (1 = no blending)."),
    Knob("merge_mode", "merge_mode", str, "mean", choices=("mean", "prune"),
         tooltip="mean: a group becomes the mean of its tokens. prune: it keeps its dst token's value (the "
                 "reference's pseudo-merge)."),
    Knob("merge_seed", "seed", int, -1, low=-1, high=2**64 - 1,
         tooltip="Seed of the merge RNG (random dst choices); -1 = the sampler's seed."),
    Knob("round_to", "round_to", int, 16, low=1, high=1024,
         tooltip="Merged counts are rounded down to a multiple of this (16 in the reference; multiples of 8 or 16 "
                 "suit GPU kernels)."),
    Knob("proportional_attention", "proportional_attention", bool, False,
         tooltip="In a shortened attention, add log(group size) to each merged key's logits, so a group of s "
                 "tokens draws the attention its s members would have drawn (ToMe's proportional attention). "
                 "Text keys are unchanged. It is passed as an attention mask, with which PyTorch on a GPU cannot "
                 "use its flash-attention kernel (the memory-efficient kernel runs instead)."),
    Knob("structure_attention", "structure_attention", str, "merged", choices=("merged", "full"),
         tooltip="merged: structure steps run attention on the collapsed windows (the paper). full: structure "
                 "steps keep attention at full length and merge only the MLP input, as detail steps do."),
    Knob("rules", "rules", str, "pack", choices=("pack", "release"),
         accepts=lambda value: _rule_names(value) is not None,
         accepts_text="pack+RULE[+RULE...] with RULE in " + ", ".join(RELEASE_RULES),
         tooltip="pack: the pack's rules. release: the official release's, step for step: the priority bonus over "
                 "the counter's mean (not its largest value); in the detail phase every dst counts as merged and is "
                 f"blended with the cache, and the dst of a window with equal counters is its first member (the same "
                 f"image whatever the seed); the structure phase ends at an absolute step (switch x "
                 f"{RELEASE_SWITCH_STEPS - 1}: step 20 with 0.41, at any step count: at 21 steps or fewer every "
                 "merging step is a structure step) and progress counts steps (s / (S - 1)), not sigmas. "
                 "docs/METHOD.md measures each difference."),
)

KNOB_BY_FIELD = {knob.field: knob for knob in KNOBS}
KNOB_BY_INPUT = {knob.input: knob for knob in KNOBS}


def knob_problem(knob: Knob, value: object, name: str | None = None, bounds: tuple | None = None) -> str | None:
    """What is wrong with ``value`` for ``knob`` (None: nothing), naming it ``name`` (default: the
    field) and the accepted range ``bounds`` (default: the knob's)."""
    name = name or knob.field
    if knob.kind is str:
        if value in knob.choices or (knob.accepts is not None and isinstance(value, str) and knob.accepts(value)):
            return None
        more = f" or {knob.accepts_text}" if knob.accepts_text else ""
        return f"{name} must be one of {', '.join(knob.choices)}{more}, got {value!r}"
    if knob.kind is bool:
        return None if isinstance(value, bool) else f"{name} must be True or False, got {value!r}"
    low, high = bounds or (knob.low, knob.high)
    whole = knob.kind is int
    what = "a whole number" if whole else "a number"
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        return f"{name} must be {what} in [{low}, {high}], got {value!r}"
    if whole and not float(value).is_integer():
        return f"{name} must be {what} in [{low}, {high}], got {value!r}"
    if not low <= value <= high:
        return f"{name} must be in [{low}, {high}], got {value!r}"
    return None


# (first field, second field, a value of the second that stands for "the last"): first <= second
ORDERED = (("start", "end", None), ("block_start", "block_end", -1))


def order_problem(values: dict, named: str = "field") -> str | None:
    """The first broken order rule among ``values`` (field -> value; absent or None values are not
    checked), naming knobs by ``named``: "field" or "input"."""
    for first, second, last in ORDERED:
        a, b = values.get(first), values.get(second)
        if a is None or b is None or b == last or a <= b:
            continue
        name_a, name_b = (getattr(KNOB_BY_FIELD[f], named) for f in (first, second))
        return f"{name_a} ({a}) must not be after {name_b} ({b})" + (
            f" ({name_b} {last} stands for the last)" if last is not None else "")
    return None


@lru_cache(maxsize=64)
def _rule_names(value: str) -> frozenset[str] | None:
    """The release rules a ``rules`` value switches on; None for a value that names none of the forms."""
    if value == "pack":
        return frozenset()
    if value == "release":
        return frozenset(RELEASE_RULES)
    head, *names = value.split("+")
    if head != "pack" or not names or any(name not in RELEASE_RULES for name in names):
        return None
    return frozenset(names)


def release_rules(value: str) -> frozenset[str]:
    """The names (keys of ``RELEASE_RULES``) of the release rules that the ``rules`` knob's ``value`` switches on."""
    names = _rule_names(value)
    if names is None:
        raise ValueError(f"rules must be pack, release or pack+RULE[+RULE...] with RULE in "
                         f"{', '.join(RELEASE_RULES)}, got {value!r}")
    return names
