"""The presets' descriptions (the SDTM node's tooltip) state FLOP-model speedups; they must be the ones
sdtm_ops.cost computes for the presets as they are."""
import re

import pytest

from tools.comfy_env import load_pack

MODELS = ("sd3-medium", "sd3.5-medium", "sd3.5-large")  # the order the descriptions use


@pytest.fixture(scope="module")
def pack():
    return load_pack()


def test_preset_descriptions_state_the_flop_model(pack):
    ops = pack.ops
    grid = ops.token_grid(1024, 1024)
    for name, (config, text) in pack.presets.PRESETS.items():
        found = re.search(r"FLOP model ([\d.]+)x / ([\d.]+)x / ([\d.]+)x( at (\d+) steps)?", text)
        assert found, f"preset {name}: its description states no FLOP-model speedups: {text!r}"
        steps = int(found.group(5)) if found.group(5) else 30
        assert name != "turbo" or steps == 4
        stated = [float(found.group(i)) for i in (1, 2, 3)]
        computed = [round(ops.schedule_cost(ops.MODEL_SHAPES[m], grid, config, steps).speedup, 2) for m in MODELS]
        assert stated == computed, (name, stated, computed)


def test_the_tooltip_carries_every_preset(pack):
    schema = pack.apply.define_schema()
    preset = next(i for i in schema.inputs if i.id == "preset")
    for name, (_, text) in pack.presets.PRESETS.items():
        assert f"{name}: {text}" in preset.tooltip
