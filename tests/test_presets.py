"""The presets' descriptions (the SDTM node's tooltip) state settings and FLOP-model speedups, which must
be what the presets are and what sdtm_ops.cost computes for them; they state no measured figure (those
change with each benchmark run). The README's preset table quotes the committed benchmark results
(docs/benchmarks/*.json from benchmarks/bench_speed.py, docs/images/fixture_fidelity.json from
benchmarks/bench_fidelity.py)."""
import json
import re

import pytest

from harness.comfy_env import REPO, load_pack

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


FLOP = re.compile(r"FLOP model ([\d.]+)x / ([\d.]+)x / ([\d.]+)x \(([^)]*), 1024x1024, (\d+) steps\)")


def stated_flops(text: str) -> tuple[list[float], int]:
    found = FLOP.search(text)
    assert found, f"states no FLOP-model speedups: {text!r}"
    assert found.group(4) == " / ".join(MODELS)
    return [float(found.group(i)) for i in (1, 2, 3)], int(found.group(5))


def computed_flops(ops, config, steps: int) -> list[float]:
    grid = ops.token_grid(1024, 1024)
    return [round(ops.schedule_cost(ops.MODEL_SHAPES[m], grid, config, steps).speedup, 2) for m in MODELS]


def test_preset_descriptions_state_the_flop_model(pack):
    for name, (config, text) in pack.presets.PRESETS.items():
        stated, steps = stated_flops(text)
        assert steps == (4 if name == "turbo" else 30)
        assert stated == computed_flops(pack.ops, config, steps), (name, stated)


def test_preset_descriptions_state_the_presets_settings(pack):
    for name, (config, text) in pack.presets.PRESETS.items():
        found = re.search(r"ratio ([\d.]+) \+/- ([\d.]+), structure phase (up to progress|through step) ([\d.]+)",
                          text)
        assert found and [float(found.group(1)), float(found.group(2))] == [config.ratio, config.deviation], text
        if config.rules == "release":  # the release's absolute switch step: switch x 49, rounded down
            assert found.group(3) == "through step" and int(found.group(4)) == int(config.switch * 49 + 1e-6), text
        else:
            assert found.group(3) == "up to progress" and float(found.group(4)) == config.switch, text
        assert ("the release's rules" in text) == (config.rules == "release"), text
        assert ("no full steps" in text) == (config.protect_every == 0), text
        assert ("with cache blending" in text) == config.caches, text
        assert ("full-length attention" in text) == (config.structure_attention == "full"), text
        assert ("proportional attention" in text) == config.proportional_attention, text


def test_tooltip_and_presets_state_no_measured_figure(pack):
    tooltip = next(i for i in pack.apply.define_schema().inputs if i.id == "preset").tooltip
    source = (REPO / "nodes" / "presets.py").read_text()
    for text in (tooltip, source):
        for word in ("measured", "PSNR", " dB", "on CPU"):
            assert word not in text, word
    for name in pack.presets.PRESETS:
        for figure in (f"{measured_speedup(name):.2f}x", f"{fixture_psnr(name):.1f}"):
            if figure not in [f"{v:.2f}x" for v in computed_flops(pack.ops, pack.presets.PRESETS[name][0], 30)]:
                assert figure not in tooltip and figure not in source, (name, figure)


def test_readme_quotes_the_benchmark_results(pack):
    readme = (REPO / "README.md").read_text()
    for name in pack.presets.PRESETS:
        speed, psnr = f"{measured_speedup(name):.2f}x", f"{fixture_psnr(name):.1f} dB"
        row = next(line for line in readme.splitlines() if line.startswith(f"| {name} "))
        assert speed in row and psnr in row, (name, speed, psnr, row)


def test_the_tooltip_states_every_presets_computed_figures(pack):
    """Each preset's part of the tooltip (up to the next preset's name) holds the speedups computed here."""
    tooltip = next(i for i in pack.apply.define_schema().inputs if i.id == "preset").tooltip
    names = list(pack.presets.PRESETS)
    assert set(names) == {"reference", "quality", "balanced", "fast", "turbo"}
    starts = [tooltip.index(f"{name}: ") for name in names]
    assert starts == sorted(starts)
    for name, begin, end in zip(names, starts, starts[1:] + [len(tooltip)]):
        config = pack.presets.PRESETS[name][0]
        stated, steps = stated_flops(tooltip[begin:end])
        assert stated == computed_flops(pack.ops, config, steps), name
