"""Named SDTM settings for the simple node.

Each description gives, for the node's tooltip: the FLOP-model speedup for SD3-medium / SD3.5-medium /
SD3.5-large at 1024x1024 and 30 steps (4 for turbo; tests/test_presets.py checks them against
sdtm_ops.cost, ``python -m benchmarks.flop_table`` prints more), the speedup measured on CPU
(benchmarks/bench_speed.py, SD3-medium configuration, 512x512, 10 steps; for turbo 1024x1024, 4 steps)
and the mean PSNR against the unmerged image on the photo fixture (benchmarks/bench_fidelity.py, by
which the presets were chosen). The runs behind them are in docs/BENCHMARKS.md.
"""
from __future__ import annotations

from ..sdtm_ops import SDTMConfig

PRESETS: dict[str, tuple[SDTMConfig, str]] = {
    "reference": (
        SDTMConfig(),
        "the official release's defaults: ratio 0.3 +/- 0.2, structure phase for the first 41% of the steps, "
        "every 3rd step full with cache blending. FLOP model 1.23x / 1.22x / 1.23x (SD3-medium / SD3.5-medium "
        "/ SD3.5-large, 1024x1024, 30 steps); measured 1.15x on CPU; photo fixture 21.1 dB PSNR"),
    "balanced": (
        SDTMConfig(ratio=0.5, deviation=0.2, protect_every=3),
        "ratio 0.5 +/- 0.2, every 3rd step full with cache blending: the reference's fidelity at more speed. "
        "FLOP model 1.37x / 1.35x / 1.38x; measured 1.25x on CPU; photo fixture 20.7 dB PSNR"),
    "fast": (
        SDTMConfig(ratio=0.5, deviation=0.2, protect_every=0, use_cache=False),
        "ratio 0.5 +/- 0.2, no full steps, no cache: the most speed, some loss of fidelity. "
        "FLOP model 1.70x / 1.64x / 1.72x; measured 1.53x on CPU; photo fixture 16.1 dB PSNR"),
    "turbo": (
        SDTMConfig(ratio=0.15, deviation=0.05, protect_every=0, use_cache=False),
        "for 4-8 step models (SD3.5-large-turbo): merges little, ratio 0.15 +/- 0.05, no full steps, no cache; "
        "few steps leave little to gain. FLOP model 1.16x / 1.16x / 1.16x at 4 steps; "
        "measured 1.11x on CPU at 1024x1024, 4 steps; photo fixture 18.2 dB PSNR"),
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
