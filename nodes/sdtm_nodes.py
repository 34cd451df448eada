"""The SDTM nodes: schema, validation, and the patched clone."""
from __future__ import annotations

import json

from comfy_api.latest import io

from ..sdtm_ops import METHODS, MERGE_MODES, SDTMConfig
from .hook import patch_model, run_of_latent
from .merge_map import SDTMMergeMap
from .presets import DEFAULT_PRESET, PRESETS, preset_config

CATEGORY = "model_patches/sdtm"

_PRESET_HELP = "; ".join(f"{name}: {text}" for name, (_, text) in PRESETS.items())
_PERCENT_HELP = ("Progress is read on the model's sigma scale, as ComfyUI's own start/end percents: with "
                 "sgm_uniform or simple, step s of S is at about s/S (30 steps: 0.41 means steps 0-12), and a "
                 "run split over several samplers keeps the single run's plan. ")


def _check(**values: tuple) -> str | bool:
    """Range checks for the inputs a node's validate_inputs takes (ComfyUI skips its own min/max
    check for exactly those inputs). ``values``: name -> (value, lowest, highest). Linked inputs
    (None here) are checked when the node runs."""
    for name, (value, lo, hi) in values.items():
        if value is not None and not lo <= value <= hi:
            return f"{name} must be in [{lo}, {hi}], got {value}"
    return True


def _order(first: str, a, second: str, b, allow_minus_one: bool = False) -> str | bool:
    if a is None or b is None or (allow_minus_one and b == -1) or a <= b:
        return True
    return f"{first} ({a}) must not be greater than {second} ({b})" + (" (or -1)" if allow_minus_one else "")


class SDTMApply(io.ComfyNode):
    """SDTM with presets: the node most users want."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="SDTM_Apply",
            display_name="SDTM (SD3 / SD3.5)",
            category=CATEGORY,
            description=("Structure-then-Detail Token Merging: speeds up SD3 / SD3.5 by merging redundant "
                         "image tokens in the MMDiT blocks; whole uniform windows in the early steps, "
                         "single tokens into their best partner in the late steps."),
            inputs=[
                io.Model.Input("model", tooltip="An SD3-family model (SD3-medium, SD3.5-medium, SD3.5-large, "
                                                "SD3.5-large-turbo). It is not modified: a patched copy is returned."),
                io.Combo.Input("preset", options=list(PRESETS), default=DEFAULT_PRESET,
                               tooltip="How to merge. Figures: FLOP-model speedup for SD3-medium / SD3.5-medium / "
                                       "SD3.5-large at 1024x1024, 30 steps; speedup measured on a 2-core CPU "
                                       "(SD3-medium, 512x512, 10 steps; docs/BENCHMARKS.md); PSNR against the "
                                       "unmerged image on the pack's photo fixture. " + _PRESET_HELP),
                io.Float.Input("ratio", default=-1.0, min=-1.0, max=0.95, step=0.01,
                               tooltip="-1 uses the preset's ratio. Otherwise the centre of the ratio schedule: "
                                       "the fraction of image tokens merged away in the middle of sampling "
                                       "(more at the start, less at the end, as the preset shapes it). "
                                       "0 turns merging off."),
                io.Float.Input("start_percent", default=0.0, min=0.0, max=1.0, step=0.01,
                               tooltip=_PERCENT_HELP + "Merging starts at this progress."),
                io.Float.Input("end_percent", default=1.0, min=0.0, max=1.0, step=0.01,
                               tooltip=_PERCENT_HELP + "Merging stops after this progress."),
                io.Float.Input("switch_percent", default=-1.0, min=-1.0, max=1.0, step=0.01,
                               tooltip="-1 uses the preset's (0.41). Otherwise the last progress of the "
                                       "structure phase (whole windows merged, attention shortened); later "
                                       "steps are detail steps (single tokens merged, MLP only). "
                                       + _PERCENT_HELP),
            ],
            outputs=[io.Model.Output(tooltip="A copy of the model whose joint blocks merge tokens with SDTM.")],
        )

    @classmethod
    def validate_inputs(cls, start_percent: float, end_percent: float) -> str | bool:
        checked = _check(start_percent=(start_percent, 0.0, 1.0), end_percent=(end_percent, 0.0, 1.0))
        return checked if checked is not True else _order("start_percent", start_percent, "end_percent", end_percent)

    @classmethod
    def execute(cls, model, preset: str, ratio: float, start_percent: float, end_percent: float,
                switch_percent: float) -> io.NodeOutput:
        config = preset_config(preset, ratio=None if ratio < 0 else ratio,
                               switch=None if switch_percent < 0 else switch_percent,
                               start=start_percent, end=end_percent)
        return io.NodeOutput(patch_model(model, config, label=f"preset {preset}"))


class SDTMApplyAdvanced(io.ComfyNode):
    """Every knob of the method, and the ToMe baseline for A/B comparisons."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        d = SDTMConfig()
        return io.Schema(
            node_id="SDTM_ApplyAdvanced",
            display_name="SDTM Advanced",
            category=CATEGORY,
            description="SDTM with every setting of the method exposed; defaults are the official release's.",
            inputs=[
                io.Model.Input("model", tooltip="An SD3-family model. It is not modified: a patched copy is returned."),
                io.Combo.Input("method", options=list(METHODS), default=d.method,
                               tooltip="sdtm: structure-then-detail merging. tome: plain ToMe (random dst per "
                                       "window, global bipartite matching, attention and MLP merged on every "
                                       "merged step) on the same ratio schedule, for A/B comparisons."),
                io.Float.Input("ratio", default=d.ratio, min=0.0, max=1.0, step=0.01,
                               tooltip="Centre of the cosine ratio schedule (fraction of image tokens merged away)."),
                io.Float.Input("deviation", default=d.deviation, min=0.0, max=1.0, step=0.01,
                               tooltip="Half-range of the schedule: ratio + deviation at the first step, "
                                       "ratio - deviation at the last (clamped to 0..1)."),
                io.Float.Input("switch_percent", default=d.switch, min=0.0, max=1.0, step=0.01,
                               tooltip="Last progress of the structure phase. " + _PERCENT_HELP),
                io.Float.Input("start_percent", default=d.start, min=0.0, max=1.0, step=0.01,
                               tooltip="Merging starts at this progress. " + _PERCENT_HELP),
                io.Float.Input("end_percent", default=d.end, min=0.0, max=1.0, step=0.01,
                               tooltip="Merging stops after this progress. " + _PERCENT_HELP),
                io.Int.Input("window", default=d.window, min=2, max=8,
                             tooltip="Window side k: k x k token windows (2 = 2x2, as in the paper). Tokens "
                                     "outside whole windows are never merged."),
                io.Float.Input("priority_weight", default=d.priority_weight, min=0.0, max=10.0, step=0.01,
                               tooltip="a_s: how much windows of long-merged tokens are favoured in the "
                                       "structure phase, keeping merge patterns stable over time."),
                io.Int.Input("protect_steps_every", default=d.protect_every, min=0, max=1000,
                             tooltip="Every P-th step (s % P == 0) runs at full length and refreshes the "
                                     "cache. 0 = off."),
                io.Int.Input("protect_blocks_every", default=d.protect_blocks_every, min=0, max=1000,
                             tooltip="f > 0: blocks l % f == 0 and the last block never merge. 0 = off."),
                io.Int.Input("block_start", default=d.block_start, min=0, max=1000,
                             tooltip="First joint block that merges (0-based)."),
                io.Int.Input("block_end", default=d.block_end, min=-1, max=1000,
                             tooltip="Last joint block that merges; -1 = the model's last block."),
                io.Boolean.Input("cache", default=d.use_cache,
                                 tooltip="Keep the protected steps' attention and MLP outputs and blend them "
                                         "into merged positions. Costs two full-size tensors per block "
                                         "(the summary logs the size); freed when sampling ends."),
                io.Float.Input("cache_fresh_weight", default=d.cache_fresh_weight, min=0.0, max=1.0, step=0.01,
                               tooltip="mcw: weight of the fresh value at merged positions when blending "
                                       "(1 = no blending)."),
                io.Combo.Input("merge_mode", options=list(MERGE_MODES), default=d.merge_mode,
                               tooltip="mean: a group becomes the mean of its tokens. prune: it keeps its dst "
                                       "token's value (the reference's pseudo-merge)."),
                io.Int.Input("merge_seed", default=d.seed, min=-1, max=0xFFFFFFFFFFFFFFFF, control_after_generate=False,
                             tooltip="Seed of the merge RNG (random dst choices); -1 = the sampler's seed."),
                io.Int.Input("round_to", default=d.round_to, min=1, max=1024,
                             tooltip="Merged counts are rounded down to a multiple of this (16 in the "
                                     "reference; multiples of 8 or 16 suit GPU kernels)."),
            ],
            outputs=[io.Model.Output(tooltip="A copy of the model whose joint blocks merge tokens.")],
        )

    @classmethod
    def validate_inputs(cls, start_percent: float, end_percent: float, block_start: int, block_end: int) -> str | bool:
        for result in (
                _check(start_percent=(start_percent, 0.0, 1.0), end_percent=(end_percent, 0.0, 1.0),
                       block_start=(block_start, 0, 1000), block_end=(block_end, -1, 1000)),
                _order("start_percent", start_percent, "end_percent", end_percent),
                _order("block_start", block_start, "block_end", block_end, allow_minus_one=True)):
            if result is not True:
                return result
        return True

    @classmethod
    def execute(cls, model, method: str, ratio: float, deviation: float, switch_percent: float,
                start_percent: float, end_percent: float, window: int, priority_weight: float,
                protect_steps_every: int, protect_blocks_every: int, block_start: int, block_end: int,
                cache: bool, cache_fresh_weight: float, merge_mode: str, merge_seed: int, round_to: int) -> io.NodeOutput:
        config = SDTMConfig(method=method, ratio=ratio, deviation=deviation, switch=switch_percent,
                            start=start_percent, end=end_percent, window=window, priority_weight=priority_weight,
                            protect_every=protect_steps_every, protect_blocks_every=protect_blocks_every,
                            block_start=block_start, block_end=block_end, use_cache=cache,
                            cache_fresh_weight=cache_fresh_weight, merge_mode=merge_mode, seed=merge_seed,
                            round_to=round_to)
        return io.NodeOutput(patch_model(model, config, label=f"advanced {method}"))


class SDTMRunReport(io.ComfyNode):
    """The statistics of the last sampling run of an SDTM-patched model, as JSON."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="SDTM_RunReport",
            display_name="SDTM Run Report",
            category=CATEGORY,
            description="What SDTM did in the sampling run that produced the given LATENT: image tokens per "
                        "phase, FLOP-model speedup, wall time, cache use; a summary is shown in the node.",
            is_output_node=True,
            inputs=[
                io.Model.Input("model", tooltip="The MODEL output of an SDTM node (or a model cloned from it) "
                                                "that the sampler used."),
                io.Latent.Input("samples", tooltip="The sampler's output LATENT: the report is the run that "
                                                   "produced it (several samplers may share one patched model)."),
            ],
            outputs=[io.String.Output(display_name="report", tooltip="The run's statistics as JSON text.")],
        )

    @classmethod
    def execute(cls, model, samples) -> io.NodeOutput:
        report, _ = run_of_latent(model, samples, "samples")
        text = json.dumps(report, indent=1)
        return io.NodeOutput(text, ui={"text": [text], "summary": [readable_report(report)]})


def _step_ranges(steps: list[int]) -> str:
    """[0, 1, 2, 4, 6, 7] -> '0-2, 4, 6-7'."""
    parts, start = [], None
    for i, step in enumerate(steps):
        if start is None:
            start = step
        if i + 1 == len(steps) or steps[i + 1] != step + 1:
            parts.append(str(start) if start == step else f"{start}-{step}")
            start = None
    return ", ".join(parts)


def readable_report(report: dict) -> str:
    """A few lines for people: the run, each phase's steps and token shares, speedup, wall time, cache."""
    first, count = report.get("first_step", 0), report["num_steps"]
    lines = [f"SDTM {report['label']}: {count} steps ({_step_ranges(list(range(first, first + count)))}), "
             f"seed {report['seed']}"]
    for name, phase in report["phases"].items():
        if not phase["steps"]:
            continue
        line = f"{name}: steps {_step_ranges(phase['steps'])}"
        if name != "full" and phase["tokens"]:
            line += (f"; attention {phase['attn_tokens'] / phase['tokens']:.0%}, "
                     f"MLP {phase['mlp_tokens'] / phase['tokens']:.0%} of image tokens")
        elif name == "full":
            line += "; every token"
        lines.append(line)
    lines.append(f"FLOP-model speedup {report['flop_speedup']:.2f}x")
    lines.append(f"wall {report['wall_seconds']:.2f} s (model loading excluded; first model evaluation "
                 f"{report.get('first_evaluation_seconds', 0.0):.2f} s)")
    cache = report["cache"]
    lines.append(f"cache {cache['peak_bytes'] / 2**20:.1f} MiB peak, {cache['blends']} blends"
                 if cache["stores"] else "cache off")
    return "\n".join(lines)


NODES = [SDTMApply, SDTMApplyAdvanced, SDTMRunReport, SDTMMergeMap]
