"""The example workflows against the real node definitions of ComfyUI + this pack (GET /object_info of
ComfyUI's own PromptServer, in this process), the UI -> API converter and its errors, and the tiny
SD3 checkpoint that the end-to-end tests swap in."""
import json

import pytest
import torch

from commands import workflow_api as wa
from commands.demo import PATCH_NODES, REPORT_NODES, without_sdtm
from harness.tiny_sd3 import CHECKPOINT_VAES, VARIANTS, cached_tiny_checkpoint, check_tiny_checkpoint, tiny_cache_dir

UI_FILES = wa.ui_workflows()
NAMES = [p.stem for p in UI_FILES]


@pytest.fixture(scope="module")
def object_info():
    return wa.object_info_in_process()


def load(name: str) -> dict:
    return wa.load_json(wa.WORKFLOWS / f"{name}.json")


def node_of(workflow: dict, node_type: str) -> dict:
    return next(n for n in workflow["nodes"] if n["type"] == node_type)


def problems_of(workflow, object_info) -> str:
    with pytest.raises(wa.WorkflowError) as caught:
        wa.ui_to_api(workflow, object_info, "broken.json")
    return str(caught.value)


def test_there_are_workflows_and_each_has_a_twin_and_a_thumbnail():
    assert {"sd3_medium_sdtm", "sd35_large_turbo_sdtm", "sd35_large_sdtm", "sd35_medium_sdtm",
            "sdtm_ab_comparison"} <= set(NAMES)
    for path in UI_FILES:
        assert wa.twin_path(path).is_file(), path
        assert path.with_suffix(".jpg").read_bytes()[:3] == b"\xff\xd8\xff", f"{path.stem}.jpg is not a JPEG"


@pytest.mark.parametrize("name", NAMES)
def test_workflow_lines_up_with_the_node_definitions(object_info, name):
    assert wa.check_workflow(load(name), object_info) == []


def test_every_widget_value_is_checked_by_type_and_range(object_info):
    """The layout the checker uses covers every widget value of every node (nothing silently skipped)."""
    for name in NAMES:
        for node in load(name)["nodes"]:
            if node["type"] in object_info:
                assert len(wa.widget_layout(object_info[node["type"]])) == len(node.get("widgets_values", [])), \
                    (name, node["id"])


@pytest.mark.parametrize("name", NAMES)
def test_every_node_has_an_explicit_title(name):
    """Twins then carry the same _meta titles whatever the ComfyUI version's display names."""
    assert all(node.get("title") for node in load(name)["nodes"])


def test_api_twins_are_current(object_info):
    assert wa.stale_twins(object_info) == []


@pytest.mark.parametrize("name", NAMES)
def test_workflows_only_name_the_official_model_files(name):
    for node in load(name)["nodes"]:
        if node["type"] == "CheckpointLoaderSimple":
            assert node["widgets_values"][0] in wa.MODEL_FILES["checkpoints"]
        if node["type"] == "TripleCLIPLoader":
            assert set(node["widgets_values"]) <= set(wa.MODEL_FILES["text_encoders"])


@pytest.mark.parametrize("name", [n for n in NAMES if n != "sdtm_ab_comparison"])
def test_sdtm_sits_between_the_loader_and_the_sampler(name):
    prompt = wa.load_json(wa.twin_path(wa.WORKFLOWS / f"{name}.json"))
    (sampler,) = [n for n in prompt.values() if n["class_type"] == "KSampler"]
    sdtm = prompt[sampler["inputs"]["model"][0]]
    assert sdtm["class_type"] in PATCH_NODES
    assert prompt[sdtm["inputs"]["model"][0]]["class_type"] == "CheckpointLoaderSimple"


def test_ab_workflow_samples_the_same_way_with_and_without_sdtm():
    prompt = wa.load_json(wa.twin_path(wa.WORKFLOWS / "sdtm_ab_comparison.json"))
    samplers = [n["inputs"] for n in prompt.values() if n["class_type"] == "KSampler"]
    assert len(samplers) == 2
    sources = sorted(prompt[s["model"][0]]["class_type"] for s in samplers)
    assert sources == sorted(["CheckpointLoaderSimple", "SDTM_Apply"])
    strip = [{k: v for k, v in s.items() if k != "model"} for s in samplers]
    assert strip[0] == strip[1]  # seed, steps, cfg, sampler, prompts and latent all shared
    assert {"SDTM_RunReport", "SDTM_MergeMap"} <= {n["class_type"] for n in prompt.values()}


def test_without_sdtm_bridges_the_patch_and_drops_what_needs_it():
    prompt = wa.load_json(wa.twin_path(wa.WORKFLOWS / "sdtm_ab_comparison.json"))
    plain = without_sdtm(prompt)
    kinds = [n["class_type"] for n in plain.values()]
    assert not (set(kinds) & (PATCH_NODES | REPORT_NODES))
    assert kinds.count("KSampler") == 2 and kinds.count("SaveImage") == 2 and "PreviewImage" not in kinds
    for node in plain.values():
        for value in node["inputs"].values():
            assert not isinstance(value, list) or value[0] in plain


# -- the converter ----------------------------------------------------------------------------
def test_bypassed_and_muted_nodes_convert_like_the_editor(object_info):
    workflow = load("sd3_medium_sdtm")
    sdtm = node_of(workflow, "SDTM_Apply")
    sdtm["mode"] = wa.MODE_BYPASS
    prompt = wa.ui_to_api(workflow, object_info)
    assert str(sdtm["id"]) not in prompt
    loader = node_of(workflow, "CheckpointLoaderSimple")["id"]
    sampler = prompt[str(node_of(workflow, "KSampler")["id"])]
    assert sampler["inputs"]["model"] == [str(loader), 0]
    report = node_of(workflow, "SDTM_RunReport")
    report["mode"] = wa.MODE_NEVER
    assert str(report["id"]) not in wa.ui_to_api(workflow, object_info)


def test_a_reroute_is_followed(object_info):
    workflow = load("sd3_medium_sdtm")
    sampler, sdtm = node_of(workflow, "KSampler"), node_of(workflow, "SDTM_Apply")
    model_slot = next(i for i in sampler["inputs"] if i["name"] == "model")
    old = next(l for l in workflow["links"] if l[0] == model_slot["link"])
    reroute_id, new_link = workflow["last_node_id"] + 1, workflow["last_link_id"] + 1
    workflow["nodes"].append({"id": reroute_id, "type": "Reroute", "pos": [0, 0], "size": [75, 26], "mode": 0,
                              "inputs": [{"name": "", "type": "*", "link": old[0]}],
                              "outputs": [{"name": "", "type": "MODEL", "links": [new_link]}], "properties": {}})
    old[3], old[4] = reroute_id, 0
    workflow["links"].append([new_link, reroute_id, 0, sampler["id"], old[4], "MODEL"])
    model_slot["link"] = new_link
    assert wa.ui_to_api(workflow, object_info)[str(sampler["id"])]["inputs"]["model"] == [str(sdtm["id"]), 0]


def test_not_json_names_the_position(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"nodes": [}')
    with pytest.raises(wa.WorkflowError, match=r"bad.json: not valid JSON: .* line 1 column 12"):
        wa.load_json(bad)


def test_a_missing_file_is_named(tmp_path):
    with pytest.raises(wa.WorkflowError, match=r"nothing.json: cannot read it: No such file"):
        wa.load_json(tmp_path / "nothing.json")


def test_an_api_prompt_is_told_apart_from_a_ui_workflow(object_info):
    prompt = wa.load_json(wa.twin_path(wa.WORKFLOWS / "sd3_medium_sdtm.json"))
    assert "API-format prompt" in problems_of(prompt, object_info)
    assert "needs a 'nodes' list" in problems_of({"links": []}, object_info)


def test_an_unknown_node_type_is_named(object_info):
    workflow = load("sd3_medium_sdtm")
    node = node_of(workflow, "SDTM_Apply")
    node["type"] = "SDTM_DoesNotExist"
    assert f"node {node['id']} (SDTM_DoesNotExist): no such node type" in problems_of(workflow, object_info)


def test_a_missing_widget_value_lists_the_inputs(object_info):
    workflow = load("sd3_medium_sdtm")
    sampler = node_of(workflow, "KSampler")
    sampler["widgets_values"].pop(1)  # the editor's "control after generate" entry
    text = problems_of(workflow, object_info)
    assert f"node {sampler['id']} (KSampler): has 6 widget values, its inputs need 7: " \
           "seed, seed (control after generate), steps, cfg" in text


def range_text(object_info, node_type: str, name: str) -> str:
    _, options = wa.input_spec(object_info[node_type], name)
    return f"[{options['min']}, {options['max']}]"


@pytest.mark.parametrize("node_type,index,value,expected", [
    ("SDTM_Apply", 1, 2.0, lambda info: f"ratio must be in {range_text(info, 'SDTM_Apply', 'ratio')}, got 2.0"),
    ("SDTM_Apply", 0, "ludicrous", lambda info: f"preset must be one of "
                                                f"{wa.input_spec(info['SDTM_Apply'], 'preset')[0]}, got 'ludicrous'"),
    ("KSampler", 2, 2.5, lambda info: "steps must be an integer, got 2.5"),
    ("KSampler", 1, "sometimes",
     lambda info: f"control after generate of seed must be one of {list(wa.CONTROL_VALUES)}"),
    ("EmptySD3LatentImage", 0, 8,
     lambda info: f"width must be in {range_text(info, 'EmptySD3LatentImage', 'width')}, got 8"),
    ("SaveImage", 0, 7, lambda info: "filename_prefix must be text, got 7"),
])
def test_a_bad_widget_value_names_the_input_and_the_range(object_info, node_type, index, value, expected):
    workflow = load("sd3_medium_sdtm")
    node = node_of(workflow, node_type)
    node["widgets_values"][index] = value
    assert f"node {node['id']} ({node_type}): {expected(object_info)}" in problems_of(workflow, object_info)


def test_links_of_the_wrong_type_or_to_nowhere_are_named(object_info):
    workflow = load("sd3_medium_sdtm")
    sampler = node_of(workflow, "KSampler")
    positive = next(i for i in sampler["inputs"] if i["name"] == "positive")
    latent = next(i for i in sampler["inputs"] if i["name"] == "latent_image")
    positive["link"], latent["link"] = latent["link"], 999
    text = problems_of(workflow, object_info)
    assert f"node {sampler['id']} (KSampler): input positive takes CONDITIONING, but node" in text
    assert "gives LATENT" in text
    assert f"node {sampler['id']} (KSampler): input latent_image uses link 999, which does not exist" in text


def test_an_unconnected_required_input_is_named(object_info):
    workflow = load("sd3_medium_sdtm")
    decode = node_of(workflow, "VAEDecode")
    next(i for i in decode["inputs"] if i["name"] == "vae")["link"] = None
    expected = f"node {decode['id']} (VAEDecode): required input vae (VAE) is not connected"
    assert expected in problems_of(workflow, object_info)


def test_every_problem_is_reported_at_once(object_info):
    workflow = load("sd3_medium_sdtm")
    node_of(workflow, "SDTM_Apply")["widgets_values"][2] = 5.0
    node_of(workflow, "KSampler")["widgets_values"][2] = 0
    with pytest.raises(wa.WorkflowError) as caught:
        wa.ui_to_api(workflow, object_info, "two.json")
    assert len(caught.value.problems) == 2 and str(caught.value).startswith("two.json:")


def test_the_command_line_check_fails_on_a_stale_twin(tmp_path, object_info, capsys):
    folder = tmp_path / "workflows"
    (folder / "api").mkdir(parents=True)
    source = wa.WORKFLOWS / "sd3_medium_sdtm.json"
    (folder / source.name).write_text(source.read_text())
    twin = json.loads(wa.twin_path(source).read_text())
    next(n for n in twin.values() if n["class_type"] == "KSampler")["inputs"]["steps"] += 1
    (folder / "api" / source.name).write_text(wa.dump(twin))
    assert wa.stale_twins(object_info, folder) == ["workflows/api/sd3_medium_sdtm.json differs from the conversion "
                                                   "of sd3_medium_sdtm.json"]
    (folder / "api" / source.name).unlink()
    assert wa.stale_twins(object_info, folder) == ["workflows/api/sd3_medium_sdtm.json is missing"]


LOADER_FOLDERS = {"CheckpointLoaderSimple": "checkpoints", "TripleCLIPLoader": "text_encoders"}


@pytest.mark.parametrize("name", NAMES)
def test_every_node_names_its_pack_and_every_loader_its_downloads(name):
    """What the editor needs to offer "install missing nodes" (cnr_id / ver) and "download missing
    models" (a huggingface.co link to each .safetensors file and the models/ folder it goes in)."""
    import tomllib

    from commands.get_comfyui import VERSION
    project = tomllib.loads((wa.REPO / "pyproject.toml").read_text())["project"]
    for node in load(name)["nodes"]:
        properties = node.get("properties", {})
        ours = node["type"].startswith("SDTM_")
        expected = (project["name"], project["version"]) if ours else ("comfy-core", VERSION)
        assert (properties.get("cnr_id"), properties.get("ver")) == expected, node["type"]
        if node["type"].endswith("Loader") or node["type"].endswith("LoaderSimple"):
            assert node["type"] in LOADER_FOLDERS, f"{node['type']}: which models/ folder do its files go in?"
            models = properties.get("models", [])
            assert [m["name"] for m in models] == node["widgets_values"]
            for model in models:
                assert model["directory"] == LOADER_FOLDERS[node["type"]]
                assert model["url"].startswith("https://huggingface.co/") and "/resolve/main/" in model["url"]
                assert model["url"].endswith("/" + model["name"]) and model["name"].endswith(".safetensors")
        else:
            assert "models" not in properties


def test_the_check_names_a_node_whose_registry_properties_drifted(tmp_path, object_info):
    folder = tmp_path / "workflows"
    (folder / "api").mkdir(parents=True)
    source = wa.WORKFLOWS / "sd3_medium_sdtm.json"
    (folder / "api" / source.name).write_text(wa.twin_path(source).read_text())
    workflow = load("sd3_medium_sdtm")
    node_of(workflow, "SDTM_Apply")["properties"]["ver"] = "0.0.1"
    del node_of(workflow, "CheckpointLoaderSimple")["properties"]["models"]
    (folder / source.name).write_text(json.dumps(workflow))
    assert wa.stale_twins(object_info, folder) == [
        f"workflows/sd3_medium_sdtm.json: node {node_of(workflow, 'CheckpointLoaderSimple')['id']} "
        "(CheckpointLoaderSimple): properties.models is None, should be "
        f"{load('sd3_medium_sdtm')['nodes'][0]['properties']['models']!r}",
        f"workflows/sd3_medium_sdtm.json: node {node_of(workflow, 'SDTM_Apply')['id']} (SDTM_Apply): "
        f"properties.ver is '0.0.1', should be {wa.pack_identity()[1]!r}"]
    assert wa.with_registry_properties(workflow, object_info)
    assert workflow == load("sd3_medium_sdtm")  # the build puts them back as committed


# -- the tiny checkpoint ----------------------------------------------------------------------
def test_tiny_checkpoint_loads_as_sd3_with_its_own_vae(tmp_path):
    """CheckpointLoaderSimple (the node itself) detects the tiny file as SD3 and decodes with the SD3 VAE
    written into it."""
    from harness.comfy_env import import_comfy, register_model_dir
    from harness.tiny_sd3 import sd3_vae_state_dict
    nodes = import_comfy()
    import comfy.latent_formats
    import comfy.supported_models
    path = cached_tiny_checkpoint(tiny_cache_dir(), "sd3-medium", vae="full")
    register_model_dir("checkpoints", path.parent)
    model, clip, vae = nodes.CheckpointLoaderSimple().load_checkpoint(path.name)[:3]
    assert type(model.model.model_config) is comfy.supported_models.SD3
    assert isinstance(model.model.latent_format, comfy.latent_formats.SD3)
    assert clip is not None and vae.latent_channels == 16
    written = sd3_vae_state_dict()
    loaded = vae.get_sd()
    assert set(loaded) == set(written)
    assert all(torch.equal(loaded[k].to(torch.float16).cpu(), written[k].to(torch.float16)) for k in written)
    (image,) = nodes.VAEDecode().decode(vae, {"samples": torch.randn(1, 16, 16, 12)})
    assert image.shape == (1, 128, 96, 3) and 0.0 <= image.min() and image.max() <= 1.0 and image.std() > 0


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_stand_in_checkpoint_loads_back_as_its_sd3_variant(variant):
    """The server's stand-ins (TAESD3 as their VAE), as cached for the running ComfyUI: its checkpoint loader
    detects SD3 with the variant's MMDiT (check_tiny_checkpoint raises otherwise)."""
    path = cached_tiny_checkpoint(tiny_cache_dir(), variant, vae="taesd")
    check_tiny_checkpoint(path, variant)
    assert tiny_cache_dir().name in str(path)


def test_a_wrong_stand_in_checkpoint_fails_the_check(tmp_path, monkeypatch):
    """What 0.3.75's saving call wrote on 0.33.0 (the CLIP-L where the MMDiT belongs, the VAE under the text
    encoders' prefix) is refused at once, and never enters the cache; so is a good checkpoint of another variant."""
    from harness import tiny_sd3
    wrong = {**{f"model.diffusion_model.{k}": v for k, v in tiny_sd3.clip_l_state_dict().items()},
             **{f"text_encoders.{k}": v for k, v in tiny_sd3.taesd3_vae_state_dict().items()}}
    tiny_sd3.save_safetensors(wrong, tmp_path / "wrong.safetensors")
    with pytest.raises(RuntimeError, match="Could not detect model type"):
        check_tiny_checkpoint(tmp_path / "wrong.safetensors")
    other = cached_tiny_checkpoint(tiny_cache_dir(), "sd3.5-medium", vae="taesd")
    with pytest.raises(ValueError, match="not the tiny sd3-medium"):
        check_tiny_checkpoint(other, "sd3-medium")
    # the cache checks what it writes: a writer that produced the wrong file leaves nothing behind
    monkeypatch.setattr(tiny_sd3, "write_tiny_checkpoint",
                        lambda path, *args: tiny_sd3.save_safetensors(wrong, path))
    with pytest.raises(RuntimeError, match="Could not detect model type"):
        cached_tiny_checkpoint(tmp_path / "cache", "sd3-medium")
    assert list((tmp_path / "cache").iterdir()) == []


def test_tiny_checkpoint_rejects_unknown_choices(tmp_path):
    from harness.tiny_sd3 import write_tiny_checkpoint
    with pytest.raises(ValueError, match=f"vae must be one of {', '.join(CHECKPOINT_VAES)}, got 'huge'"):
        write_tiny_checkpoint(tmp_path / "x.safetensors", vae="huge")
    with pytest.raises(ValueError, match="variant must be one of .*, got 'sd4'"):
        write_tiny_checkpoint(tmp_path / "x.safetensors", variant="sd4")
