"""The SDTM nodes inside ComfyUI's real execution engine (validate_prompt + PromptExecutor), with the
tiny model loaded from safetensors files by UNETLoader, CLIPLoader and VAELoader."""
import asyncio
import dataclasses
import inspect
import os

import pytest

from harness.comfy_env import import_comfy, load_pack, prompt_executor, register_model_dir
from harness.tiny_sd3 import write_tiny_bundle
from sdtm_ops.config import SDTMConfig
from sdtm_ops.knobs import KNOB_BY_INPUT, KNOBS, PRESET_VALUE


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


SIMPLE = {"class_type": "SDTM_Apply", "inputs": {
    "preset": "fast", **{k.input: PRESET_VALUE if k.preset_override else k.default for k in KNOBS
                         if k.sdtm_position is not None}}}
ADVANCED = {"class_type": "SDTM_ApplyAdvanced", "inputs": {k.input: k.default for k in KNOBS}}


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
    (SIMPLE, {"ratio": 0.97}, "ratio"),
    (SIMPLE, {"ratio": -0.01}, "ratio"),  # only -1 keeps the preset's value
    (SIMPLE, {"switch_percent": -0.5}, "switch_percent"),
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
def test_unknown_choices_are_refused_before_execution(engine, node, inputs, name):
    prompt = text_to_image(engine["names"], with_inputs(node, **inputs))
    valid, error, outputs, node_errors = validate(engine, prompt)
    assert not valid
    assert all(f"{name} must be one of" in e["details"] for e in node_errors["5"]["errors"]), node_errors


def test_a_negative_override_other_than_minus_one_names_both_accepted_values(engine):
    prompt = text_to_image(engine["names"], with_inputs(SIMPLE, ratio=-0.01))
    valid, error, outputs, node_errors = validate(engine, prompt)
    assert not valid
    details = [e["details"] for e in node_errors["5"]["errors"]]
    assert all(f"ratio must be in [0.0, 0.95] or {PRESET_VALUE} (the preset's value), got -0.01" in d
               for d in details), details


@pytest.mark.parametrize("value", [{"__value__": ["fast"]}, 3])
def test_a_preset_that_is_not_a_name_is_refused_naming_preset(engine, value):
    prompt = text_to_image(engine["names"], with_inputs(SIMPLE, preset=value))
    valid, error, outputs, node_errors = validate(engine, prompt)
    assert not valid
    errors = node_errors["5"]["errors"]
    assert errors and all("preset must be one of" in e["details"] for e in errors), errors


@pytest.mark.parametrize("node", [SIMPLE, ADVANCED], ids=["simple", "advanced"])
@pytest.mark.parametrize("name", ["ratio", "switch_percent", "start_percent"])
def test_nan_is_refused_before_execution_by_name(engine, node, name):
    prompt = text_to_image(engine["names"], with_inputs(node, **{name: float("nan")}))
    valid, error, outputs, node_errors = validate(engine, prompt)
    assert not valid
    errors = node_errors["5"]["errors"]
    assert all(f"{name} must be a number in" in e["details"] for e in errors), errors


@pytest.mark.parametrize("node", [SIMPLE, ADVANCED], ids=["simple", "advanced"])
@pytest.mark.parametrize("name", ["start_percent", "end_percent", "ratio"])
def test_missing_and_non_numeric_inputs_get_comfyuis_own_message_once(engine, node, name):
    for change, kind in ((None, "required_input_missing"), ("abc", "invalid_input_type")):
        inputs = {k: v for k, v in node["inputs"].items() if k != name or change is not None}
        if change is not None:
            inputs[name] = change
        prompt = text_to_image(engine["names"], {**node, "inputs": inputs})
        valid, error, outputs, node_errors = validate(engine, prompt)
        assert not valid
        errors = node_errors["5"]["errors"]
        assert [(e["type"], e["extra_info"]["input_name"]) for e in errors] == [(kind, name)], errors


def test_a_linked_value_out_of_the_widgets_range_is_refused_with_that_range(engine):
    prompt = text_to_image(engine["names"], with_inputs(SIMPLE, ratio=["20", 0]))
    prompt["20"] = {"class_type": "PrimitiveFloat", "inputs": {"value": 5.0}}
    valid, error, outputs, node_errors = validate(engine, prompt)
    assert valid, (error, node_errors)  # a linked value is known only when the graph runs
    engine["executor"].execute(prompt, "linked-ratio", {}, outputs)
    assert not engine["executor"].success
    message = next(m[1]["exception_message"] for m in engine["executor"].status_messages if m[0] == "execution_error")
    knob = KNOB_BY_INPUT["ratio"]
    _, high = knob.bounds(sdtm_node=True)
    assert f"ratio must be in [{knob.low}, {high}] or {PRESET_VALUE} (the preset's value), got 5.0" in message


def test_every_config_field_has_a_knob_and_the_nodes_show_the_table(engine):
    pack = load_pack()
    assert [f.name for f in dataclasses.fields(SDTMConfig)] == [k.field for k in KNOBS]
    assert len({k.input for k in KNOBS}) == len(KNOBS)
    advanced = pack.advanced.define_schema()
    assert [i.id for i in advanced.inputs] == ["model", *(k.input for k in KNOBS)]
    simple = pack.apply.define_schema()
    shown = sorted((k for k in KNOBS if k.sdtm_position is not None), key=lambda k: k.sdtm_position)
    assert [i.id for i in simple.inputs] == ["model", "preset", *(k.input for k in shown)]
    types = pack.advanced.INPUT_TYPES()["required"]
    for knob in KNOBS:
        options = types[knob.input][1]
        assert options["default"] == knob.default and options["tooltip"] == knob.tooltip
        if knob.low is not None:
            assert (options["min"], options["max"]) == (knob.low, knob.high)
    assert SDTMConfig() == SDTMConfig(**{k.field: types[k.input][1]["default"] for k in KNOBS})
    for schema in (simple, advanced):
        assert schema.category == "model/patch/sdtm"


def test_search_aliases_reach_hosts_that_take_them(engine):
    """0.3.75's io.Schema has no search_aliases (passing it raises TypeError); newer hosts list them."""
    from comfy_api.latest import io
    pack = load_pack()
    schema = pack.apply.define_schema()
    if "search_aliases" in {f.name for f in dataclasses.fields(io.Schema)}:
        assert "token merging" in schema.search_aliases and "tome" in schema.search_aliases
    else:
        with pytest.raises(TypeError):
            io.Schema(node_id="x", search_aliases=["tome"])


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
    assert report["num_steps"] == 5 and report["config"]["ratio"] == load_pack().presets.preset_config("fast").ratio
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


@pytest.mark.parametrize("node", [SIMPLE, ADVANCED], ids=["simple", "advanced"])
def test_two_identical_sdtm_nodes_patch_a_model_each(engine, node):
    """ComfyUI's cache merges nodes whose inputs are identical unless they are not idempotent: two SDTM nodes
    with the same inputs must still give two patched models, or one node's runs (and split-run state) would
    be the other's. The report of node 5's model does not know the run of node 5b's sampler."""
    prompt = text_to_image(engine["names"], node)
    prompt["5b"] = prompt["5"]
    prompt["7b"] = {**prompt["7"], "inputs": {**prompt["7"]["inputs"], "model": ["5b", 0], "seed": 2}}
    prompt["11"] = {"class_type": "SDTM_RunReport", "inputs": {"model": ["5", 0], "samples": ["7b", 0]}}
    valid, _, outputs, node_errors = validate(engine, prompt)
    assert valid, node_errors
    engine["executor"].execute(prompt, f"two-identical-{node['class_type']}", {}, outputs)
    assert not engine["executor"].success
    message = next(m[1]["exception_message"] for m in engine["executor"].status_messages if m[0] == "execution_error")
    assert "was not produced by a sampling run of this SDTM-patched model" in message
