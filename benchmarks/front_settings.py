"""The settings of the speed-fidelity front (``benchmarks.bench_front``): each builds the patched MODEL from the
unpatched one, as the nodes would in a graph (core LazyCache and EasyCache, ToMe, the SDTM presets, one-knob
sweeps, the error analysis, SDTM stacked with LazyCache, the tuned light settings and the error-reduction
ideas), by benchmark group (:func:`build_settings`)."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

from benchmarks.bench_fidelity import advanced_inputs

Builder = Callable[[object], object]


@dataclass
class Setting:
    name: str
    family: str  # curve of the chart: unpatched, lazycache, easycache, tome, sdtm-preset, sdtm-sweep, ...
    params: dict  # what the nodes get (JSON)
    build: Builder
    seeds: list[dict] = field(default_factory=list)  # one entry per seed
    steps: int | None = None  # sample with this many steps instead of the run's (the fewer-steps baseline)
    model: object = None  # the patched MODEL of the last measurement (its SDTM report, if any)


def lazycache(threshold: float, start: float = 0.15, end: float = 0.95) -> Builder:
    """Core LazyCache (comfy_extras/nodes_easycache.py) with its node's defaults for the percents."""
    def build(model):
        from comfy_extras.nodes_easycache import LazyCacheNode
        return LazyCacheNode.execute(model, threshold, start, end, False).args[0]
    return build


def easycache(threshold: float, start: float = 0.15, end: float = 0.95) -> Builder:
    def build(model):
        from comfy_extras.nodes_easycache import EasyCacheNode
        return EasyCacheNode.execute(model, threshold, start, end, False).args[0]
    return build


def sdtm_preset(pack, name: str) -> Builder:
    return lambda model: pack.apply.execute(model, name, -1.0, 0.0, 1.0, -1.0).args[0]


def sdtm_advanced(pack, config) -> Builder:
    return lambda model: pack.advanced.execute(model, **advanced_inputs(pack, config)).args[0]


def chain(*builders: Builder) -> Builder:
    """Nodes in a row: the first builder is the first node after the loader."""
    def build(model):
        for builder in builders:
            model = builder(model)
        return model
    return build


def config_params(pack, config) -> dict:
    return {"node": "SDTM_ApplyAdvanced", **advanced_inputs(pack, config)}


def sdtm_setting(pack, name: str, family: str, config, **extra) -> Setting:
    return Setting(name, family, {**config_params(pack, config), **extra}, sdtm_advanced(pack, config))


def stack_settings(pack, label: str, config, threshold: float) -> list[Setting]:
    """SDTM (Advanced, ``config``) and LazyCache(threshold) in both orders."""
    sdtm, lazy = sdtm_advanced(pack, config), lazycache(threshold)
    params = {"sdtm": config_params(pack, config), "lazycache": threshold}
    return [Setting(f"{label} -> LazyCache {threshold}", "stack sdtm->lazy", {**params, "order": "sdtm first"},
                    chain(sdtm, lazy)),
            Setting(f"LazyCache {threshold} -> {label}", "stack lazy->sdtm", {**params, "order": "lazycache first"},
                    chain(lazy, sdtm))]


def sweep_base(pack):
    """The base of the one-knob sweeps, the error analysis and the ideas: the balanced preset's schedule, full
    steps and cache, without the proportional attention it gained from the ideas' results."""
    return pack.presets.preset_config("balanced").replace(proportional_attention=False)


def build_settings(pack, depth: int, groups: set[str], steps: int) -> list[Setting]:
    """Every setting of the benchmark but the LazyCache sweep (run by :func:`run_lazy_sweep`)."""
    ops = pack.ops
    balanced = sweep_base(pack)
    settings: list[Setting] = []
    if "baseline" in groups:
        settings.append(Setting("unpatched", "unpatched", {}, lambda model: model))
    if "easy" in groups:
        settings.append(Setting("EasyCache 0.2", "easycache", {"easycache": 0.2}, easycache(0.2)))
    if "tome" in groups:
        for ratio in (0.5,):
            config = ops.SDTMConfig(method="tome", ratio=ratio, deviation=0.0, protect_every=0, use_cache=False)
            settings.append(sdtm_setting(pack, f"ToMe plain r={ratio}", "tome", config))
    if "presets" in groups:
        for name in pack.presets.PRESETS:
            settings.append(Setting(f"preset {name}", "sdtm-preset", {"node": "SDTM_Apply", "preset": name},
                                    sdtm_preset(pack, name)))
    if "stacks" in groups:
        settings += stack_settings(pack, "balanced", pack.presets.preset_config("balanced"), 0.2)
        settings += stack_settings(pack, "reference", pack.presets.preset_config("reference"), 0.1)
    if "tuned" in groups:
        settings += tuned_settings(pack, depth)
    if "analysis" in groups:  # where the error comes from: one phase, one third of the steps, one block
        switch_step = math.floor(balanced.switch * (steps - 1) + 1e-9)
        detail_start = (switch_step + 1) / (steps - 1)
        parts = [("phase", "structure steps only", dict(end=balanced.switch)),
                 ("phase", "detail steps only", dict(start=min(1.0, detail_start)))]
        thirds = [(0.0, 1 / 3), (1 / 3 + 1e-6, 2 / 3), (2 / 3 + 1e-6, 1.0)]
        parts += [("steps", f"steps {a:.2f}-{b:.2f} only", dict(start=round(a, 6), end=round(b, 6))) for a, b in thirds]
        parts += [("block", f"block {b} only", dict(block_start=b, block_end=b)) for b in range(depth)]
        for knob, label, changes in parts:
            for base_name, base in (("balanced", balanced),):
                settings.append(sdtm_setting(pack, f"{base_name}: {label}", "analysis", base.replace(**changes),
                                             knob=knob, base=base_name))
    if "ideas" in groups:
        settings += idea_settings(pack)
    if "sweeps" in groups:  # one knob of the balanced preset at a time
        sweeps = [("ratio", dict(ratio=r, deviation=round(0.4 * r, 4))) for r in (0.2, 0.7)]
        sweeps += [("switch", dict(switch=s)) for s in (0.0, 1.0)]
        sweeps += [("start", dict(start=0.6))]
        sweeps += [("blocks", dict(block_start=a, block_end=b))
                   for a, b in ((0, depth // 2 - 1), (depth // 2, depth - 1)) if a <= b]
        sweeps += [("protect steps", dict(protect_every=5)), ("protect steps", dict(protect_every=0, use_cache=False))]
        sweeps += [("protect blocks", dict(protect_blocks_every=2))]
        sweeps += [("cache weight", dict(cache_fresh_weight=w)) for w in (0.0, 1.0)]
        for knob, changes in sweeps:
            label = ", ".join(f"{k}={v}" for k, v in changes.items())
            settings.append(sdtm_setting(pack, f"balanced {label}", "sdtm-sweep", balanced.replace(**changes),
                                         knob=knob))
    return settings


IDEAS = {"pa": dict(proportional_attention=True), "sfull": dict(structure_attention="full")}
IDEA_BASES = ("balanced", "r=0.7", "r=0.7 switch=1.0")


def idea_settings(pack) -> list[Setting]:
    """The error-reduction options of issue 14 point 2, one at a time, on the balanced preset, on its ratio 0.7
    variant (about 1.5x) and with the structure phase over every step (switch 1, past 1.5x)."""
    balanced = sweep_base(pack)
    bases = {"balanced": balanced, "r=0.7": balanced.replace(ratio=0.7, deviation=0.28)}
    bases["r=0.7 switch=1.0"] = bases["r=0.7"].replace(switch=1.0)
    settings = []
    for base_name in IDEA_BASES:
        for idea, changes in IDEAS.items():
            settings.append(sdtm_setting(pack, f"ideas {base_name} +{idea}", "sdtm-ideas",
                                         bases[base_name].replace(**changes), base=base_name, ideas=idea))
        if base_name != "r=0.7":  # the sweeps measure r=0.7 alone
            settings.append(sdtm_setting(pack, f"ideas {base_name}", "sdtm-ideas", bases[base_name], base=base_name,
                                         ideas=""))
    return settings


def tuned_candidates(pack, depth: int) -> dict:
    """Light SDTM settings searched with the existing knobs for the front at >= 1.5x (issue 14, point 4)."""
    ops = pack.ops
    light = ops.SDTMConfig(ratio=0.3, deviation=0.0, protect_every=0, use_cache=False)
    return {
        "late detail r=0.3": light.replace(switch=0.0, start=0.5),
        "late detail r=0.5": light.replace(ratio=0.5, switch=0.0, start=0.5),
    }


def tuned_settings(pack, depth: int) -> list[Setting]:
    settings = []
    for label, config in tuned_candidates(pack, depth).items():
        settings.append(sdtm_setting(pack, label, "sdtm-tuned", config))
        for threshold in (0.1,):
            settings += stack_settings(pack, label, config, threshold)
    return settings
