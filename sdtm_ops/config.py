"""Every knob of SDTM in one validated, immutable object."""
from __future__ import annotations

from dataclasses import dataclass, fields, replace

__all__ = ["SDTMConfig", "METHODS", "MERGE_MODES"]

METHODS = ("sdtm", "tome")
MERGE_MODES = ("mean", "prune")

# name -> (lowest, highest) accepted value, inclusive
_RANGES: dict[str, tuple[float, float]] = {
    "ratio": (0.0, 1.0),
    "deviation": (0.0, 1.0),
    "switch": (0.0, 1.0),
    "start": (0.0, 1.0),
    "end": (0.0, 1.0),
    "window": (2, 8),
    "priority_weight": (0.0, 10.0),
    "protect_every": (0, 1000),
    "protect_blocks_every": (0, 1000),
    "block_start": (0, 1000),
    "block_end": (-1, 1000),
    "cache_fresh_weight": (0.0, 1.0),
    "seed": (-1, 2**64 - 1),
    "round_to": (1, 1024),
}


@dataclass(frozen=True)
class SDTMConfig:
    """SDTM settings. Progress values (switch, start, end) are fractions of the sampling run:
    step s of S has progress s / (S - 1). Defaults are the official release's (section 7 of the
    method notes), with its switch_step 20 of 50 expressed as progress 0.41 (steps 0-20 of 50)."""

    method: str = "sdtm"  # "sdtm" or "tome" (plain global bipartite merging, the baseline)
    ratio: float = 0.3  # centre of the cosine ratio schedule
    deviation: float = 0.2  # half-range: ratio + deviation at the first step, ratio - deviation at the last
    switch: float = 0.41  # last progress of the structure phase; later steps are detail steps
    start: float = 0.0  # merging only for start <= progress <= end
    end: float = 1.0
    window: int = 2  # k: k x k windows (K = k * k tokens)
    priority_weight: float = 0.05  # a_s: weight of the priority bonus in window scores
    protect_every: int = 3  # steps s % P == 0 run at full length (and refresh the cache); 0 = off
    protect_blocks_every: int = 0  # f > 0: blocks l % f == 0 and the last block never merge
    block_start: int = 0  # only blocks block_start..block_end merge
    block_end: int = -1  # -1 = the last block
    use_cache: bool = True  # keep protected steps' branch outputs for blending
    cache_fresh_weight: float = 0.1  # mcw: fresh weight when blending merged positions
    merge_mode: str = "mean"  # "mean" or "prune" (the reference's pseudo-merge)
    seed: int = -1  # merge RNG seed; -1 = the sampler's seed
    round_to: int = 16  # merged counts are rounded down to a multiple of this

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {self.method!r}")
        if self.merge_mode not in MERGE_MODES:
            raise ValueError(f"merge_mode must be one of {MERGE_MODES}, got {self.merge_mode!r}")
        if not isinstance(self.use_cache, bool):
            raise ValueError(f"use_cache must be True or False, got {self.use_cache!r}")
        for f in fields(self):
            if f.name not in _RANGES:
                continue
            value = getattr(self, f.name)
            lo, hi = _RANGES[f.name]
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ValueError(f"{f.name} must be a number in [{lo}, {hi}], got {value!r}")
            if isinstance(lo, int) and isinstance(hi, int) and not float(value).is_integer():
                raise ValueError(f"{f.name} must be a whole number in [{lo}, {hi}], got {value!r}")
            if not lo <= value <= hi:
                raise ValueError(f"{f.name} must be in [{lo}, {hi}], got {value!r}")
        if self.start > self.end:
            raise ValueError(f"start ({self.start}) must not be after end ({self.end})")
        if self.block_end != -1 and self.block_end < self.block_start:
            raise ValueError(f"block_end ({self.block_end}) must be -1 or >= block_start ({self.block_start})")

    def replace(self, **changes) -> "SDTMConfig":
        return replace(self, **changes)

    @property
    def caches(self) -> bool:
        """Whether protected steps keep outputs for blending (blending with mcw = 1 is a no-op)."""
        return (self.method == "sdtm" and self.use_cache and self.protect_every > 0
                and self.cache_fresh_weight < 1.0)
