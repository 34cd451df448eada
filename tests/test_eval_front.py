"""`python -m commands.evaluate front` (commands/eval_front.py): the measured speed-fidelity front on the photo
fixture and on a tiny SD3 model saved as files, run as a real subprocess through ComfyUI's own loaders and
KSampler path, and its one-line errors before any model loads."""
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from commands.eval_front import KINDS
from harness.tiny_sd3 import TINY_CLIP, TINY_UNET, write_tiny_bundle

REPO = Path(__file__).resolve().parents[1]
ERROR = "python -m commands.evaluate: error:"
# 8 steps against 4 (half the model calls) so that "fewer steps is faster" cannot flake; one LazyCache threshold.
FIXTURE_RUN = ["--fixture", "photo", "--limit", "1", "--steps", "8", "--fewer-steps", "0.5",
               "--lazy-thresholds", "0.2", "--repeats", "3"]


def run_front(*args: str, timeout: int = 900, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "commands.evaluate", "front", *args], check=False, cwd=REPO,
                          capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})})


def _random_alexnet_hub(torch_home: Path) -> Path:
    """A torch hub cache holding torchvision's AlexNet weights file, filled with AlexNet's own random
    initialisation (the real weights are a download): LPIPS then runs its real code, offline."""
    import torch
    import torchvision
    url = torchvision.models.AlexNet_Weights.IMAGENET1K_V1.url
    path = torch_home / "hub" / "checkpoints" / url.rsplit("/", 1)[-1]
    path.parent.mkdir(parents=True)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        torch.save(torchvision.models.alexnet().state_dict(), path)
    return torch_home


def error_line(result: subprocess.CompletedProcess) -> str:
    lines = [line for line in result.stderr.splitlines() if line.startswith(ERROR)]
    assert result.returncode == 2 and len(lines) == 1 and "Traceback" not in result.stderr, \
        (result.returncode, result.stderr[-3000:])
    return lines[0]


@pytest.fixture(scope="module")
def photo_front(tmp_path_factory):
    output = tmp_path_factory.mktemp("front") / "photo"
    result = run_front(*FIXTURE_RUN, "--output-path", str(output))
    assert result.returncode == 0, result.stderr[-4000:]
    return {"dir": output, "stdout": result.stdout, "report": json.loads((output / "front.json").read_text())}


def rows_by_name(report: dict) -> dict:
    return {row["name"]: row for row in report["rows"]}


def test_the_fixture_front_has_rows_of_every_kind_with_measured_seconds(photo_front):
    from harness.comfy_env import import_comfy, load_pack
    import_comfy()
    presets = load_pack().presets.PRESETS
    report = photo_front["report"]
    rows = rows_by_name(report)
    assert {row["kind"] for row in report["rows"]} == set(KINDS)
    assert [name for name, row in rows.items() if row["kind"] == "sdtm"] == [f"preset {p}" for p in presets]
    assert [name for name, row in rows.items() if row["kind"] == "stack"] == ["balanced -> LazyCache 0.2"]
    assert [name for name, row in rows.items() if row["kind"] == "lazycache"] == ["LazyCache 0.2"]
    assert [name for name, row in rows.items() if row["kind"] == "fewer_steps"] == ["fewer steps 4 of 8"]
    reference = rows["unpatched"]
    for row in report["rows"]:
        assert len(row["seconds_all"]) == 3 and all(s > 0 for s in row["seconds_all"]), row["name"]
        assert row["seconds"] == sorted(row["seconds_all"])[1]  # the median of 3 timed runs
        assert row["speedup"] == pytest.approx(reference["seconds"] / row["seconds"])
        assert row["peak_memory_mib"] is None  # on a CPU, with the reason in the setup
        assert 0.0 < row["ssim"] <= 1.0
    assert reference["kind"] == "reference" and reference["psnr"] is None and reference["identical"] == 1
    for name in ("fewer steps 4 of 8", *(f"preset {p}" for p in presets)):
        assert math.isfinite(rows[name]["psnr"]) and rows[name]["identical"] == 0, name
        assert rows[name]["ssim"] < 1.0, name
    setup = report["setup"]
    assert setup["device"].startswith("cpu: ") and setup["model"]["fixture"] == "photo"
    assert (setup["steps"], setup["sampler"], setup["scheduler"], setup["cfg"]) == (8, "euler", "sgm_uniform", 4.5)
    assert (setup["width"], setup["height"], setup["latent"]) == (128, 128, [64, 64])
    assert setup["captions"] == ["a photo of a chinese temple"] and "not measured on the CPU" in setup["memory"]
    assert setup["metrics"]["clip_score"] == {"computed": False, "model": None,
                                              "reason": "not computed: give --clip-model"}
    lpips = setup["metrics"]["lpips"]
    assert lpips["computed"] == (rows["unpatched"]["lpips"] is not None) and (lpips["computed"] or lpips["reason"])


def test_fewer_steps_is_measured_faster_than_the_reference(photo_front):
    rows = rows_by_name(photo_front["report"])
    fewer, reference = rows["fewer steps 4 of 8"], rows["unpatched"]
    assert fewer["steps"] == 4 and fewer["step_cost"] == 0.5 and fewer["settings"]["steps"] == 4
    assert fewer["seconds"] < reference["seconds"] and fewer["speedup"] > 1.0


def test_the_front_psnr_is_that_of_the_fixture_sampled_at_both_step_counts(photo_front):
    """The fewer-steps row's PSNR and SSIM, recomputed here from the fixture sampled through the KSampler path."""
    import torch

    from harness.comfy_env import import_comfy
    from harness.image_metrics import psnr, ssim
    from photo_fixture import photo_codec
    from photo_fixture.sample import sample_fixture
    import_comfy()
    torch.set_num_threads(1)  # as the command ran: the thread count changes the last bits of the sums
    model, clip = photo_codec.load_fixture(photo_codec.FIXTURE)
    positive = photo_codec.prompt_conditioning(clip, "a photo of a chinese temple")
    negative = photo_codec.prompt_conditioning(clip, "")
    with torch.inference_mode():
        reference, fewer = (photo_codec.decode(sample_fixture(model, 0, positive, negative, steps, (64, 64)))
                            for steps in (8, 4))
    row = rows_by_name(photo_front["report"])["fewer steps 4 of 8"]
    assert row["psnr"] == pytest.approx(float(psnr(fewer, reference)[0]), abs=1e-3)
    assert row["ssim"] == pytest.approx(float(ssim(fewer, reference)[0]), abs=1e-5)


def test_the_chart_table_and_verdict_line(photo_front):
    folder, report = photo_front["dir"], photo_front["report"]
    assert sorted(p.name for p in folder.iterdir()) == ["front.json", "front.png"]  # no partial file left
    with Image.open(folder / "front.png") as chart:
        assert chart.format == "PNG" and chart.size == (1300, 520)
    assert report["chart"] == {"file": "front.png", "reason": None}
    stdout = photo_front["stdout"]
    for row in report["rows"]:
        assert row["name"] in stdout
    assert report["verdict"] in stdout.splitlines()
    assert report["verdict"].startswith("Kept the most of the image (PSNR vs unpatched) at each measured speed")
    best = rows_by_name(report)
    faster = [row for row in report["rows"] if row["kind"] != "reference" and row["speedup"] > 1.0]
    for name in report["best_at_each_speed"]:  # none is beaten in both speed and PSNR by a faster setting
        mine = best[name]
        assert f"{name} (" in report["verdict"] and mine in faster
        assert not any(o["speedup"] > mine["speedup"] and (o["psnr"] or math.inf) >= (mine["psnr"] or math.inf)
                       for o in faster)


def test_a_tiny_sd3_model_given_as_files(tmp_path):
    from test_evaluate import _tiny_clip  # a small random CLIP saved as transformers saves one
    write_tiny_bundle(tmp_path / "models")
    captions = tmp_path / "captions.json"
    captions.write_text(json.dumps([{"image_id": 139, "caption": "a cat sleeping on a sofa"},
                                    {"image_id": 285, "caption": "a big brown bear in the grass"},
                                    {"image_id": 632, "caption": "a stop sign on a street corner"}]))
    output = tmp_path / "front"
    result = run_front("--models-dir", str(tmp_path / "models"), "--unet", TINY_UNET, "--clip", TINY_CLIP,
                       "--vae", "taesd3", "--width", "64", "--height", "64", "--steps", "4", "--fewer-steps", "0.5",
                       "--lazy-thresholds", "0.2", "--repeats", "1", "--caption-path", str(captions), "--limit", "2",
                       "--cfg", "2.0",
                       "--clip-model", str(_tiny_clip(tmp_path / "clip")), "--output-path", str(output),
                       env={"TORCH_HOME": str(_random_alexnet_hub(tmp_path / "torch-home"))})
    assert result.returncode == 0, result.stderr[-4000:]
    report = json.loads((output / "front.json").read_text())
    assert {row["kind"] for row in report["rows"]} == set(KINDS)
    setup = report["setup"]
    assert setup["model"]["unet"] == TINY_UNET and setup["model"]["vae"] == "taesd3"
    assert (setup["latent"], setup["cfg"]) == ([8, 8], 2.0)
    assert setup["captions"] == ["a cat sleeping on a sofa", "a big brown bear in the grass"]  # --limit 2
    assert setup["metrics"]["clip_score"] == {"computed": True, "model": str(tmp_path / "clip"), "reason": None}
    assert setup["metrics"]["lpips"] == {"computed": True, "reason": None}
    for row in report["rows"]:
        assert len(row["seconds_all"]) == 2 and len(row["per_caption"]) == 2, row["name"]
        assert 0 < row["clip_score"] <= 100, row["name"]
        assert row["clip_score"] == pytest.approx(sum(c["clip_score"] for c in row["per_caption"]) / 2)
        assert row["lpips"] >= 0 and all(c["lpips"] >= 0 for c in row["per_caption"]), row["name"]
    assert rows_by_name(report)["unpatched"]["lpips"] == 0.0  # against itself
    assert rows_by_name(report)["fewer steps 2 of 4"]["lpips"] > 0.0
    assert rows_by_name(report)["fewer steps 2 of 4"]["psnr"] is not None
    assert (output / "front.png").is_file()


def test_errors_come_in_one_line_before_any_model_loads_and_leave_nothing(tmp_path):
    import torch
    from safetensors.torch import save_file
    write_tiny_bundle(tmp_path / "models")
    # The diffusion-model weights of an SD1.x UNet layout (no MMDiT joint_blocks): not a model SDTM can run.
    not_sd3 = tmp_path / "sd15_unet.safetensors"
    save_file({"input_blocks.0.0.weight": torch.zeros(320, 4, 3, 3), "out.2.weight": torch.zeros(4, 320, 3, 3)},
              str(not_sd3))
    tiny = ["--models-dir", str(tmp_path / "models"), "--clip", TINY_CLIP, "--vae", "taesd3"]
    cases = [  # (arguments, text of the error line)
        (["--checkpoint", str(tmp_path / "missing" / "sd3.safetensors")], "sd3.safetensors: no such file"),
        (["--fixture", "photo", "--sampler", "eulerr"], "--sampler must be one of ComfyUI's samplers"),
        (["--fixture", "photo", "--scheduler", "linearr"], "--scheduler must be one of"),
        (["--unet", TINY_UNET, *tiny, "--sampler", "eulerr"], "--sampler must be one of ComfyUI's samplers"),
        (["--unet", str(not_sd3), *tiny], f"--unet {not_sd3}: not an SD3 / SD3.5 model (its weights hold no MMDiT"),
        (["--fixture", "photo", "--checkpoint", "x.safetensors"], "--fixture photo is a whole model"),
        (["--fixture", "photo", "--steps", "1"], "--steps must be at least 2"),
        (["--fixture", "photo", "--fewer-steps", "1.5"], "--fewer-steps must be a comma-separated list of numbers"),
        (["--fixture", "photo", "--steps", "2", "--fewer-steps", "0.9"], "gives no step count below --steps 2"),
        (["--fixture", "photo", "--lazy-thresholds", "0"], "--lazy-thresholds must be a comma-separated list"),
        (["--fixture", "photo", "--width", "130"], "--width must be a multiple of 4"),
        (["--unet", TINY_UNET, *tiny, "--width", "72"], "--width must be a multiple of 16"),
        ([], "a model is needed"),
        (["--fixture", "photo", "--caption-path", str(tmp_path / "none.json")], "none.json: no such file"),
    ]
    for number, (args, expected) in enumerate(cases):
        output = tmp_path / f"out{number}"
        line = error_line(run_front(*args, "--output-path", str(output)))
        assert expected in line, (args, line)
        assert not output.exists(), args  # the folder it made is gone again
    kept = tmp_path / "earlier"  # a folder with an earlier front keeps it as it was
    kept.mkdir()
    (kept / "front.json").write_text("{\"earlier\": true}\n")
    error_line(run_front("--fixture", "photo", "--sampler", "eulerr", "--output-path", str(kept)))
    assert [p.name for p in kept.iterdir()] == ["front.json"]
    assert (kept / "front.json").read_text() == "{\"earlier\": true}\n"


def test_the_docs_quote_the_committed_run():
    """docs/EVALUATION.md pastes the table and verdict of the committed run, and the README quotes its rows."""
    from benchmarks.bench_front import FIXTURES
    from commands.eval_front import FIXTURE_NAMES
    from commands.eval_front_report import table
    assert set(FIXTURE_NAMES) <= set(FIXTURES)  # --fixture's choices are bench_front's fixtures
    folder = REPO / "docs" / "benchmarks" / "evaluate-front-photo"
    report = json.loads((folder / "front.json").read_text())
    assert report["setup"]["command"] == ("python -m commands.evaluate front --fixture photo --limit 1 --steps 8 "
                                          "--output-path docs/benchmarks/evaluate-front-photo")
    with Image.open(folder / "front.png") as chart:
        assert chart.format == "PNG"
    evaluation = (REPO / "docs" / "EVALUATION.md").read_text()
    assert table(report["rows"]) in evaluation and report["verdict"] in evaluation
    rows = rows_by_name(report)
    fast, fewer = rows["preset fast"], rows["fewer steps 4 of 8"]
    readme = " ".join((REPO / "README.md").read_text().split())
    assert (f"fast {fast['speedup']:.2f}x at {fast['psnr']:.2f} dB against 4 of 8 steps at "
            f"{fewer['speedup']:.2f}x and {fewer['psnr']:.2f} dB") in readme
    sdtm = [row for row in report["rows"] if row["kind"] == "sdtm"]
    fewer_rows = [row for row in report["rows"] if row["kind"] == "fewer_steps"]
    # "every SDTM preset was beaten by a fewer-steps row at least as fast"
    assert all(any(f["speedup"] >= p["speedup"] and f["psnr"] > p["psnr"] for f in fewer_rows) for p in sdtm)
