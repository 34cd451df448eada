"""SDTM under torch.compile as ComfyUI applies it.

* In this process (ComfyUI's CPU attention), through ``set_torch_compile_wrapper`` in either order with
  the "eager" backend (dynamo's tracing and guards without code generation): the same images as without
  compile, the merged blocks run through the pack's own compiled functions, and the number of graphs does
  not grow with the number of steps.
* In a subprocess (PyTorch attention, as on NVIDIA GPUs), through ComfyUI's real TorchCompileModel node
  with inductor on CPU, 30 steps (``benchmarks.bench_compile --check``): a bounded number of graphs per
  block kind, nothing recompiled by a second run, and images equal to eager within inductor's rounding.
"""
import json
import os
import subprocess
import sys

import pytest
import torch

from benchmarks.bench_compile import graphs_per_function
from harness.comfy_env import REPO, import_comfy, load_pack
from harness.tiny_sd3 import sample, tiny_model


@pytest.fixture(scope="module")
def setup():
    import_comfy()
    from comfy_api.torch_helpers import set_torch_compile_wrapper
    return load_pack(), tiny_model("sd3-medium", seed=0), set_torch_compile_wrapper


def sdtm(pack, model):
    return pack.apply.execute(model, "balanced", -1.0, 0.0, 1.0, -1.0).args[0]


def compiled_run(setup, order: str, steps: int) -> tuple[torch.Tensor, int, dict]:
    pack, model, compile_wrapper = setup
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    if order == "sdtm_then_compile":
        patched = sdtm(pack, model).clone()
        compile_wrapper(patched, backend="eager")
    else:
        compiled = model.clone()
        compile_wrapper(compiled, backend="eager")
        patched = sdtm(pack, compiled)
    out = sample(patched, steps=steps)
    report = patched.model_options["transformer_options"]["sdtm"].latest().report
    assert report["flop_speedup"] > 1.0  # merging really happened
    return out, torch._dynamo.utils.counters["stats"]["unique_graphs"], graphs_per_function(pack)


@pytest.mark.parametrize("order", ["sdtm_then_compile", "compile_then_sdtm"])
def test_sdtm_under_torch_compile(setup, order):
    pack, model, _ = setup
    graphs, functions = {}, {}
    for steps in (4, 12):
        out, graphs[steps], functions[steps] = compiled_run(setup, order, steps)
        torch.testing.assert_close(out, sample(sdtm(pack, model), steps=steps), rtol=1e-4, atol=1e-4)
    assert graphs[4] == graphs[12] > 0, graphs
    # the merged blocks (store on protected steps, structure, detail) ran through compiled graphs
    for name in ("store_joint_block", "structure_joint_block", "detail_joint_block"):
        assert functions[12][name] > 0, functions


@pytest.fixture(scope="module")
def inductor_check(tmp_path_factory):
    out = tmp_path_factory.mktemp("compile") / "check.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "benchmarks.bench_compile", "--check", "--steps", "30",
                           "--backend", "inductor", "--json", str(out)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=1800)
    assert done.returncode == 0, done.stderr[-4000:]
    return json.loads(out.read_text())


def test_torch_compile_model_node_compiles_a_bounded_number_of_graphs(inductor_check):
    kinds = inductor_check["kinds"]
    assert kinds == ["dual", "last"]  # the tiny SD3.5-medium: dual-attention blocks, then the last block
    first, second = inductor_check["runs"]
    graphs = first["graphs"]
    assert {"structure", "detail", "full"} <= set(first["phases"])
    assert all(graphs[name] > 0 for name in graphs), graphs  # every block function ran compiled
    # one graph per kind of block for each function: at most 4 per block kind, well under dynamo's limit
    assert all(count <= len(kinds) < inductor_check["recompile_limit"] for count in graphs.values()), graphs
    assert sum(graphs.values()) <= 4 * len(kinds)
    # 30 steps of changing token counts, then a run with another seed: nothing new was compiled
    assert second["graphs"] == graphs and second["unique_graphs"] == first["unique_graphs"], (first, second)


def test_torch_compile_model_node_gives_the_eager_images(inductor_check):
    for run in inductor_check["runs"]:
        assert run["flop_speedup"] > 1.0
        # inductor reorders float sums; over 30 steps its own unpatched difference is of the same order
        tolerance = max(1e-3 * run["latent_scale"], 10 * inductor_check["unpatched_compile_diff"])
        assert run["max_abs_diff"] <= tolerance, run
