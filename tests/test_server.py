"""The real ComfyUI server (main.py --cpu as a subprocess) with this pack: every API workflow runs to an
image with the tiny models swapped in, the pack's workflows are listed as templates, bad prompts get
HTTP 400 naming the input, and the demo writes its images and report.

Swapped in for speed on CPU (harness.comfy_server.with_stand_ins): each CheckpointLoaderSimple loads a
tiny random checkpoint of the matching family (SD3-medium, SD3.5-large, SD3.5-medium layouts, TAESD3 as
the VAE); the turbo workflow's TripleCLIPLoader becomes a CLIPLoader of a random CLIP-L with type sd3;
images are 256x256 instead of 1024x1024 and at most 4 steps are sampled. cfg, sampler, scheduler and
SDTM settings are the workflow's own. Each test's prompt text carries the test's name, so that no test
reuses another's cached node outputs.
"""
import copy
import json
import os

import numpy as np
import pytest
from PIL import Image

from commands import workflow_api as wa
from harness.comfy_server import PromptError, _shadow_tree, describe_refusal, with_stand_ins

SIZE = 256
MAX_STEPS = 4
TWINS = sorted(wa.API_DIR.glob("*.json"))


def with_tiny_models(prompt: dict, tiny: dict, tag: str) -> dict:
    return with_stand_ins(prompt, tiny, SIZE, MAX_STEPS, tag)


def twin(name: str) -> dict:
    return wa.load_json(wa.API_DIR / f"{name}.json")


@pytest.mark.parametrize("path", TWINS, ids=[p.stem for p in TWINS])
def test_api_workflow_runs_to_an_image(server, models, path):
    prompt = with_tiny_models(wa.load_json(path), models["tiny"], path.stem)
    run = server.run_prompt(prompt, timeout=600)
    saves = [nid for nid, node in prompt.items() if node["class_type"] == "SaveImage"]
    saved = [image for nid in saves for image in run.history["outputs"][nid]["images"]]
    assert len(saved) == len(saves)
    for image in saved:
        with Image.open(server.output_path(image)) as picture:
            assert picture.size == (SIZE, SIZE)
    for nid in (nid for nid, node in prompt.items() if node["class_type"] == "SDTM_RunReport"):
        report = json.loads(run.texts(nid)[0])
        steps = next(n for n in prompt.values() if n["class_type"] == "KSampler")["inputs"]["steps"]
        assert report["num_steps"] == steps and report["model_calls"] > 0
        assert sum(len(p["steps"]) for p in report["phases"].values()) == steps


def test_the_server_lists_the_packs_workflows_as_templates(server):
    templates = server.get("/api/workflow_templates")
    assert sorted(templates["ComfyUI-SDTM"]) == sorted(p.stem for p in wa.ui_workflows())
    for path in wa.ui_workflows():
        assert server.get(f"/api/workflow_templates/ComfyUI-SDTM/{path.name}") == json.loads(path.read_text())
        status, _ = server.request("GET", f"/api/workflow_templates/ComfyUI-SDTM/{path.stem}.jpg")
        assert status == 200  # the thumbnail the templates browser asks for


def test_the_servers_definitions_convert_the_ui_files_to_the_committed_twins(server):
    assert wa.stale_twins(server.get("/object_info")) == []


@pytest.mark.parametrize("class_type,name,value", [
    ("SDTM_Apply", "start_percent", 1.5),
    ("SDTM_Apply", "ratio", 2.0),
    ("KSampler", "steps", 0),
    ("CheckpointLoaderSimple", "ckpt_name", "no_such_model.safetensors"),
])
def test_a_bad_input_is_refused_with_http_400_naming_it(server, models, class_type, name, value):
    prompt = with_tiny_models(twin("sd3_medium_sdtm"), models["tiny"], "bad input")
    (node_id,) = [nid for nid, node in prompt.items() if node["class_type"] == class_type]
    prompt[node_id]["inputs"][name] = value
    with pytest.raises(PromptError) as caught:
        server.queue_prompt(prompt)
    assert caught.value.status == 400
    errors = caught.value.body["node_errors"][node_id]["errors"]
    assert any(e["extra_info"].get("input_name") == name for e in errors), errors
    assert f"node {node_id} ({class_type}) input {name}:" in str(caught.value)


def test_an_unknown_node_type_and_a_missing_link_are_refused(server, models):
    prompt = with_tiny_models(twin("sd3_medium_sdtm"), models["tiny"], "unknown")
    (sdtm,) = [nid for nid, node in prompt.items() if node["class_type"] == "SDTM_Apply"]
    unknown = {**prompt, sdtm: {"class_type": "SDTM_Nope", "inputs": prompt[sdtm]["inputs"]}}
    with pytest.raises(PromptError, match="SDTM_Nope") as caught:
        server.queue_prompt(unknown)
    assert caught.value.status == 400
    dangling = copy.deepcopy(prompt)
    dangling[sdtm]["inputs"]["model"] = ["999", 0]
    with pytest.raises(PromptError) as caught:
        server.queue_prompt(dangling)
    assert caught.value.status == 400


def test_describe_refusal_lists_every_node_error():
    body = {"error": {"message": "Prompt outputs failed validation", "details": ""},
            "node_errors": {"5": {"class_type": "KSampler", "errors": [
                {"message": "Value smaller than min", "details": "steps", "extra_info": {"input_name": "steps"}},
                {"message": "Value not in list", "details": "sampler_name",
                 "extra_info": {"input_name": "sampler_name"}}]}}}
    text = describe_refusal(body)
    assert "node 5 (KSampler) input steps" in text and "node 5 (KSampler) input sampler_name" in text


def test_the_server_writes_only_into_its_own_folders(server):
    """It ran prompts above: images went to its output folder, none to the ComfyUI tree's."""
    assert any(server.dirs["output"].rglob("*.png"))
    tree_output = server.tree / "output"
    new_files = [p for p in tree_output.rglob("*") if p.is_file() and p.stat().st_mtime >= server.started_at] \
        if tree_output.exists() else []
    assert new_files == []


def test_main_py_runs_from_a_shadow_without_the_trees_extra_model_paths(tmp_path):
    tree = tmp_path / "tree"
    (tree / "comfy").mkdir(parents=True)
    (tree / "main.py").write_text("# main")
    (tree / "extra_model_paths.yaml").write_text("other: {base_path: /nowhere}")
    shadow = _shadow_tree(tree, tmp_path / "shadow")
    assert not (shadow / "extra_model_paths.yaml").exists()
    assert (shadow / "main.py").is_file() and not (shadow / "main.py").is_symlink()
    assert (shadow / "comfy").resolve() == (tree / "comfy").resolve()


def with_advanced_sampler(prompt: dict) -> dict:
    """The prompt with its KSampler replaced by the equivalent KSamplerAdvanced (seed -> noise_seed)."""
    prompt = copy.deepcopy(prompt)
    (nid,) = [nid for nid, node in prompt.items() if node["class_type"] == "KSampler"]
    inputs = dict(prompt[nid]["inputs"])
    inputs["noise_seed"] = inputs.pop("seed")
    inputs.pop("denoise")
    inputs.update(add_noise="enable", start_at_step=0, end_at_step=10000, return_with_leftover_noise="disable")
    prompt[nid] = {**prompt[nid], "class_type": "KSamplerAdvanced", "inputs": inputs}
    return prompt


def test_the_demo_reads_steps_and_seed_from_either_sampler():
    from commands.demo import sampler_settings
    prompt = twin("sd3_medium_sdtm")
    (nid,) = [nid for nid, node in prompt.items() if node["class_type"] == "KSampler"]
    plain = (nid, prompt[nid]["inputs"]["steps"], prompt[nid]["inputs"]["seed"])
    assert sampler_settings(prompt) == plain
    assert sampler_settings(with_advanced_sampler(prompt)) == plain


@pytest.mark.parametrize("model,sampler", [("photo", "KSampler"), ("tiny", "KSamplerAdvanced")])
def test_the_demo_writes_images_and_a_report(tmp_path, model, sampler):
    from commands.demo import SMALL_MODEL_TIMING, parse_args, run_demo
    out = tmp_path / "demo"
    workflow = tmp_path / "workflow.json"
    prompt = twin("sd3_medium_sdtm")
    workflow.write_text(json.dumps(prompt if sampler == "KSampler" else with_advanced_sampler(prompt)))
    report = run_demo(parse_args(["--out", str(out), "--model", model, "--size", "128", "--steps", "3",
                                  "--workflow", str(workflow)]))
    for name in ("with_sdtm.png", "without_sdtm.png", "comparison.png", "report.md", "report.json"):
        assert (out / name).is_file(), name
    saved = json.loads((out / "report.json").read_text())
    assert saved["model"]["source"] == model and saved["steps"] == 3 and (saved["width"], saved["height"]) == (128, 128)
    assert saved["seed"] == next(n for n in prompt.values() if n["class_type"] == "KSampler")["inputs"]["seed"]
    # three timed runs per side (the sampler's time comes from the websocket events as this process receives
    # them, the prompt's from the server's timestamps: on a loaded machine the first can exceed the second)
    assert saved["repeats"] == 3
    for side in ("with_sdtm", "without_sdtm"):
        sampler_runs, prompt_runs = saved[side]["sampler_seconds"]["runs"], saved[side]["prompt_seconds"]["runs"]
        assert len(sampler_runs) == len(prompt_runs) == 3
        assert all(s > 0 for s in sampler_runs) and all(p > 0 for p in prompt_runs)
        assert saved[side]["sampler_seconds"]["median"] == pytest.approx(sorted(sampler_runs)[1], abs=1e-4)
        assert (saved[side]["sampler_seconds"]["min"], saved[side]["sampler_seconds"]["max"]) == pytest.approx(
            (min(sampler_runs), max(sampler_runs)), abs=1e-4)
    # the headline is the ratio of the medians, not of one pair of runs
    medians = [sorted(saved[side]["sampler_seconds"]["runs"])[1] for side in ("without_sdtm", "with_sdtm")]
    assert saved["speedup"] == pytest.approx(medians[0] / medians[1], rel=1e-3)
    assert len(saved["speedup_per_repeat"]) == 3
    assert saved["sdtm_report"]["num_steps"] == 3 and saved["merged_tokens"]
    assert saved["comfyui_version"] == report["comfyui_version"] != "unknown"
    text = (out / "report.md").read_text()
    assert "| sampler (KSampler node) seconds, median (min-max) |" in text and SMALL_MODEL_TIMING in text
    with Image.open(out / "with_sdtm.png") as image:
        assert image.size == (128, 128)
    # The report names the size of the images it shows (the written PNGs) and of the pictures the sampler made:
    # the photo fixture's 32x32 pixel pictures (--size 128 is the latent's 128 / 4) are written 4x enlarged.
    made = (saved["generated_width"], saved["generated_height"])
    assert made == ((32, 32) if model == "photo" else (128, 128))
    for name in ("with_sdtm.png", "without_sdtm.png"):
        with Image.open(out / name) as image:
            assert image.size == (saved["width"], saved["height"]), name
            pixels = np.asarray(image.convert("RGB"))
        scale = saved["width"] // made[0]
        assert (made[0] * scale, made[1] * scale) == image.size, name
        assert np.array_equal(pixels, pixels[::scale, ::scale].repeat(scale, 0).repeat(scale, 1)), name
    shown = " pixel images (shown enlarged to 128x128)" if model == "photo" else ""
    assert f"\n- {made[0]}x{made[1]}{shown}, 3 steps, seed {saved['seed']}\n" in text
    assert not (out / "work" / "server" / "output").exists()
    assert os.path.getsize(out / "comparison.png") > 0
