"""The real ComfyUI web editor (comfyui-frontend-package, served by the real server) in headless
Chromium driven by Playwright: every UI workflow loads with no missing node, no warning or error pop-up (a
check proven to catch them) and with its widget values where the editor expects them, the editor's own API
conversion equals the committed twin (less the _meta keys the backend ignores), the SDTM
node shows its inputs, the SD3 workflow queued from the editor (tiny stand-in checkpoint, 256x256,
at most 4 steps, see tests/test_server.py) finishes with an image, and every SDTM node's docs page opens in
the editor's docs panel in English and Chinese. Frontends 1.32.9 (ComfyUI 0.3.75) and 1.58.1 (ComfyUI 0.33.0,
commands/test_0.33.sh). Screenshots go to artifacts/browser/.
"""
import json
from pathlib import Path

import pytest

from commands import node_docs
from commands import workflow_api as wa
from harness.comfy_editor import CHROMIUM, Editor
from harness.comfy_env import PACK_NAME

REPO = Path(__file__).resolve().parents[1]
ARTIFACTS = REPO / "artifacts" / "browser"
NAMES = [p.stem for p in wa.ui_workflows()]
SIZE, MAX_STEPS = 256, 4


@pytest.fixture(scope="module")
def object_info(server):
    return server.get("/object_info")


@pytest.fixture(scope="module")
def editor(server):
    assert Path(CHROMIUM).is_file(), f"Chromium is needed at {CHROMIUM}: apt-get install -y chromium"
    with Editor(server) as running:
        yield running


@pytest.fixture(autouse=True)
def no_page_errors(request):
    yield
    if "editor" in request.fixturenames:
        assert request.getfixturevalue("editor").page_errors == []


def expected_widgets(node: dict, definition: dict) -> list:
    """[widget name, value] as the editor should show a saved node: the converter's layout."""
    return [["control_after_generate" if control else name, value]
            for (name, control), value in zip(wa.widget_layout(definition), node.get("widgets_values", []))]


@pytest.mark.parametrize("name", NAMES)
def test_workflow_loads_with_no_missing_node_and_every_widget_in_place(editor, object_info, name):
    workflow = wa.load_json(wa.WORKFLOWS / f"{name}.json")
    loaded = editor.load(workflow)
    assert loaded["missing"] == [] and loaded["with_errors"] == [] and loaded["alerts"] == []
    for node in workflow["nodes"]:
        if node["type"] in object_info:
            assert loaded["widgets"][str(node["id"])] == expected_widgets(node, object_info[node["type"]]), node["type"]
    # api_prompt() drops the _meta keys the backend ignores (harness.comfy_editor.EDITOR_ONLY_META)
    assert editor.api_prompt() == wa.load_json(wa.twin_path(wa.WORKFLOWS / f"{name}.json"))


def test_the_sdtm_node_is_shown_with_its_inputs(editor, object_info):
    editor.load(wa.load_json(wa.WORKFLOWS / "sd3_medium_sdtm.json"))
    editor.fit_view()
    shown = editor.evaluate("""() => {
        const node = app.graph.nodes.find(n => n.type === 'SDTM_Apply');
        return {title: node.title, visible: app.canvas.visible_nodes.includes(node),
                inputs: node.inputs.filter(i => !i.widget).map(i => i.name),
                widgets: node.widgets.map(w => w.name)};
    }""")
    definition = object_info["SDTM_Apply"]
    assert shown["title"] == definition["display_name"] and shown["visible"]
    assert shown["widgets"] == [name for name, control in wa.widget_layout(definition) if not control]
    assert shown["inputs"] == [n for n in wa.input_names(definition) if n not in shown["widgets"]]
    editor.screenshot(ARTIFACTS / "sd3_medium_sdtm_loaded.png")


def test_a_bypassed_sdtm_node_converts_as_the_editor_does(editor, object_info):
    editor.load(wa.load_json(wa.WORKFLOWS / "sdtm_ab_comparison.json"))
    editor.evaluate("() => { app.graph.nodes.find(n => n.type === 'SDTM_Apply').mode = 4; }")
    assert editor.api_prompt() == wa.ui_to_api(editor.serialize(), object_info)


def test_the_sd3_workflow_queued_from_the_editor_finishes_with_an_image(editor, server, models):
    workflow = wa.load_json(wa.WORKFLOWS / "sd3_medium_sdtm.json")
    editor.load(workflow)
    by_type = {node["type"]: node["id"] for node in workflow["nodes"]}
    sampler = next(n for n in workflow["nodes"] if n["type"] == "KSampler")
    steps = min(sampler["widgets_values"][2], MAX_STEPS)
    editor.set_widget(by_type["CheckpointLoaderSimple"], "ckpt_name", models["tiny"]["sd3-medium"])
    editor.set_widget(by_type["EmptySD3LatentImage"], "width", SIZE)
    editor.set_widget(by_type["EmptySD3LatentImage"], "height", SIZE)
    editor.set_widget(by_type["KSampler"], "steps", steps)
    entry = editor.queue(timeout=600)
    (image,) = entry["outputs"][str(by_type["SaveImage"])]["images"]
    assert server.output_path(image).is_file()
    report = json.loads(entry["outputs"][str(by_type["SDTM_RunReport"])]["text"][0])
    assert report["num_steps"] == steps
    # the editor shows the finished image in the Save Image node
    editor.page.wait_for_function("(id) => (app.graph.getNodeById(id).imgs || []).length > 0",
                                  arg=by_type["SaveImage"], timeout=30_000)
    editor.fit_view()
    # the README's editor picture (docs/images/editor_sd3_sdtm.png) is this file
    editor.screenshot(ARTIFACTS / "sd3_medium_sdtm_finished.png", clip=editor.graph_box())


def test_the_run_report_node_shows_the_runs_summary(editor, models):
    workflow = wa.load_json(wa.WORKFLOWS / "sdtm_ab_comparison.json")
    editor.load(workflow)
    by_type = {}
    for node in workflow["nodes"]:
        by_type.setdefault(node["type"], []).append(node["id"])
    editor.set_widget(by_type["CheckpointLoaderSimple"][0], "ckpt_name", models["tiny"]["sd3-medium"])
    editor.set_widget(by_type["EmptySD3LatentImage"][0], "width", 128)
    editor.set_widget(by_type["EmptySD3LatentImage"][0], "height", 128)
    for sampler in by_type["KSampler"]:
        editor.set_widget(sampler, "steps", 3)
    (report_id,) = by_type["SDTM_RunReport"]
    entry = editor.queue(timeout=600)
    summary = entry["outputs"][str(report_id)]["summary"][0]
    # what the node itself displays: its read-only text box, on screen
    shown = editor.page.wait_for_function("""([id, summary]) => {
        const node = app.graph.getNodeById(id);
        const box = (node.widgets || []).find(w => w.name === 'summary');
        return box && box.element && box.element.value === summary && box.element.offsetParent !== null
            && box.element.value;
    }""", arg=[report_id, summary], timeout=30_000).json_value()
    assert shown.startswith("SDTM preset balanced: 3 steps (0-2)")
    assert "FLOP-model speedup" in shown and "wall" in shown and "cache" in shown
    editor.fit_view()
    editor.screenshot(ARTIFACTS / "run_report_summary.png", clip=editor.graph_box())


@pytest.mark.parametrize("locale", node_docs.LOCALES)
def test_every_sdtm_node_opens_its_own_docs_page_from_the_info_button(editor, locale):
    """Select each SDTM node and press the selection toolbox's info button, as a user does: the panel shows the
    pack's own page for the editor's language (HTTP 200 for that .md, the page's own title and footer, every
    picture it links loaded), not the node's description the editor falls back to."""
    version = node_docs.pack_version()
    editor.set_locale(locale)
    try:
        for node in node_docs.NODE_IDS:
            marker = node_docs.section("footer", locale, version=version, node=node)
            shown = editor.open_node_docs(node, until_text=marker)
            page = f"/extensions/{PACK_NAME}/docs/{node}/{locale}.md"
            assert {"url": page, "status": 200} in shown["responses"], (node, shown["responses"])
            page_text = (node_docs.DOCS / node / f"{locale}.md").read_text(encoding="utf-8")
            title = next(line[2:].strip() for line in page_text.splitlines() if line.startswith("# "))
            assert shown["heading"] == title and marker in shown["text"], node
            linked = {f"/extensions/{PACK_NAME}/docs/{path}" for path in node_docs.linked_images(page_text)}
            assert {image["src"] for image in shown["images"]} == linked, node
            assert all(image["naturalWidth"] > 0 for image in shown["images"]), (node, shown["images"])
            if node == "SDTM_Apply":
                # docs/images/node_docs_sdtm_apply.png (the README's picture of the panel) is the English one
                editor.screenshot(ARTIFACTS / f"node_docs_sdtm_apply_{locale}.png", clip=editor.docs_panel_box())
    finally:
        editor.close_node_docs()
        editor.set_locale("en")


def test_the_alert_check_catches_a_warning_and_an_error(editor):
    """The check that every workflow test runs after loading (Editor.alerts, through load) sees the pop-ups of
    this frontend: a workflow that fails the editor's schema check (a node's order that is not a number) raises its
    own warning, and a warning and an error raised through the editor's toast API are caught too; all are closed."""
    assert editor.evaluate("() => app.extensionManager.setting.get('Comfy.Validation.Workflows')") is True
    workflow = wa.load_json(wa.WORKFLOWS / "sd3_medium_sdtm.json")
    assert editor.load(workflow)["alerts"] == []
    broken = json.loads(json.dumps(workflow))
    broken["nodes"][0]["order"] = "first"  # not a number: the editor's workflow schema check warns
    assert any("nodes[0].order" in text for text in editor.load(broken)["alerts"])
    for severity in ("warn", "error"):
        editor.evaluate("""(severity) => app.extensionManager.toast.add(
            {severity, summary: `SDTM test ${severity}`, detail: 'raised by the test', life: 60000})""", severity)
        editor.page.wait_for_timeout(300)
        assert [text for text in editor.alerts() if f"SDTM test {severity}" in text], severity
    assert editor.alerts() == []
