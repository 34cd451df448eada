"""The SDTM nodes inside ComfyUI's real execution engine (validate_prompt + PromptExecutor), with the
tiny model loaded from safetensors files by UNETLoader, CLIPLoader and VAELoader."""
import asyncio
import inspect
import os

import pytest

from tools.comfy_env import import_comfy, load_pack, prompt_executor, register_model_dir
from tools.tiny_sd3 import write_tiny_bundle


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    nodes = import_comfy()
    load_pack()
    import execution
    import folder_paths
    models = tmp_path_factory.mktemp("models")
    names = write_tiny_bundle(models)
    for kind in ("diffusion_models", "text_encoders", "vae_approx"):
        register_model_dir(kind, models / kind)
    out = tmp_path_factory.mktemp("output")
    folder_paths.set_output_directory(str(out))
    executor = prompt_executor()
    return {"nodes": nodes, "execution": execution, "executor": executor, "names": names, "out": out}


def text_to_image(names, sdtm_node: dict) -> dict:
    return {
        "1": {"class_type": "UNETLoader", "inputs": {"unet_name": names["unet"], "weight_dtype": "default"}},
        "2": {"class_type": "CLIPLoader", "inputs": {"clip_name": names["clip"], "type": "sd3"}},
        "3": {"class_type": "CLIPTextEncode", "inputs": {"text": "a photo of a cat", "clip": ["2", 0]}},
        "4": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["2", 0]}},
        "5": {**sdtm_node, "inputs": {"model": ["1", 0], **sdtm_node["inputs"]}},
        "6": {"class_type": "EmptySD3LatentImage", "inputs": {"width": 256, "height": 192, "batch_size": 1}},
        "7": {"class_type": "KSampler", "inputs": {"model": ["5", 0], "seed": 1, "steps": 5, "cfg": 4.5,
                                                   "sampler_name": "euler", "scheduler": "sgm_uniform",
                                                   "positive": ["3", 0], "negative": ["4", 0],
                                                   "latent_image": ["6", 0], "denoise": 1.0}},
        "8": {"class_type": "VAELoader", "inputs": {"vae_name": names["vae"]}},
        "9": {"class_type": "VAEDecode", "inputs": {"samples": ["7", 0], "vae": ["8", 0]}},
        "10": {"class_type": "SaveImage", "inputs": {"images": ["9", 0], "filename_prefix": "sdtm_engine"}},
    }


SIMPLE = {"class_type": "SDTM_Apply", "inputs": {"preset": "fast", "ratio": -1.0, "start_percent": 0.0,
                                                 "end_percent": 1.0, "switch_percent": -1.0}}
ADVANCED = {"class_type": "SDTM_ApplyAdvanced", "inputs": {
    "method": "sdtm", "ratio": 0.3, "deviation": 0.2, "switch_percent": 0.41, "start_percent": 0.0,
    "end_percent": 1.0, "window": 2, "priority_weight": 0.05, "protect_steps_every": 3, "protect_blocks_every": 0,
    "block_start": 0, "block_end": -1, "cache": True, "cache_fresh_weight": 0.1, "merge_mode": "mean",
    "merge_seed": -1, "round_to": 16}}


def validate(engine, prompt):
    execution = engine["execution"]
    params = inspect.signature(execution.validate_prompt).parameters
    args = ("test", prompt, None) if len(params) >= 3 else ("test", prompt)
    return asyncio.run(execution.validate_prompt(*args))


def with_inputs(node, **inputs):
    return {**node, "inputs": {**node["inputs"], **inputs}}


@pytest.mark.parametrize("node", [SIMPLE, ADVANCED], ids=["simple", "advanced"])
def test_prompt_runs_through_the_execution_engine(engine, node):
    prompt = text_to_image(engine["names"], node)
    valid, error, outputs, node_errors = validate(engine, prompt)
    assert valid, (error, node_errors)
    before = set(os.listdir(engine["out"]))
    engine["executor"].execute(prompt, f"run-{node['class_type']}", {}, outputs)
    assert engine["executor"].success, engine["executor"].status_messages
    new = set(os.listdir(engine["out"])) - before
    assert len(new) == 1 and new.pop().endswith(".png")


@pytest.mark.parametrize("node,inputs,name", [
    (SIMPLE, {"ratio": 2.0}, "ratio"),
    (SIMPLE, {"start_percent": 1.5}, "start_percent"),
    (SIMPLE, {"start_percent": 0.8, "end_percent": 0.2}, "start_percent"),
    (ADVANCED, {"window": 1}, "window"),
    (ADVANCED, {"cache_fresh_weight": 1.5}, "cache_fresh_weight"),
    (ADVANCED, {"block_start": 4, "block_end": 2}, "block_start"),
])
def test_out_of_range_inputs_fail_validation_by_name(engine, node, inputs, name):
    prompt = text_to_image(engine["names"], with_inputs(node, **inputs))
    valid, error, outputs, node_errors = validate(engine, prompt)
    assert not valid
    errors = node_errors["5"]["errors"]
    assert any(e["extra_info"].get("input_name") == name for e in errors), errors
    assert all(name in (e["details"] + e["message"]) for e in errors), errors


@pytest.mark.parametrize("node,inputs,name", [
    (SIMPLE, {"preset": "ludicrous"}, "preset"),
    (ADVANCED, {"method": "random"}, "method"),
    (ADVANCED, {"merge_mode": "max"}, "merge_mode"),
])
def test_unknown_choices_are_refused_by_name(engine, node, inputs, name):
    """ComfyUI 0.3.75 does not check V3 combo values when validating; then the node refuses them."""
    prompt = text_to_image(engine["names"], with_inputs(node, **inputs))
    valid, error, outputs, node_errors = validate(engine, prompt)
    if not valid:
        assert any(e["extra_info"].get("input_name") == name for e in node_errors["5"]["errors"])
        return
    engine["executor"].execute(prompt, f"bad-{name}", {}, outputs)
    assert not engine["executor"].success
    message = next(m[1]["exception_message"] for m in engine["executor"].status_messages if m[0] == "execution_error")
    assert f"{name} must be one of" in message


def test_a_block_range_past_the_model_fails_with_the_input_names(engine):
    prompt = text_to_image(engine["names"], with_inputs(ADVANCED, block_start=40, block_end=-1))
    valid, _, outputs, _ = validate(engine, prompt)
    assert valid  # the range is fine; only the model shows it is past its last block
    engine["executor"].execute(prompt, "past-last-block", {}, outputs)
    assert not engine["executor"].success
    message = next(m[1]["exception_message"] for m in engine["executor"].status_messages if m[0] == "execution_error")
    assert "block_start (40)" in message and "3 joint blocks" in message


def test_run_report_node_gives_the_runs_statistics(engine):
    import json
    prompt = text_to_image(engine["names"], SIMPLE)
    prompt["11"] = {"class_type": "SDTM_RunReport", "inputs": {"model": ["5", 0], "samples": ["7", 0]}}
    valid, error, outputs, node_errors = validate(engine, prompt)
    assert valid, (error, node_errors)
    engine["executor"].execute(prompt, "report", {}, outputs)
    assert engine["executor"].success
    shown = engine["executor"].history_result["outputs"]["11"]["text"][0]
    report = json.loads(shown)
    assert report["num_steps"] == 5 and report["config"]["ratio"] == 0.5
    assert report["phases"]["structure"]["attn_tokens"] < report["phases"]["structure"]["tokens"]
    assert "FLOP-model speedup" in report["summary"]


def test_run_report_refuses_an_unpatched_model(engine):
    prompt = text_to_image(engine["names"], SIMPLE)
    prompt["11"] = {"class_type": "SDTM_RunReport", "inputs": {"model": ["1", 0], "samples": ["7", 0]}}
    valid, _, outputs, _ = validate(engine, prompt)
    engine["executor"].execute(prompt, "report-unpatched", {}, outputs)
    assert not engine["executor"].success
    message = next(m[1]["exception_message"] for m in engine["executor"].status_messages if m[0] == "execution_error")
    assert "carries no SDTM patch" in message
