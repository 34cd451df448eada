"""Every knob of SDTM in one validated, immutable object, built from the table in knobs.py."""
from __future__ import annotations

from dataclasses import field, make_dataclass, replace

from .knobs import KNOB_BY_FIELD, KNOBS, knob_problem, order_problem, release_rules

__all__ = ["SDTMConfig", "METHODS", "MERGE_MODES"]

METHODS = KNOB_BY_FIELD["method"].choices
MERGE_MODES = KNOB_BY_FIELD["merge_mode"].choices


class _ConfigRules:
    """Validation and helpers of SDTMConfig (its fields come from ``KNOBS``)."""

    def __post_init__(self) -> None:
        for knob in KNOBS:
            problem = knob_problem(knob, getattr(self, knob.field))
            if problem:
                raise ValueError(problem)
        problem = order_problem({knob.field: getattr(self, knob.field) for knob in KNOBS})
        if problem:
            raise ValueError(problem)

    def replace(self, **changes) -> SDTMConfig:
        return replace(self, **changes)

    @property
    def release(self) -> frozenset[str]:
        """The official release's rules this config runs (names of ``knobs.RELEASE_RULES``; empty: the pack's)."""
        return release_rules(self.rules)

    @property
    def caches(self) -> bool:
        """Whether protected steps keep outputs for blending (blending with mcw = 1 is a no-op)."""
        return (self.method == "sdtm" and self.use_cache and self.protect_every > 0
                and self.cache_fresh_weight < 1.0)


SDTMConfig = make_dataclass(
    "SDTMConfig", [(knob.field, knob.kind, field(default=knob.default)) for knob in KNOBS],
    bases=(_ConfigRules,), frozen=True, namespace={
        "__doc__": "SDTM settings, one field per row of ``sdtm_ops.knobs.KNOBS`` (which states each one's meaning, "
                   "default and range). Progress values (switch, start, end) are fractions of the sampling run: "
                   "step s of S has progress s / (S - 1). Defaults are the official release's (section 7 of the "
                   "method notes), with its switch_step 20 of 50 expressed as progress 0.41.",
        "__module__": __name__})
