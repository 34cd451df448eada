"""The presets' descriptions (the SDTM node's tooltip) and the README's preset table state figures:
the FLOP-model speedups must be what sdtm_ops.cost computes for the presets as they are; the measured
speedups and the fixture PSNR must be those of the committed benchmark results they quote
(docs/benchmarks/*.json from benchmarks/bench_speed.py, docs/images/fixture_fidelity.json from
benchmarks/bench_fidelity.py)."""
import json
import re

import pytest

from tools.comfy_env import REPO, load_pack

MODELS = ("sd3-medium", "sd3.5-medium", "sd3.5-large")  # the order the descriptions use
# the bench_speed runs the descriptions quote: turbo at 4 steps, the others at 10 steps
SPEED_RESULTS = {"turbo": "cpu_1024_4steps_sdpa.json"}
DEFAULT_SPEED_RESULTS = "cpu_512.json"


@pytest.fixture(scope="module")
def pack():
    return load_pack()


def measured_speedup(preset: str) -> float:
    data = json.loads((REPO / "docs" / "benchmarks" / SPEED_RESULTS.get(preset, DEFAULT_SPEED_RESULTS)).read_text())
    return next(r["measured_speedup"] for r in data["rows"] if r["part"] == "schedule" and r["config"] == preset)


def fixture_psnr(preset: str) -> float:
    data = json.loads((REPO / "docs" / "images" / "fixture_fidelity.json").read_text())
    return next(r["psnr_mean"] for r in data["results"]["photo fixture (trained)"] if r["case"] == f"SDTM {preset}")


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


def test_preset_descriptions_and_readme_quote_the_benchmark_results(pack):
    readme = (REPO / "README.md").read_text()
    for name, (_, text) in pack.presets.PRESETS.items():
        speed, psnr = f"{measured_speedup(name):.2f}x", f"{fixture_psnr(name):.1f} dB"
        assert f"measured {speed} on CPU" in text, (name, speed, text)
        assert f"photo fixture {psnr} PSNR" in text, (name, psnr, text)
        row = next(line for line in readme.splitlines() if line.startswith(f"| {name} "))
        assert speed in row and psnr in row, (name, speed, psnr, row)


def test_the_tooltip_carries_every_preset(pack):
    schema = pack.apply.define_schema()
    preset = next(i for i in schema.inputs if i.id == "preset")
    for name, (_, text) in pack.presets.PRESETS.items():
        assert f"{name}: {text}" in preset.tooltip
