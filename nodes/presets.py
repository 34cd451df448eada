"""Named SDTM settings for the simple node.

FLOP-model speedups are for SD3-medium at 1024x1024, 30 steps (``python -m benchmarks.flop_table``
prints them for every model and resolution). The presets were chosen by measured fidelity on the photo
fixture (benchmarks/bench_fidelity.py); measured speed and fidelity are in docs/BENCHMARKS.md.
"""
from __future__ import annotations

from ..sdtm_ops import SDTMConfig

PRESETS: dict[str, tuple[SDTMConfig, str]] = {
    "reference": (
        SDTMConfig(),
        "the official release's defaults: ratio 0.3 +/- 0.2, structure phase for the first 41% of "
        "the steps, every 3rd step full with cache blending (FLOP model 1.23x)"),
    "balanced": (
        SDTMConfig(ratio=0.5, deviation=0.2, protect_every=3),
        "ratio 0.5 +/- 0.2, every 3rd step full with cache blending: the reference's fidelity at more "
        "speed (FLOP model 1.37x)"),
    "fast": (
        SDTMConfig(ratio=0.5, deviation=0.2, protect_every=0, use_cache=False),
        "ratio 0.5 +/- 0.2, no full steps, no cache: the most speed, some loss of fidelity "
        "(FLOP model 1.70x)"),
    "turbo": (
        SDTMConfig(ratio=0.15, deviation=0.05, protect_every=0, use_cache=False),
        "for 4-8 step models (SD3.5-large-turbo): merges little, ratio 0.15 +/- 0.05, no full steps, "
        "no cache; few steps leave little to gain (FLOP model 1.16x at 4 steps)"),
}

DEFAULT_PRESET = "balanced"


def preset_config(name: str, ratio: float | None = None, switch: float | None = None,
                  start: float = 0.0, end: float = 1.0) -> SDTMConfig:
    """A preset's settings with the simple node's overrides. A ratio override scales the preset's
    deviation with it, so the schedule keeps its shape and ratio 0 turns merging off."""
    if name not in PRESETS:
        raise ValueError(f"preset must be one of {', '.join(PRESETS)}, got {name!r}")
    config = PRESETS[name][0]
    changes: dict = {"start": start, "end": end}
    if ratio is not None:
        scale = ratio / config.ratio if config.ratio else 0.0
        changes.update(ratio=ratio, deviation=min(1.0, config.deviation * scale))
    if switch is not None:
        changes["switch"] = switch
    return config.replace(**changes)
