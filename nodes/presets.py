"""Named SDTM settings for the simple node.

Each preset's description (the SDTM node's tooltip) states its settings and the FLOP-model speedup
``sdtm_ops.cost`` computes for SD3-medium / SD3.5-medium / SD3.5-large at 1024x1024 (30 steps; 4 for
turbo). Measured figures (CPU speedups, fidelity on the photo fixture, by which the presets were chosen)
change with each benchmark run and live in docs/BENCHMARKS.md and its committed JSON.
"""
from __future__ import annotations

import math

from ..sdtm_ops import MODEL_SHAPES, SDTMConfig, schedule_cost, token_grid
from ..sdtm_ops.knobs import RELEASE_SWITCH_STEPS

FLOP_MODELS = ("sd3-medium", "sd3.5-medium", "sd3.5-large")
FLOP_SIZE, FLOP_STEPS = 1024, 30

# name -> (settings, what the preset is for, steps the FLOP model is stated at)
_PRESETS: dict[str, tuple[SDTMConfig, str, int]] = {
    "reference": (SDTMConfig(rules="release"),
                  "the official release step for step (its defaults and its rules), to compare with the paper. Its "
                  "structure phase ends at step 20 whatever the step count: at 4, 8 or 21 steps every merging step "
                  "is a structure step; at 30 steps its merging steps through step 20 are structure steps and those "
                  "from step 22 on detail steps (the other presets end it at 41% of the run)", FLOP_STEPS),
    "quality": (SDTMConfig(ratio=0.7, deviation=0.28, switch=1.0, structure_attention="full", protect_every=3),
                "the most fidelity of the presets: merging steps merge 2x2 windows for the MLP only, attention stays "
                "full length",
                FLOP_STEPS),
    "balanced": (SDTMConfig(ratio=0.5, deviation=0.2, protect_every=3, proportional_attention=True),
                 "more merging than the reference, with its full steps, cache blending and proportional attention",
                 FLOP_STEPS),
    "fast": (SDTMConfig(ratio=0.7, deviation=0.28, switch=1.0, protect_every=3),
             "the most speed of the presets: every merging step merges 2x2 windows for attention and MLP", FLOP_STEPS),
    "turbo": (SDTMConfig(ratio=0.15, deviation=0.05, protect_every=0, use_cache=False),
              "made for 4-8 step models (SD3.5-large-turbo): merges little", 4),
}
DEFAULT_PRESET = "balanced"


def settings_text(config: SDTMConfig) -> str:
    """The settings that tell presets apart, in words."""
    full = (f"every {config.protect_every}{'rd' if config.protect_every == 3 else 'th'} step full"
            if config.protect_every else "no full steps")
    cache = "with cache blending" if config.caches else "no cache"
    extra = "".join(text for on, text in ((config.structure_attention == "full", ", full-length attention"),
                                          (config.proportional_attention, ", proportional attention")) if on)
    if "switch_step" in config.release:
        switch = f"structure phase through step {math.floor(config.switch * (RELEASE_SWITCH_STEPS - 1) + 1e-6)}"
    else:
        switch = f"structure phase up to progress {config.switch:g}"
    rules = {"pack": "", "release": ", the release's rules"}.get(config.rules, f", rules {config.rules}")
    return f"ratio {config.ratio:g} +/- {config.deviation:g}, {switch}, {full}, {cache}{extra}{rules}"


def flop_speedups(config: SDTMConfig, steps: int) -> list[float]:
    """FLOP-model speedups for ``FLOP_MODELS`` at FLOP_SIZE x FLOP_SIZE and ``steps`` steps."""
    grid = token_grid(FLOP_SIZE, FLOP_SIZE)
    return [schedule_cost(MODEL_SHAPES[name], grid, config, steps).speedup for name in FLOP_MODELS]


def describe(config: SDTMConfig, purpose: str, steps: int) -> str:
    speedups = " / ".join(f"{value:.2f}x" for value in flop_speedups(config, steps))
    return (f"{purpose}: {settings_text(config)}. FLOP model {speedups} ({' / '.join(FLOP_MODELS)}, "
            f"{FLOP_SIZE}x{FLOP_SIZE}, {steps} steps)")


PRESETS: dict[str, tuple[SDTMConfig, str]] = {
    name: (config, describe(config, purpose, steps)) for name, (config, purpose, steps) in _PRESETS.items()}
PURPOSES = {name: purpose for name, (_, purpose, _) in _PRESETS.items()}  # what each preset is for
PRESET_STEPS = {name: steps for name, (_, _, steps) in _PRESETS.items()}  # the steps its FLOP model is stated at


# What the fronts show (docs/BENCHMARKS.md); commands.node_docs checks the same claim against the committed fronts.
ADVICE = ("On the pack's test fixtures, running fewer steps kept more of the image than every preset at the same "
          "compute, at 20-50 steps, at 4-8 steps and in hires / img2img passes, save the close cases that "
          "docs/BENCHMARKS.md lists (so did core LazyCache at 20-50 steps); `python -m commands.evaluate front` "
          "measures it on your model. ")


def preset_tooltip() -> str:
    """The SDTM node's preset tooltip: what the fronts show, then every preset's description."""
    return ("How to merge. " + ADVICE + "Measured speedups and fidelity: docs/BENCHMARKS.md. "
            + "; ".join(f"{name}: {text}" for name, (_, text) in PRESETS.items()))


def preset_config(name: str, **overrides) -> SDTMConfig:
    """A preset's settings with the SDTM node's overrides (SDTMConfig fields; None keeps the preset's
    value). A ratio override scales the preset's deviation with it, so the schedule keeps its shape
    and ratio 0 turns merging off."""
    if name not in PRESETS:
        raise ValueError(f"preset must be one of {', '.join(PRESETS)}, got {name!r}")
    config = PRESETS[name][0]
    changes = {field: value for field, value in overrides.items() if value is not None}
    if "ratio" in changes:
        scale = changes["ratio"] / config.ratio if config.ratio else 0.0
        changes["deviation"] = min(1.0, config.deviation * scale)
    return config.replace(**changes)
