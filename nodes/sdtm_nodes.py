"""The SDTM nodes: schema, validation, and the patched clone."""
from __future__ import annotations

import inspect
import json

from comfy_api.latest import io

from ..sdtm_ops import SDTMConfig
from ..sdtm_ops.knobs import KNOB_BY_INPUT, KNOBS, PRESET_VALUE, Knob, knob_problem, order_problem
from .hook import patch_model
from .merge_map import SDTMMergeMap
from .node_schema import CATEGORY, SEARCH_ALIASES, schema
from .presets import DEFAULT_PRESET, PRESETS, preset_config, preset_tooltip
from .run_records import run_of_latent

SIMPLE_KNOBS = tuple(sorted((k for k in KNOBS if k.sdtm_position is not None), key=lambda k: k.sdtm_position))
MERGE_MAP_NODE = "SDTM_MergeMap"
# The prompt and the node's own id, to see whether a Merge Map reads this node's model (io.Hidden)
PROMPT_INPUTS = [io.Hidden.prompt, io.Hidden.unique_id]


def feeds_merge_map(prompt: dict | None, node_id: str | None) -> bool:
    """Whether the API-format ``prompt`` has an SDTM Merge Map downstream of node ``node_id`` (through any
    chain of links): then the patched model's runs keep their merge maps, otherwise they keep none."""
    if not isinstance(prompt, dict) or node_id is None:
        return False
    consumers: dict[str, set[str]] = {}
    for consumer, node in prompt.items():
        for value in (node.get("inputs") or {}).values() if isinstance(node, dict) else ():
            if isinstance(value, (list, tuple)) and len(value) == 2 and isinstance(value[1], int):
                consumers.setdefault(str(value[0]), set()).add(str(consumer))
    seen, todo = set(), [str(node_id)]
    while todo:
        for consumer in consumers.get(todo.pop(), ()):
            if consumer in seen:
                continue
            seen.add(consumer)
            if prompt[consumer].get("class_type") == MERGE_MAP_NODE:
                return True
            todo.append(consumer)
    return False


def _records_maps(cls) -> bool:
    """For an Apply node's execute: does its prompt hold a Merge Map fed by its MODEL? (False when called
    outside ComfyUI's executor, which gives no prompt: such callers opt in with ``patch_model(record_maps=True)``.)"""
    hidden = getattr(cls, "hidden", None)
    return hidden is not None and feeds_merge_map(hidden.prompt, hidden.unique_id)


def knob_input(knob: Knob, sdtm_node: bool = False) -> io.Input:
    """The widget of one knob; ``sdtm_node``: as the SDTM node shows it (-1 = the preset's value)."""
    low, high = knob.bounds(sdtm_node)
    override = sdtm_node and knob.preset_override
    default = PRESET_VALUE if override else knob.default
    tooltip = (f"{PRESET_VALUE} keeps the preset's value. Otherwise: " if override else "") + knob.tooltip
    if knob.kind is float:
        return io.Float.Input(knob.input, default=float(default), min=low, max=high, step=knob.step, tooltip=tooltip)
    if knob.kind is int:
        return io.Int.Input(knob.input, default=default, min=low, max=high, control_after_generate=False,
                            tooltip=tooltip)
    if knob.kind is bool:
        return io.Boolean.Input(knob.input, default=default, tooltip=tooltip)
    return io.Combo.Input(knob.input, options=list(knob.choices), default=default, tooltip=tooltip)


def keeps_preset(knob: Knob, value, sdtm_node: bool) -> bool:
    """On the SDTM node, whether ``value`` of ``knob`` is the one that keeps the preset's value (only
    PRESET_VALUE itself: any other negative value is refused, not read as the preset's)."""
    return (sdtm_node and knob.preset_override and isinstance(value, (int, float)) and not isinstance(value, bool)
            and value == PRESET_VALUE)


def preset_problem(preset) -> str | None:
    """What is wrong with a value of the SDTM node's ``preset`` input (None: nothing)."""
    if isinstance(preset, str) and preset in PRESETS:
        return None
    kind = "" if isinstance(preset, str) else f" (a {type(preset).__name__}, not the name of a preset)"
    return f"preset must be one of {', '.join(PRESETS)}, got {preset!r}{kind}"


def _needs_own_check(knob: Knob) -> bool:
    """Inputs ComfyUI's own validation does not fully check: floats (it lets NaN through), choices (0.3.75
    does not check a V3 node's combo values) and the ordered pairs."""
    return knob.kind in (float, str) or knob.field in ("block_start", "block_end")


def knob_problems(values: dict, sdtm_node: bool = False, linked_ok: bool = True) -> str | None:
    """The first problem with node inputs ``values`` (input name -> value), naming the input and the range
    the node shows. None values (linked inputs during validation, or missing ones, which ComfyUI
    reports itself) are skipped when ``linked_ok``; so are text in a number input, which ComfyUI
    failed to convert and reported itself."""
    fields = {}
    for name, value in values.items():
        knob = KNOB_BY_INPUT[name]
        if value is None or (linked_ok and knob.kind in (int, float) and isinstance(value, str)):
            continue
        if keeps_preset(knob, value, sdtm_node):
            continue
        override = sdtm_node and knob.preset_override
        low, high = knob.bounds(sdtm_node)
        problem = knob_problem(knob, value, knob.input, (knob.low if override else low, high))
        if problem and override:
            return problem.replace("], got", f"] or {PRESET_VALUE} (the preset's value), got", 1)
        if problem:
            return problem
        fields[knob.field] = value
    return order_problem(fields, named="input")


def _validator(checked: tuple[str, ...], sdtm_node: bool):
    """A validate_inputs taking exactly the ``checked`` inputs, each optional: ComfyUI passes only the
    inputs a node's validate_inputs names, and skips its own min/max check for those."""
    def validate_inputs(cls, **values) -> str | bool:
        preset = values.pop("preset", None)
        if preset is not None and preset_problem(preset):
            return preset_problem(preset)
        return knob_problems(values, sdtm_node) or True
    parameters = [inspect.Parameter("cls", inspect.Parameter.POSITIONAL_OR_KEYWORD)]
    parameters += [inspect.Parameter(name, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=None) for name in checked]
    validate_inputs.__signature__ = inspect.Signature(parameters)
    return classmethod(validate_inputs)


class SDTMApply(io.ComfyNode):
    """SDTM with presets: the node most users want."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return schema(
            node_id="SDTM_Apply",
            display_name="SDTM (SD3 / SD3.5)",
            category=CATEGORY,
            search_aliases=SEARCH_ALIASES,
            description=("Structure-then-Detail Token Merging: speeds up SD3 / SD3.5 by merging redundant "
                         "image tokens in the MMDiT blocks; whole uniform windows in the early steps, "
                         "single tokens into their best partner in the late steps."),
            inputs=[
                io.Model.Input("model", tooltip="An SD3-family model (SD3-medium, SD3.5-medium, SD3.5-large, "
                                                "SD3.5-large-turbo). It is not modified: a patched copy is returned."),
                io.Combo.Input("preset", options=list(PRESETS), default=DEFAULT_PRESET, tooltip=preset_tooltip()),
                *(knob_input(knob, sdtm_node=True) for knob in SIMPLE_KNOBS),
            ],
            outputs=[io.Model.Output(tooltip="A copy of the model whose joint blocks merge tokens with SDTM.")],
            hidden=PROMPT_INPUTS,
            not_idempotent=True,  # two identical SDTM nodes patch a clone each: runs and carries never mix
        )

    validate_inputs = _validator(("preset", *(k.input for k in SIMPLE_KNOBS if _needs_own_check(k))), sdtm_node=True)

    @classmethod
    def execute(cls, model, preset: str = DEFAULT_PRESET, *values, **knobs) -> io.NodeOutput:
        """``knobs``: the SDTM node's knob inputs by name (``values``: the same in the node's input order);
        a missing one (or -1 where that keeps the preset's value) takes the preset's."""
        if len(values) > len(SIMPLE_KNOBS):
            raise TypeError(f"SDTM_Apply takes {len(SIMPLE_KNOBS)} knob inputs, got {len(values)}")
        knobs = {**{knob.input: value for knob, value in zip(SIMPLE_KNOBS, values)}, **knobs}
        if preset_problem(preset):
            raise ValueError(preset_problem(preset))
        unknown = set(knobs) - {k.input for k in SIMPLE_KNOBS}
        if unknown:
            raise TypeError(f"SDTM_Apply has no input {', '.join(sorted(unknown))}")
        problem = knob_problems(knobs, sdtm_node=True, linked_ok=False)
        if problem:
            raise ValueError(problem)
        overrides = {KNOB_BY_INPUT[name].field: value for name, value in knobs.items()
                     if not keeps_preset(KNOB_BY_INPUT[name], value, sdtm_node=True)}
        return io.NodeOutput(patch_model(model, preset_config(preset, **overrides), label=f"preset {preset}",
                                         record_maps=_records_maps(cls)))


class SDTMApplyAdvanced(io.ComfyNode):
    """Every knob of the method, and the ToMe baseline for A/B comparisons."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return schema(
            node_id="SDTM_ApplyAdvanced",
            display_name="SDTM Advanced",
            category=CATEGORY,
            search_aliases=SEARCH_ALIASES,
            description="SDTM with every setting of the method exposed; defaults are the official release's.",
            inputs=[
                io.Model.Input("model", tooltip="An SD3-family model. It is not modified: a patched copy is returned."),
                *(knob_input(knob) for knob in KNOBS),
            ],
            outputs=[io.Model.Output(tooltip="A copy of the model whose joint blocks merge tokens.")],
            hidden=PROMPT_INPUTS,
            not_idempotent=True,  # two identical SDTM nodes patch a clone each: runs and carries never mix
        )

    validate_inputs = _validator(tuple(k.input for k in KNOBS if _needs_own_check(k)), sdtm_node=False)

    @classmethod
    def execute(cls, model, **knobs) -> io.NodeOutput:
        """``knobs``: knob inputs by name (``sdtm_ops.knobs.KNOBS``); a missing one takes its default."""
        unknown = set(knobs) - set(KNOB_BY_INPUT)
        if unknown:
            raise TypeError(f"SDTM_ApplyAdvanced has no input {', '.join(sorted(unknown))}")
        problem = knob_problems(knobs, linked_ok=False)
        if problem:
            raise ValueError(problem)
        config = SDTMConfig(**{KNOB_BY_INPUT[name].field: value for name, value in knobs.items()})
        return io.NodeOutput(patch_model(model, config, label=f"advanced {config.method}",
                                         record_maps=_records_maps(cls)))


class SDTMRunReport(io.ComfyNode):
    """The statistics of the last sampling run of an SDTM-patched model, as JSON."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return schema(
            node_id="SDTM_RunReport",
            display_name="SDTM Run Report",
            category=CATEGORY,
            search_aliases=SEARCH_ALIASES,
            description="What SDTM did in the sampling run that produced the given LATENT: image tokens per "
                        "phase, FLOP-model speedup, wall time, cache use; a summary is shown in the node.",
            is_output_node=True,
            inputs=[
                io.Model.Input("model", tooltip="The MODEL output of an SDTM node (or a model cloned from it) "
                                                "that the sampler used."),
                io.Latent.Input("samples", optional=True,
                                tooltip="The sampler's output LATENT: the report is the run that produced it "
                                        "(several samplers may share one patched model). Without it, the model's "
                                        "newest run."),
            ],
            outputs=[io.String.Output(display_name="report", tooltip="The run's statistics as JSON text.")],
        )

    @classmethod
    def execute(cls, model, samples=None) -> io.NodeOutput:
        report = run_of_latent(model, samples, "samples").report
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
    scheduled = list(range(first, first + count))
    ran = report.get("steps_run", scheduled)
    head = f"SDTM {report['label']}: {count} steps ({_step_ranges(scheduled)})"
    if report.get("continued"):
        head += ", continuing the run that stopped at step " + str(first)
    lines = [head + f", seed {report['seed']}"]
    if report.get("afresh_because"):
        lines.append(f"started afresh, not as the continuation of the part that stopped at its first sigma: "
                     f"{report['afresh_because']}")
    if ran != scheduled:  # dpm_fast / dpm_adaptive pick their own points within the schedule
        lines.append(f"the sampler evaluated the model within steps {_step_ranges(ran) or 'none'} of the schedule "
                     "(it chooses its own points)")
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
    cache, memory = report["cache"], report.get("memory", {})
    lines.append(f"cache {cache['peak_bytes'] / 2**20:.1f} MiB peak, {cache['blends']} blends"
                 if cache["stores"] else "cache off")
    if memory:
        lines.append(f"state {memory['peak_bytes'] / 2**20:.1f} MiB peak (cache, counters, merge map "
                     f"{memory['merge_map_bytes'] / 2**20:.1f} MiB); kept for continuations "
                     f"{report.get('carried_bytes', 0) / 2**20:.1f} MiB")
    return "\n".join(lines)


NODES = [SDTMApply, SDTMApplyAdvanced, SDTMRunReport, SDTMMergeMap]
