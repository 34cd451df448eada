"""Runs through the real ComfyUI server in API format, as a user's prompt arrives: two samplers on one
SDTM-patched model each get their own report and merge map; KSamplerAdvanced 0-4 then 4-8 gets the
single run's plan; SamplerCustomAdvanced with no step left is a no-op; the Run Report's summary is in
the node's UI output. Tiny stand-in checkpoint (see tests/test_server.py)."""
import json

import pytest

from commands import workflow_api as wa
from harness.comfy_server import PromptError, with_stand_ins
from photo_fixture.photo_codec import load_saved_latent


def base_prompt(models, tag: str) -> dict:
    prompt = with_stand_ins(wa.load_json(wa.API_DIR / "sd3_medium_sdtm.json"), models["tiny"], 128, 4, tag)
    prompt["2"]["inputs"]["preset"] = "fast"
    return prompt


def sampler(prompt: dict, node_id: str, steps: int, seed: int, width: int, height: int) -> None:
    prompt[f"{node_id}L"] = {"class_type": "EmptySD3LatentImage", "inputs": {"width": width, "height": height,
                                                                                "batch_size": 1}}
    prompt[node_id] = {"class_type": "KSampler", "inputs": {**prompt["6"]["inputs"], "steps": steps, "seed": seed,
                                                            "latent_image": [f"{node_id}L", 0]}}


def test_two_samplers_on_one_model_get_their_own_report_and_map(server, models):
    prompt = base_prompt(models, "two samplers")
    sampler(prompt, "A", 4, 42, 128, 128)
    sampler(prompt, "B", 6, 5, 256, 128)
    prompt["BD"] = {"class_type": "VAEDecode", "inputs": {"samples": ["B", 0], "vae": ["1", 2]}}
    prompt["9"]["inputs"]["samples"] = ["B", 0]
    prompt["RA"] = {"class_type": "SDTM_RunReport", "inputs": {"model": ["2", 0], "samples": ["A", 0]}}
    prompt["M"] = {"class_type": "SDTM_MergeMap", "inputs": {"model": ["2", 0], "image": ["BD", 0], "samples": ["B", 0],
                                                             "block": -1, "steps": "auto", "opacity": 0.5}}
    prompt["MS"] = {"class_type": "SaveImage", "inputs": {"images": ["M", 0], "filename_prefix": "sdtm_map"}}
    for unused in ("5", "6", "7", "8"):
        del prompt[unused]
    run = server.run_prompt(prompt, timeout=600)
    report_b, report_a = (json.loads(run.texts(nid)[0]) for nid in ("9", "RA"))
    assert (report_b["num_steps"], report_b["seed"], report_b["latent_shape"]) == (6, 5, [1, 16, 16, 32])
    assert (report_a["num_steps"], report_a["seed"], report_a["latent_shape"]) == (4, 42, [1, 16, 16, 16])
    (picture,) = run.history["outputs"]["MS"]["images"]
    assert server.output_path(picture).is_file()
    assert report_b["memory"]["merge_map_bytes"] > 0  # a Merge Map reads this model: its runs keep their maps

    prompt["M"]["inputs"]["samples"] = ["A", 0]  # A's run under B's image: refused, not stretched
    with pytest.raises(PromptError) as caught:
        server.run_prompt(prompt, timeout=600)
    assert "not the image of this run" in str(caught.value)


# fast with its own switch spelt out (a new SDTM node output, not the one of an earlier prompt whose Merge Map
# made its runs keep merge maps); balanced at switch 0.6, whose first part merges nothing on this small grid
# (its structure steps round to no window) but must still keep the cache the detail steps of the second blend
@pytest.mark.parametrize("preset,switch", [("fast", 1.0), ("balanced", 0.6)])
def test_split_sampling_gets_the_single_runs_plan(server, models, preset, switch):
    prompt = base_prompt(models, f"split {preset}")
    prompt["2"]["inputs"].update(preset=preset, switch_percent=switch)
    common = {k: v for k, v in prompt["6"]["inputs"].items() if k not in ("seed", "denoise")}
    common.update(steps=8, noise_seed=3)
    prompt["S"] = {"class_type": "KSamplerAdvanced", "inputs": {
        **common, "add_noise": "enable", "start_at_step": 0, "end_at_step": 8, "return_with_leftover_noise": "disable"}}
    prompt["P1"] = {"class_type": "KSamplerAdvanced", "inputs": {
        **common, "add_noise": "enable", "start_at_step": 0, "end_at_step": 4, "return_with_leftover_noise": "enable"}}
    prompt["P2"] = {"class_type": "KSamplerAdvanced", "inputs": {
        **common, "latent_image": ["P1", 0], "add_noise": "disable", "start_at_step": 4, "end_at_step": 8,
        "return_with_leftover_noise": "disable"}}
    for nid in ("S", "P1", "P2"):
        prompt[f"R{nid}"] = {"class_type": "SDTM_RunReport", "inputs": {"model": ["2", 0], "samples": [nid, 0]}}
    for unused in ("6", "7", "8", "9"):
        del prompt[unused]
    for nid in ("S", "P2"):
        prompt[f"L{nid}"] = {"class_type": "SaveLatent", "inputs": {"samples": [nid, 0],
                                                                     "filename_prefix": f"sdtm_split/{nid}"}}
    run = server.run_prompt(prompt, timeout=600)
    single, first, second = (json.loads(run.texts(f"R{nid}")[0]) for nid in ("S", "P1", "P2"))
    plan = {s["step"]: (s["phase"], s["attn_tokens"], s["mlp_tokens"]) for s in single["steps"]}
    parts = {s["step"]: (s["phase"], s["attn_tokens"], s["mlp_tokens"]) for s in first["steps"] + second["steps"]}
    assert (first["first_step"], second["first_step"]) == (0, 4) and parts == plan
    assert (first["continued"], second["continued"]) == (False, True)
    summary = run.history["outputs"]["RP2"]["summary"][0]
    assert summary.startswith(f"SDTM preset {preset}: 4 steps (4-7)")
    assert second["cache"]["misses"] == 0 and second["cache"]["blends"] == single["cache"]["blends"] - first[
        "cache"]["blends"]
    # no Merge Map in this prompt: no run kept a merge map
    assert [r["memory"]["merge_map_bytes"] for r in (single, first, second)] == [0, 0, 0]

    def saved(history, nid):
        (entry,) = history["outputs"][f"L{nid}"]["latents"]
        return load_saved_latent(server.output_path(entry))
    single_latent, split_latent = saved(run.history, "S"), saved(run.history, "P2")
    assert float((split_latent - single_latent).abs().max()) <= 1e-5

    # Re-queued with a change that only the second part sees (its end step, clamped to 8 all the same):
    # ComfyUI serves the first part from its cache and the second part continues it again.
    prompt["P2"]["inputs"]["end_at_step"] = 10000
    again = server.run_prompt(prompt, timeout=600)
    assert "RP1" not in again.history["outputs"] or again.texts("RP1") == run.texts("RP1")
    assert json.loads(again.texts("RP2")[0])["continued"]
    assert float((saved(again.history, "P2") - single_latent).abs().mean()) <= 1e-6


def test_the_ab_workflow_saves_both_images_with_merging_off(server, models):
    """The shipped A/B workflow at ratio 0 (merging off): the Merge Map shows that nothing was merged
    instead of failing the prompt, and both images are saved."""
    prompt = with_stand_ins(wa.load_json(wa.API_DIR / "sdtm_ab_comparison.json"), models["tiny"], 128, 4,
                            "ab ratio 0")
    apply_id = next(nid for nid, node in prompt.items() if node["class_type"] == "SDTM_Apply")
    prompt[apply_id]["inputs"]["ratio"] = 0.0
    run = server.run_prompt(prompt, timeout=600)
    saves = [nid for nid, node in prompt.items() if node["class_type"] in ("SaveImage", "PreviewImage")]
    assert len(saves) == 3
    for nid in saves:
        (image,) = run.history["outputs"][nid]["images"]
        assert server.output_path(image).is_file()
    report = json.loads(next(run.texts(nid)[0] for nid, node in prompt.items()
                             if node["class_type"] == "SDTM_RunReport"))
    assert report["flop_speedup"] == 1.0 and report["memory"]["merge_map_bytes"] == 0


def test_sampler_custom_advanced_with_no_step_left_is_a_no_op(server, models):
    prompt = base_prompt(models, "no step left")
    prompt["G"] = {"class_type": "CFGGuider", "inputs": {"model": ["2", 0], "positive": ["3", 0],
                                                         "negative": ["4", 0], "cfg": 4.0}}
    prompt["SC"] = {"class_type": "BasicScheduler", "inputs": {"model": ["2", 0], "scheduler": "sgm_uniform",
                                                               "steps": 4, "denoise": 1.0}}
    prompt["SP"] = {"class_type": "SplitSigmas", "inputs": {"sigmas": ["SC", 0], "step": 4}}
    prompt["N"] = {"class_type": "RandomNoise", "inputs": {"noise_seed": 1}}
    prompt["K"] = {"class_type": "KSamplerSelect", "inputs": {"sampler_name": "euler"}}
    prompt["X"] = {"class_type": "SamplerCustomAdvanced", "inputs": {
        "noise": ["N", 0], "guider": ["G", 0], "sampler": ["K", 0], "sigmas": ["SP", 1], "latent_image": ["5", 0]}}
    prompt["7"]["inputs"]["samples"] = ["X", 0]
    for unused in ("6", "9"):
        del prompt[unused]
    run = server.run_prompt(prompt, timeout=600)
    assert len(run.history["outputs"]["8"]["images"]) == 1
