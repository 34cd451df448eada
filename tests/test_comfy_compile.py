"""SDTM under torch.compile as ComfyUI applies it (TorchCompileModel's set_torch_compile_wrapper), in
either order: the same images as without compile, and a number of compiled graphs that does not grow
with the number of steps (merged token counts change every step; tracing them would recompile at each).
The "eager" backend runs dynamo's tracing and guards without code generation, so no C++ compiler is
needed."""
import pytest
import torch

from harness.comfy_env import import_comfy, load_pack
from harness.tiny_sd3 import sample, tiny_model


@pytest.fixture(scope="module")
def setup():
    import_comfy()
    from comfy_api.torch_helpers import set_torch_compile_wrapper
    return load_pack(), tiny_model("sd3-medium", seed=0), set_torch_compile_wrapper


def sdtm(pack, model):
    return pack.apply.execute(model, "balanced", -1.0, 0.0, 1.0, -1.0).args[0]


def compiled_run(setup, order: str, steps: int) -> tuple[torch.Tensor, int]:
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
    report = patched.model_options["transformer_options"]["sdtm"].last_report
    assert report["flop_speedup"] > 1.0  # merging really happened
    return out, torch._dynamo.utils.counters["stats"]["unique_graphs"]


@pytest.mark.parametrize("order", ["sdtm_then_compile", "compile_then_sdtm"])
def test_sdtm_under_torch_compile(setup, order):
    pack, model, _ = setup
    graphs = {}
    for steps in (4, 12):
        out, graphs[steps] = compiled_run(setup, order, steps)
        torch.testing.assert_close(out, sample(sdtm(pack, model), steps=steps), rtol=1e-4, atol=1e-4)
    # the graphs are those of the model around the blocks, compiled once, whatever the steps do
    assert graphs[4] == graphs[12] > 0, graphs
