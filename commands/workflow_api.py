"""UI-format workflows (what the ComfyUI editor saves and users drag in) -> API-format prompts (what
POST /prompt takes), checked against the real node definitions (ComfyUI's GET /object_info).

    python -m commands.workflow_api check            # every workflows/*.json is valid, its twin and properties current
    python -m commands.workflow_api build            # (re)write workflows/api/<name>.json and the UI files' properties
    python -m commands.workflow_api convert FILE.json [-o OUT.json]

Node definitions come from the real ComfyUI imported in this process with this pack loaded (or, with
--server URL, from a running server). Model-file choices (ckpt_name, clip_name...) list what is
installed, so the official model file names in MODEL_FILES are offered as empty placeholder files.
The widget rules are the editor's own: one value per widget input (INT, FLOAT, STRING, BOOLEAN, a
combo) in the definition's input order, required inputs first, and an extra "control after generate"
value after each input that has one (an INT named seed or noise_seed unless the definition says
otherwise, or any input whose definition sets control_after_generate).
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
WORKFLOWS = REPO / "workflows"
API_DIR = WORKFLOWS / "api"

# The model files the workflows name (the names ComfyUI's own SD3 / SD3.5 examples use): file name ->
# (models/ folder, official download). The workflows' loader nodes carry these as their "models" property,
# from which the editor offers to download what is missing (it accepts huggingface.co links to .safetensors).
_HF = "https://huggingface.co"
_SD3 = f"{_HF}/stabilityai/stable-diffusion-3-medium/resolve/main"
_SD35_TURBO = f"{_HF}/stabilityai/stable-diffusion-3.5-large-turbo/resolve/main"
_SD35_FP8 = f"{_HF}/Comfy-Org/stable-diffusion-3.5-fp8/resolve/main"
MODEL_DOWNLOADS = {
    "sd3_medium_incl_clips_t5xxlfp8.safetensors": ("checkpoints", f"{_SD3}/sd3_medium_incl_clips_t5xxlfp8.safetensors"),
    "sd3.5_large_fp8_scaled.safetensors": ("checkpoints", f"{_SD35_FP8}/sd3.5_large_fp8_scaled.safetensors"),
    "sd3.5_large_turbo.safetensors": ("checkpoints", f"{_SD35_TURBO}/sd3.5_large_turbo.safetensors"),
    "sd3.5_medium_incl_clips_t5xxlfp8scaled.safetensors": (
        "checkpoints", f"{_SD35_FP8}/sd3.5_medium_incl_clips_t5xxlfp8scaled.safetensors"),
    "clip_l.safetensors": ("text_encoders", f"{_SD35_FP8}/text_encoders/clip_l.safetensors"),
    "clip_g.safetensors": ("text_encoders", f"{_SD35_FP8}/text_encoders/clip_g.safetensors"),
    "t5xxl_fp16.safetensors": ("text_encoders", f"{_SD35_FP8}/text_encoders/t5xxl_fp16.safetensors"),
}
MODEL_FILES = {kind: [name for name, (folder, _) in MODEL_DOWNLOADS.items() if folder == kind]
               for kind in dict.fromkeys(folder for folder, _ in MODEL_DOWNLOADS.values())}
MODEL_SUFFIXES = (".safetensors", ".sft", ".ckpt", ".pt", ".pth", ".bin", ".gguf")
CORE_ID = "comfy-core"  # the Registry id of ComfyUI's own nodes

WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}
CONTROL_VALUES = ("fixed", "increment", "decrement", "randomize")
FRONTEND_ONLY = {"Note", "MarkdownNote"}  # editor-only nodes, never sent to the server
REROUTE = "Reroute"
MODE_ALWAYS, MODE_NEVER, MODE_BYPASS = 0, 2, 4


class WorkflowError(ValueError):
    """A workflow that cannot be converted; ``problems`` lists every problem found, one per line."""

    def __init__(self, source: str, problems: list[str]) -> None:
        super().__init__(f"{source}:" + ("\n  " if len(problems) > 1 else " ") + "\n  ".join(problems))
        self.problems = problems


# ---------------------------------------------------------------------------------------------
# Node definitions
# ---------------------------------------------------------------------------------------------
def input_spec(definition: dict, name: str) -> tuple[str | list, dict]:
    """(type, options) of a definition's input; a combo's type is its list of choices."""
    for section in ("required", "optional"):
        spec = definition.get("input", {}).get(section, {}).get(name)
        if spec is not None:
            kind = spec[0]
            options = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
            if kind == "COMBO":  # V3 nodes: ["COMBO", {"options": [...]}]
                kind = list(options.get("options", []))
            return kind, options
    raise KeyError(name)


def input_names(definition: dict) -> list[str]:
    order = definition.get("input_order") or {
        s: list(definition.get("input", {}).get(s, {})) for s in ("required", "optional")}
    return [name for section in ("required", "optional") for name in order.get(section, [])]


def is_widget(kind, options: dict) -> bool:
    return (isinstance(kind, list) or kind in WIDGET_TYPES) and not options.get("forceInput")


def has_control(name: str, kind, options: dict) -> bool:
    """The editor's rule for the extra "control after generate" widget."""
    flag = options.get("control_after_generate")
    if kind == "INT":
        return bool(flag) if flag is not None else name in ("seed", "noise_seed")
    return bool(flag)


def widget_layout(definition: dict) -> list[tuple[str, bool]]:
    """(input name, is the control value) for each entry of the editor's widgets_values."""
    layout = []
    for name in input_names(definition):
        kind, options = input_spec(definition, name)
        if is_widget(kind, options):
            layout.append((name, False))
            if has_control(name, kind, options):
                layout.append((name, True))
    return layout


def check_value(name: str, kind, options: dict, value) -> str | None:
    """Why a widget value does not fit its input, or None."""
    if isinstance(kind, list):
        return None if value in kind else f"{name} must be one of {kind}, got {value!r}"
    if kind == "INT":
        if isinstance(value, bool) or not isinstance(value, int):
            return f"{name} must be an integer, got {value!r}"
    elif kind == "FLOAT":
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            return f"{name} must be a number, got {value!r}"
    elif kind == "STRING":
        return None if isinstance(value, str) else f"{name} must be text, got {value!r}"
    elif kind == "BOOLEAN":
        return None if isinstance(value, bool) else f"{name} must be true or false, got {value!r}"
    lo, hi = options.get("min"), options.get("max")
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        return f"{name} must be in [{lo}, {hi}], got {value}"
    return None


def types_match(output_type: str, input_type) -> bool:
    if isinstance(input_type, list):  # a combo fed by a link
        return output_type in ("COMBO", "*") or isinstance(output_type, list)
    outs, ins = set(str(output_type).split(",")), set(str(input_type).split(","))
    return "*" in outs or "*" in ins or bool(outs & ins)


# ---------------------------------------------------------------------------------------------
# UI format
# ---------------------------------------------------------------------------------------------
def _links(workflow: dict) -> dict[int, tuple[int, int, int, int, str]]:
    """link id -> (from node, from slot, to node, to slot, type); list or object form."""
    links = {}
    for link in workflow.get("links", []):
        if isinstance(link, dict):
            links[link["id"]] = (link["origin_id"], link["origin_slot"], link["target_id"], link["target_slot"],
                                 link["type"])
        else:
            links[link[0]] = tuple(link[1:6])
    return links


def _shape_problems(workflow) -> list[str]:
    if not isinstance(workflow, dict):
        return [f"a workflow must be a JSON object, got {type(workflow).__name__}"]
    is_prompt = all(isinstance(v, dict) and "class_type" in v for v in workflow.values())
    if "nodes" not in workflow and workflow and is_prompt:
        return ["this is an API-format prompt (node id -> class_type/inputs), not a UI workflow: "
                "POST it to /prompt as it is"]
    problems = []
    if not isinstance(workflow.get("nodes"), list):
        problems.append("a UI workflow needs a 'nodes' list")
    if not isinstance(workflow.get("links", []), list):
        problems.append("'links' must be a list")
    for i, node in enumerate(workflow.get("nodes") or []):
        if not isinstance(node, dict) or "id" not in node or "type" not in node:
            problems.append(f"nodes[{i}] needs an 'id' and a 'type'")
    for i, link in enumerate(workflow.get("links") or []):
        if not (isinstance(link, dict) or (isinstance(link, list) and len(link) >= 6)):
            problems.append(f"links[{i}] must be [id, from node, from slot, to node, to slot, type]")
    return problems


def check_workflow(workflow, object_info: dict) -> list[str]:
    """Every problem of a UI workflow against the node definitions: unknown node types, widget values
    that do not line up with the node's inputs (count, type, range, choices), links between slots
    that do not exist or whose types differ, required inputs left unconnected."""
    problems = _shape_problems(workflow)
    if problems:
        return problems
    nodes = {node["id"]: node for node in workflow["nodes"]}
    links = _links(workflow)
    for node in workflow["nodes"]:
        where = f"node {node['id']} ({node['type']})"
        if node["type"] in FRONTEND_ONLY or node["type"] == REROUTE:
            continue
        definition = object_info.get(node["type"])
        if definition is None:
            problems.append(f"{where}: no such node type in this ComfyUI (missing custom node pack?)")
            continue
        problems += [f"{where}: {p}" for p in _widget_problems(node, definition)]
        connected = set()
        for slot in node.get("inputs", []):
            if slot.get("link") is None:
                continue
            try:
                kind, _ = input_spec(definition, slot["name"])
            except KeyError:
                problems.append(f"{where}: input {slot['name']!r} is not an input of {node['type']}")
                continue
            connected.add(slot["name"])
            link = links.get(slot["link"])
            if link is None:
                problems.append(f"{where}: input {slot['name']} uses link {slot['link']}, which does not exist")
                continue
            source = nodes.get(link[0])
            if source is None:
                problems.append(f"{where}: input {slot['name']} comes from node {link[0]}, which does not exist")
                continue
            out_type = _output_type(source, link[1], object_info, nodes, links)
            if out_type is None:
                problems.append(f"{where}: input {slot['name']} comes from output {link[1]} of node {link[0]} "
                                f"({source['type']}), which it does not have")
            elif not types_match(out_type, kind):
                takes = kind if not isinstance(kind, list) else "COMBO"
                problems.append(f"{where}: input {slot['name']} takes {takes}, "
                                f"but node {link[0]} ({source['type']}) output {link[1]} gives {out_type}")
        for name in definition.get("input_order", {}).get("required", []):
            kind, options = input_spec(definition, name)
            if not is_widget(kind, options) and name not in connected and node.get("mode", 0) == MODE_ALWAYS:
                problems.append(f"{where}: required input {name} ({kind}) is not connected")
    return problems


def _widget_problems(node: dict, definition: dict) -> list[str]:
    layout = widget_layout(definition)
    values = node.get("widgets_values", [])
    if isinstance(values, dict):  # some front ends save {name: value}
        values = [values.get(name) for name, control in layout if not control]
        layout = [(name, False) for name, control in layout if not control]
    if len(values) != len(layout):
        expected = ", ".join(f"{n} (control after generate)" if c else n for n, c in layout) or "none"
        return [f"has {len(values)} widget values, its inputs need {len(layout)}: {expected}"]
    problems = []
    for (name, control), value in zip(layout, values):
        if control:
            if value not in CONTROL_VALUES:
                problems.append(f"control after generate of {name} must be one of {list(CONTROL_VALUES)}, "
                                f"got {value!r}")
            continue
        kind, options = input_spec(definition, name)
        problem = check_value(name, kind, options, value)
        if problem:
            problems.append(problem)
    return problems


def _output_type(node: dict, slot: int, object_info: dict, nodes: dict, links: dict):
    if node["type"] == REROUTE:
        upstream = next((i["link"] for i in node.get("inputs", []) if i.get("link") is not None), None)
        if upstream is None or upstream not in links:
            return "*"
        src = links[upstream]
        return _output_type(nodes[src[0]], src[1], object_info, nodes, links) if src[0] in nodes else None
    definition = object_info.get(node["type"])
    if definition is None:
        return None
    outputs = definition.get("output", [])
    return outputs[slot] if 0 <= slot < len(outputs) else None


def ui_to_api(workflow, object_info: dict, source: str = "workflow") -> dict:
    """The API-format prompt of a UI workflow, as the editor's "Export (API)" builds it: muted and
    editor-only nodes dropped, reroutes and bypassed nodes bridged, widget values by input name, a
    linked widget input taking its link. Raises WorkflowError listing every problem."""
    problems = check_workflow(workflow, object_info)
    if problems:
        raise WorkflowError(source, problems)
    nodes = {node["id"]: node for node in workflow["nodes"]}
    links = _links(workflow)
    prompt = {}
    for node in sorted(workflow["nodes"], key=lambda n: n["id"]):
        if node["type"] in FRONTEND_ONLY or node["type"] == REROUTE or node.get("mode", 0) != MODE_ALWAYS:
            continue
        definition = object_info[node["type"]]
        inputs = {}
        values = node.get("widgets_values", [])
        layout = widget_layout(definition)
        if isinstance(values, dict):
            inputs.update({name: values[name] for name, control in layout if not control})
        else:
            inputs.update({name: value for (name, control), value in zip(layout, values) if not control})
        for slot in node.get("inputs", []):
            if slot.get("link") is None:
                continue
            upstream = _resolve(links[slot["link"]], nodes, links, object_info)
            if upstream is None:
                inputs.pop(slot["name"], None)  # a muted source: the input is left out, as the editor does
            else:
                inputs[slot["name"]] = [str(upstream[0]), upstream[1]]
        title = node.get("title") or definition.get("display_name") or node["type"]
        prompt[str(node["id"])] = {"inputs": inputs, "class_type": node["type"], "_meta": {"title": title}}
    return prompt


def _resolve(link: tuple, nodes: dict, links: dict, object_info: dict):
    """(node id, output slot) that really feeds a link: through reroutes and bypassed nodes (whose
    first input of the output's type passes through); None when the source is muted."""
    source_id, slot = link[0], link[1]
    source = nodes[source_id]
    if source["type"] == REROUTE or source.get("mode", 0) == MODE_BYPASS:
        out_type = link[4]
        for inp in source.get("inputs", []):
            linked = inp.get("link") is not None
            if linked and (source["type"] == REROUTE or types_match(links[inp["link"]][4], out_type)):
                return _resolve(links[inp["link"]], nodes, links, object_info)
        return None
    if source.get("mode", 0) == MODE_NEVER:
        return None
    return source_id, slot


# ---------------------------------------------------------------------------------------------
# Files, twins and node definitions
# ---------------------------------------------------------------------------------------------
# ---------------------------------------------------------------------------------------------
# Registry properties: which pack and version each node comes from, and where its model files are
# ---------------------------------------------------------------------------------------------
def pack_identity() -> tuple[str, str]:
    """(Registry id, version) of this pack, from pyproject.toml."""
    import tomllib
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    return project["name"], project["version"]


def node_properties(node: dict, object_info: dict) -> dict:
    """The node's ``properties`` with ``cnr_id`` / ``ver`` (this pack's id and version for its own nodes,
    comfy-core and the ComfyUI version the pack is tested on for the rest) and, when its widgets name a
    model file, ``models`` (name, url, directory). Other properties are kept."""
    from .get_comfyui import VERSION as COMFYUI_VERSION
    definition = object_info.get(node["type"], {})
    ours = str(definition.get("python_module", "")).startswith("custom_nodes")
    cnr_id, ver = pack_identity() if ours else (CORE_ID, COMFYUI_VERSION)
    properties = {key: value for key, value in node.get("properties", {}).items()
                  if key not in ("cnr_id", "ver", "models")}
    properties.update(cnr_id=cnr_id, ver=ver)
    values = node.get("widgets_values") if isinstance(node.get("widgets_values"), list) else []
    models = [{"name": v, "url": MODEL_DOWNLOADS[v][1], "directory": MODEL_DOWNLOADS[v][0]}
              for v in values if isinstance(v, str) and v in MODEL_DOWNLOADS]
    if models:
        properties["models"] = models
    return properties


def with_registry_properties(workflow: dict, object_info: dict) -> bool:
    """Give every node its Registry properties (node_properties), in place. True if the workflow changed."""
    changed = False
    for node in workflow["nodes"]:
        properties = node_properties(node, object_info)
        if node.get("properties") != properties:
            node["properties"] = properties
            changed = True
    return changed


def registry_property_problems(workflow: dict, object_info: dict) -> list[str]:
    """One line per node whose cnr_id / ver / models differ from node_properties, and per model file a
    widget names that has no known download."""
    problems = []
    for node in workflow["nodes"]:
        where = f"node {node['id']} ({node['type']})"
        have, want = node.get("properties", {}), node_properties(node, object_info)
        for key in ("cnr_id", "ver", "models"):
            if have.get(key) != want.get(key):
                problems.append(f"{where}: properties.{key} is {have.get(key)!r}, should be {want.get(key)!r}")
        for value in node.get("widgets_values") or []:
            if isinstance(value, str) and value.endswith(MODEL_SUFFIXES) and value not in MODEL_DOWNLOADS:
                problems.append(f"{where}: model file {value} has no download in "
                                "commands/workflow_api.py MODEL_DOWNLOADS")
    return problems


def load_json(path: Path):
    """A JSON file, or WorkflowError naming the file and the position of the syntax error."""
    try:
        return json.loads(Path(path).read_text())
    except OSError as e:
        raise WorkflowError(str(path), [f"cannot read it: {e.strerror}"]) from None
    except json.JSONDecodeError as e:
        raise WorkflowError(str(path), [f"not valid JSON: {e.msg} at line {e.lineno} column {e.colno}"]) from None


def ui_workflows(folder: Path = WORKFLOWS) -> list[Path]:
    return sorted(Path(folder).glob("*.json"))


def twin_path(ui_path: Path) -> Path:
    return Path(ui_path).parent / "api" / Path(ui_path).name


def dump(prompt: dict) -> str:
    return json.dumps(prompt, indent=2) + "\n"


def pin_titles(workflow: dict, object_info: dict) -> bool:
    """Give every node without a title its current display name, so that the twin's ``_meta`` titles do
    not change with the ComfyUI version (display names do). True if the workflow changed."""
    changed = False
    for node in workflow["nodes"]:
        definition = object_info.get(node["type"])
        if not node.get("title") and definition is not None:
            node["title"] = definition.get("display_name") or node["type"]
            changed = True
    return changed


def stale_twins(object_info: dict, folder: Path = WORKFLOWS) -> list[str]:
    """One line per UI workflow whose API twin is missing or differs from its conversion, and per node
    whose Registry properties (cnr_id, ver, models) are missing or out of date."""
    stale = []
    for ui_path in ui_workflows(folder):
        twin = twin_path(ui_path)
        workflow = load_json(ui_path)
        where = ui_path.relative_to(folder.parent)
        stale += [f"{where}: {p}" for p in registry_property_problems(workflow, object_info)]
        want = dump(ui_to_api(workflow, object_info, ui_path.name))
        if not twin.is_file():
            stale.append(f"{twin.relative_to(folder.parent)} is missing")
        elif twin.read_text() != want:
            stale.append(f"{twin.relative_to(folder.parent)} differs from the conversion of {ui_path.name}")
    return stale


def object_info_in_process(model_files: dict[str, list[str]] | None = None) -> dict:
    """GET /object_info from the real ComfyUI in this process (its PromptServer's own route, served by
    aiohttp's test server), with this pack loaded and ``model_files`` (kind -> file names, default
    MODEL_FILES) offered as empty placeholder files."""
    import asyncio
    import tempfile

    from harness.comfy_env import import_comfy, load_pack, register_model_dir
    import_comfy()
    load_pack()
    import server
    from aiohttp.test_utils import TestClient, TestServer
    placeholders = Path(tempfile.mkdtemp(prefix="sdtm-model-names-"))
    for kind, names in (MODEL_FILES if model_files is None else model_files).items():
        (placeholders / kind).mkdir(exist_ok=True)
        for name in names:
            (placeholders / kind / name).touch()
        register_model_dir(kind, placeholders / kind)

    async def fetch() -> dict:
        prompt_server = server.PromptServer(asyncio.get_running_loop())
        quiet = logging.getLogger()
        level = quiet.level
        quiet.setLevel(logging.CRITICAL)  # the front-end checks log about optional template packages
        try:
            prompt_server.add_routes()
        finally:
            quiet.setLevel(level)
        async with TestClient(TestServer(prompt_server.app)) as client:
            response = await client.get("/object_info")
            return await response.json()

    return asyncio.run(fetch())


def object_info_from_server(url: str) -> dict:
    import urllib.request
    with urllib.request.urlopen(url.rstrip("/") + "/object_info", timeout=60) as response:
        return json.loads(response.read())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m commands.workflow_api", description=__doc__.split("\n\n")[0])
    parser.add_argument("--server", help="take node definitions from this running ComfyUI (http://host:port)")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("check", help="check every workflows/*.json and that its API twin is current")
    sub.add_parser("build", help="write workflows/api/<name>.json for every workflows/*.json (and give "
                                 "untitled nodes their display name as title, every node its Registry "
                                 "properties: cnr_id, ver, models)")
    convert = sub.add_parser("convert", help="convert one UI workflow file")
    convert.add_argument("file", type=Path)
    convert.add_argument("-o", "--output", type=Path, help="write here instead of printing")
    args = parser.parse_args(argv)
    info = object_info_from_server(args.server) if args.server else object_info_in_process()
    try:
        if args.command == "convert":
            text = dump(ui_to_api(load_json(args.file), info, str(args.file)))
            if args.output:
                args.output.write_text(text)
            else:
                sys.stdout.write(text)
        elif args.command == "build":
            for ui_path in ui_workflows():
                workflow = load_json(ui_path)
                titled = pin_titles(workflow, info)
                if with_registry_properties(workflow, info) or titled:
                    ui_path.write_text(json.dumps(workflow, indent=2) + "\n")
                    print(f"gave every node of {ui_path.relative_to(REPO)} an explicit title and its Registry "
                          "properties (cnr_id, ver, models)")
                twin = twin_path(ui_path)
                twin.parent.mkdir(exist_ok=True)
                twin.write_text(dump(ui_to_api(workflow, info, ui_path.name)))
                print(f"wrote {twin.relative_to(REPO)}")
        else:
            stale = stale_twins(info)
            for line in stale:
                print(line, file=sys.stderr)
            if stale:
                print("run: python -m commands.workflow_api build", file=sys.stderr)
                return 1
            print(f"{len(ui_workflows())} workflows valid, API twins current")
    except WorkflowError as e:
        print(e, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
