"""The evaluation CLI (commands/evaluate.py) and the image metrics (harness/image_metrics.py), on CPU with a tiny
SD3-family model saved as safetensors and loaded by ComfyUI's own loaders. The CLI runs as a real
subprocess (and under torchrun with two gloo processes)."""
import hashlib
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from commands import evaluate
from harness.comfy_env import import_comfy
from harness.image_metrics import load_images, psnr, ssim
from harness.tiny_sd3 import TINY_CLIP, TINY_UNET, write_tiny_bundle

REPO = Path(__file__).resolve().parents[1]
LONG_CAPTION = " ".join(f"a small red house number {i} beside a tall green tree under a cloudy sky" for i in range(8))
CAPTIONS = [  # COCO-style integer ids; the long caption encodes to more text tokens than the others
    (139, "a cat sleeping on a sofa"), (285, "a big brown bear in the grass"), (632, LONG_CAPTION),
    (724, "a stop sign on a street corner"), (776, "three teddy bears sitting together"),
    (785, "a woman skiing down a snowy hill"),
]
SIZE = ["--height", "128", "--width", "128", "--steps", "3", "--batch-size", "4"]


def run_cli(*args: str, torchrun: int = 0, timeout: int = 300, env: dict | None = None) -> subprocess.CompletedProcess:
    """The CLI in a new process (torchrun > 0: that many processes). Every process gets one CPU thread,
    as torchrun gives each of its workers: on a CPU the thread count changes how torch splits its
    sums, hence the last bits of the images, so one thread everywhere makes the files comparable."""
    distributed = ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={torchrun}"] if torchrun else []
    return subprocess.run([sys.executable, *distributed, "-m", "commands.evaluate", *args], check=False, cwd=REPO,
                          capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})})


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def images_in(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.glob("*.jpg"))}


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("evaluate")
    write_tiny_bundle(root / "models")
    captions = root / "captions.json"
    captions.write_text(json.dumps([{"image_id": i, "caption": c} for i, c in CAPTIONS]))
    model = ["--models-dir", str(root / "models"), "--unet", TINY_UNET, "--clip", TINY_CLIP, "--vae", "taesd3"]
    return {"root": root, "captions": captions, "model": model, "caption_sha": sha256(captions)}


def sample(setup, output: Path, method: str, *extra: str, torchrun: int = 0) -> subprocess.CompletedProcess:
    result = run_cli("sample", "--caption-path", str(setup["captions"]), "--output-path", str(output),
                     *setup["model"], *SIZE, "--method", method, *extra, torchrun=torchrun)
    assert result.returncode == 0, result.stderr[-4000:]
    return result


@pytest.fixture(scope="module")
def unmerged(setup):
    output = setup["root"] / "none"
    result = sample(setup, output, "none")
    return {"dir": output, "stdout": result.stdout, "images": images_in(output)}


@pytest.fixture(scope="module")
def merged(setup):
    output = setup["root"] / "sdtm"
    # balanced, not the default reference: at 3 steps and 8 x 8 tokens the release's rules (structure steps
    # only, windows rounded down to 16) merge nothing, as the release itself would
    sample(setup, output, "sdtm", "--preset", "balanced")
    return {"dir": output, "images": images_in(output)}


def test_sample_writes_one_image_per_caption_named_by_image_id(setup, unmerged):
    assert sorted(unmerged["images"]) == sorted(f"{image_id:012d}.jpg" for image_id, _ in CAPTIONS)
    for name in unmerged["images"]:
        image = load_images([unmerged["dir"] / name])
        assert image.shape == (1, 3, 128, 128)
    assert f"wrote {len(CAPTIONS)} images" in unmerged["stdout"]
    assert sha256(setup["captions"]) == setup["caption_sha"]  # the caption file is only read


def test_rerun_skips_existing_images_and_a_resumed_batch_gives_the_same_bytes(setup, unmerged):
    folder = unmerged["dir"]
    times = {p.name: p.stat().st_mtime_ns for p in folder.glob("*.jpg")}
    rerun = sample(setup, folder, "none")
    assert f"wrote 0 images, skipped {len(CAPTIONS)} existing" in rerun.stdout
    assert {p.name: p.stat().st_mtime_ns for p in folder.glob("*.jpg")} == times

    lost = f"{CAPTIONS[1][0]:012d}.jpg"  # one image of the first batch, as after an interrupted run
    (folder / lost).unlink()
    resumed = sample(setup, folder, "none")
    assert "wrote 1 images" in resumed.stdout
    assert images_in(folder) == unmerged["images"]
    assert sha256(setup["captions"]) == setup["caption_sha"]


def test_a_resumed_folder_must_have_been_made_with_the_same_settings(setup, unmerged):
    result = run_cli("sample", "--caption-path", str(setup["captions"]), "--output-path", str(unmerged["dir"]),
                     *setup["model"], *SIZE, "--method", "none", "--cfg", "2.5")
    assert result.returncode == 2
    assert "cfg" in result.stderr and evaluate.SETTINGS_FILE in result.stderr
    assert images_in(unmerged["dir"]) == unmerged["images"]


def test_sdtm_differs_from_unmerged_and_compare_reports_finite_psnr_ssim(setup, unmerged, merged):
    assert sorted(merged["images"]) == sorted(unmerged["images"])
    assert all(merged["images"][name] != unmerged["images"][name] for name in merged["images"])
    report_path = setup["root"] / "compare.json"
    result = run_cli("compare", str(merged["dir"]), str(unmerged["dir"]), "--json", str(report_path))
    assert result.returncode == 0, result.stderr[-4000:]
    report = json.loads(report_path.read_text())
    assert report["matched"] == len(CAPTIONS)
    assert math.isfinite(report["psnr"]["mean"]) and math.isfinite(report["ssim"]["mean"])
    assert report["psnr"]["identical"] == 0
    for name, values in report["per_image"].items():
        a, b = load_images([merged["dir"] / (name + ".jpg")]), load_images([unmerged["dir"] / (name + ".jpg")])
        assert values["psnr"] == pytest.approx(psnr(a, b).item(), rel=1e-9)
        assert values["ssim"] == pytest.approx(ssim(a, b).item(), rel=1e-9)
        assert 0 < values["ssim"] < 1
    assert f"{report['psnr']['mean']:.2f}" in result.stdout and f"{report['ssim']['mean']:.4f}" in result.stdout
    assert report["fid"] is None and report["clip_score"] is None
    for reason in ("not computed: give --fid-ref DIR", "not computed: give --caption-path FILE"):  # says why
        assert reason in result.stdout


def test_torchrun_two_processes_write_the_same_files_as_one(setup, merged):
    output = setup["root"] / "sdtm-torchrun"
    result = sample(setup, output, "sdtm", "--preset", "balanced", torchrun=2)
    assert "2 process(es)" in result.stdout
    assert images_in(output) == merged["images"]


def test_batches_are_sharded_by_rank_and_noise_depends_only_on_seed_and_image_id():
    prompts = [evaluate.Prompt(i, f"caption {i}", evaluate.image_stem(i)) for i in range(11)]
    batches = evaluate.make_batches(prompts, 3)
    assert [p for batch in batches for p in batch] == prompts
    for world_size in (1, 2, 3, 5):
        shards = [evaluate.shard(batches, rank, world_size) for rank in range(world_size)]
        assert sorted((tuple(b) for s in shards for b in s), key=lambda b: b[0].image_id) == [tuple(b) for b in batches]
    shape = (16, 4, 4)
    first = evaluate.image_noise(0, "000000000139", shape)
    assert torch.equal(first, evaluate.image_noise(0, "000000000139", shape))
    assert not torch.equal(first, evaluate.image_noise(1, "000000000139", shape))
    assert not torch.equal(first, evaluate.image_noise(0, "000000000285", shape))


# ---------------------------------------------------------------------------------------------
# Caption files
# ---------------------------------------------------------------------------------------------
def test_coco_captions_keep_the_longest_caption_per_image(tmp_path):
    annotations = [{"image_id": image_id, "id": 10 * image_id + k, "caption": caption}
                   for image_id, captions in ((724, ["A stop sign.", "A red stop sign on a pole near a road."]),
                                              (139, ["A living room with a television and chairs.", "A room."]))
                   for k, caption in enumerate(captions)]
    path = tmp_path / "captions_val2017.json"
    path.write_text(json.dumps({"images": [], "annotations": annotations}))
    before = sha256(path)
    prompts = evaluate.load_captions(path)
    expected = {}
    for item in annotations:
        expected[item["image_id"]] = max(expected.get(item["image_id"], ""), item["caption"], key=len)
    assert [(p.image_id, p.caption, p.name) for p in prompts] == [
        (i, expected[i], f"{i:012d}") for i in sorted(expected)]
    assert sha256(path) == before


def test_partiprompts_tsv_and_string_ids(tmp_path):
    rows = [('A sign that says "Hello"', "Artifacts"), ("a photo of a cat", "Animals")]
    path = tmp_path / "PartiPrompts.tsv"
    path.write_text("Prompt\tCategory\tChallenge\tNote\n" + "".join(f"{p}\t{c}\tBasic\t\n" for p, c in rows))
    prompts = evaluate.load_captions(path)
    assert [(p.image_id, p.caption, p.name) for p in prompts] == [(i, p, f"{i:012d}") for i, (p, _) in enumerate(rows)]
    listing = tmp_path / "named.json"
    listing.write_text(json.dumps([{"image_id": "cat-01", "caption": "a cat"}, {"image_id": "42", "caption": "x"}]))
    assert [p.name for p in evaluate.load_captions(listing)] == ["cat-01", f"{42:012d}"]


def test_caption_files_that_start_with_a_utf8_bom_are_read(tmp_path):
    bom = b"\xef\xbb\xbf"
    tsv = tmp_path / "PartiPrompts.tsv"
    tsv.write_bytes(bom + "Prompt\tCategory\tChallenge\tNote\na photo of a cat\tAnimals\tBasic\t\n".encode())
    assert [(p.image_id, p.caption) for p in evaluate.load_captions(tsv)] == [(0, "a photo of a cat")]
    listing = tmp_path / "captions.json"
    listing.write_bytes(bom + json.dumps([{"image_id": 7, "caption": "a dog"}]).encode())
    assert [(p.image_id, p.caption) for p in evaluate.load_captions(listing)] == [(7, "a dog")]


# ---------------------------------------------------------------------------------------------
# Bad input: one line, exit status 2, before any model loads
# ---------------------------------------------------------------------------------------------
def _bad_inputs(tmp: Path) -> dict:
    (tmp / "not-json.json").write_text("[{\"image_id\": 1, \"caption\": ")
    (tmp / "no-caption.json").write_text(json.dumps([{"image_id": 1, "caption": "a"}, {"image_id": 2}]))
    (tmp / "duplicate.json").write_text(json.dumps([{"image_id": 5, "caption": "a"},
                                                    {"image_id": "5", "caption": "b"}]))
    (tmp / "bad-id.json").write_text(json.dumps([{"image_id": "../x", "caption": "a"}]))
    (tmp / "a-file").write_text("")
    return {  # name: (arguments replacing the good ones, text the error line must contain)
        "missing caption file": ({"--caption-path": str(tmp / "absent.json")}, "absent.json: no such file"),
        "caption file not JSON": ({"--caption-path": str(tmp / "not-json.json")}, "not valid JSON"),
        "entry without caption": ({"--caption-path": str(tmp / "no-caption.json")}, "entry 1"),
        "duplicate image ids": ({"--caption-path": str(tmp / "duplicate.json")}, "both have image_id"),
        "image id that is no file name": ({"--caption-path": str(tmp / "bad-id.json")}, "image_id"),
        "missing checkpoint": ({"--unet": None, "--checkpoint": str(tmp / "absent.safetensors")}, "--checkpoint"),
        "missing diffusion model": ({"--unet": str(tmp / "absent.safetensors")}, "absent.safetensors: no such file"),
        "unwritable output folder": ({"--output-path": str(tmp / "a-file" / "out")}, "--output-path"),
        "zero steps": ({"--steps": "0"}, "--steps"),
        "height not a multiple of 16": ({"--height": "100"}, "--height must be a multiple of 16"),
        "ratio out of range": ({"--ratio": "1.5"}, "--ratio must be in [0.0, 1.0]"),
        "unknown method": ({"--method": "fast"}, "--method"),
        "unet without text encoder": ({"--clip": None}, "--clip"),
    }


def test_bad_input_fails_in_one_line_before_any_model_loads(setup, tmp_path):
    # The diffusion model is a file that is no model: loading it would fail with another message.
    not_a_model = tmp_path / "not-a-model.safetensors"
    not_a_model.write_bytes(b"not a model")
    good = {"--caption-path": str(setup["captions"]), "--output-path": str(tmp_path / "out"),
            "--unet": str(not_a_model), "--clip": str(not_a_model), "--vae": str(not_a_model),
            **dict(zip(SIZE[::2], SIZE[1::2]))}
    failures = []
    for name, (changes, expected) in _bad_inputs(tmp_path).items():
        options = {**good, **changes}
        args = [item for key, value in options.items() if value is not None for item in (key, value)]
        result = run_cli("sample", *args)
        lines = result.stderr.strip().splitlines()
        if result.returncode != 2 or len(lines) != 1 or not lines[0].startswith("python -m commands.evaluate: error:") \
                or expected not in lines[0]:
            failures.append((name, result.returncode, result.stderr[-800:]))
    assert not failures
    assert not (tmp_path / "out").exists()  # no empty output folder is left behind


def test_a_caption_path_that_is_no_caption_file_says_what_it_is_in_one_line(tmp_path):
    not_a_model = tmp_path / "not-a-model.safetensors"
    not_a_model.write_bytes(b"not a model")
    (tmp_path / "a-folder").mkdir()
    (tmp_path / "empty.json").write_bytes(b"")
    good = {"--output-path": str(tmp_path / "out"), "--unet": str(not_a_model), "--clip": str(not_a_model),
            "--vae": str(not_a_model), **dict(zip(SIZE[::2], SIZE[1::2]))}
    cases = {  # caption path: text the error line must contain
        str(tmp_path / "a-folder"): f"--caption-path {tmp_path / 'a-folder'}: is a directory, not a caption file (",
        os.devnull: f"--caption-path {os.devnull}: is not a regular file (a caption file is ",
        str(tmp_path / "empty.json"): f"--caption-path {tmp_path / 'empty.json'}: is empty (a caption file is ",
    }
    for caption_path, expected in cases.items():
        args = [item for key, value in {"--caption-path": caption_path, **good}.items() for item in (key, value)]
        result = run_cli("sample", *args)
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 2 and len(lines) == 1, (caption_path, result.returncode, result.stderr[-800:])
        assert lines[0].startswith("python -m commands.evaluate: error:") and expected in lines[0], lines[0]
        assert "a JSON list of {image_id, caption}, a COCO captions JSON or a PartiPrompts .tsv)" in lines[0]
        assert not (tmp_path / "out").exists()  # stopped before the output folder (and any model)


def one_error_line(result: subprocess.CompletedProcess) -> str:
    """The error line (ComfyUI's own import warnings aside, where it was imported)."""
    lines = [line for line in result.stderr.splitlines() if line.startswith("python -m commands.evaluate: error:")]
    assert result.returncode == 2 and len(lines) == 1 and "Traceback" not in result.stderr, \
        (result.returncode, result.stderr[-3000:])
    return lines[0]


def test_bad_ranks_block_ranges_and_model_files_fail_in_one_line(setup, tmp_path):
    corrupt = tmp_path / "corrupt.safetensors"
    corrupt.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not a header}")
    good = ["sample", "--caption-path", str(setup["captions"]), *setup["model"], *SIZE]
    cases = [  # (extra arguments, environment, text of the error line)
        ([], {"RANK": "abc"}, "RANK, WORLD_SIZE and LOCAL_RANK must be integers"),
        ([], {"RANK": "2", "WORLD_SIZE": "2"}, "RANK 2 is not in [0, WORLD_SIZE 2)"),
        (["--block-start", "9"], {}, "--block-start 9: the model has 3 joint blocks"),
        (["--block-end", "5"], {}, "--block-end 5: the model has 3 joint blocks"),
        (["--unet", str(corrupt)], {}, "not a readable safetensors file"),
    ]
    for number, (extra, env, expected) in enumerate(cases):
        output = tmp_path / f"out{number}"
        line = one_error_line(run_cli(*good, "--output-path", str(output), *extra, env=env))
        assert expected in line, (extra, env, line)
        assert not output.exists(), (extra, env)


def test_the_cli_offers_every_knob(setup):
    sample_parser = evaluate.build_parser()._subparsers._group_actions[0].choices["sample"]
    options = {option for action in sample_parser._actions for option in action.option_strings}
    from sdtm_ops.knobs import KNOBS
    assert {knob.option for knob in KNOBS} <= options
    args = evaluate.build_parser().parse_args(["sample", "--caption-path", "x", "--output-path", "y",
                                               "--cache", "false", "--merge-mode", "prune", "--window", "3"])
    assert (args.cache, args.merge_mode, args.window) == (False, "prune", 3)


def test_compare_checks_images_and_settings_before_any_metric_work(unmerged, merged, tmp_path):
    import shutil
    corrupt = ((evaluate.SETTINGS_FILE, "{not json"), ("000000000139.jpg", "not an image"))
    for number, (name, content) in enumerate(corrupt):
        folder = tmp_path / f"a{number}"
        shutil.copytree(merged["dir"], folder)
        (folder / name).write_text(content)
        report = tmp_path / f"report{number}.json"
        line = one_error_line(run_cli("compare", str(folder), str(unmerged["dir"]), "--json", str(report)))
        assert name in line and not report.exists(), line


def test_a_bad_sampler_name_is_refused_before_any_model_loads(setup, tmp_path):
    not_a_model = tmp_path / "not-a-model.safetensors"
    not_a_model.write_bytes(b"not a model")
    result = run_cli("sample", "--caption-path", str(setup["captions"]), "--output-path", str(tmp_path / "out"),
                     "--unet", str(not_a_model), "--clip", str(not_a_model), "--vae", str(not_a_model),
                     *SIZE, "--sampler", "eulerr")
    assert result.returncode == 2
    error_lines = [line for line in result.stderr.splitlines() if line.startswith("python -m commands.evaluate")]
    assert len(error_lines) == 1 and "--sampler must be one of ComfyUI's samplers" in error_lines[0]
    assert "euler_ancestral" in error_lines[0]


def test_compare_refuses_folders_without_common_images(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    result = run_cli("compare", str(tmp_path / "a"), str(tmp_path / "b"))
    assert result.returncode == 2
    assert result.stderr.strip().startswith("python -m commands.evaluate: error: no image file names in common")
    assert len(result.stderr.strip().splitlines()) == 1


# ---------------------------------------------------------------------------------------------
# harness/image_metrics.py against independent computations
# ---------------------------------------------------------------------------------------------
def _reference_ssim(a: np.ndarray, b: np.ndarray) -> float:
    """Wang et al. 2004 with scipy: Gaussian window sigma 1.5 truncated to 11 taps, borders mirrored
    (the convention torchmetrics uses), per channel, averaged."""
    from scipy.ndimage import gaussian_filter

    def blur(x):
        return gaussian_filter(x, sigma=1.5, truncate=3.5, mode="mirror")
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    values = []
    for x, y in zip(a, b):
        mx, my = blur(x), blur(y)
        vx, vy, cxy = blur(x * x) - mx * mx, blur(y * y) - my * my, blur(x * y) - mx * my
        values.append(((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2)))
    return float(np.mean(values))


def test_psnr_and_ssim_match_independent_computations():
    generator = torch.Generator().manual_seed(0)
    a = torch.rand(3, 3, 40, 56, generator=generator)
    b = (a + 0.08 * torch.randn(a.shape, generator=generator)).clamp(0, 1)
    b[2] = a[2]
    got_psnr, got_ssim = psnr(a, b), ssim(a, b)
    assert got_psnr.shape == got_ssim.shape == (3,)
    for i in range(2):
        x, y = a[i].double().numpy(), b[i].double().numpy()
        # rel 1e-6: torchmetrics turns natural logs into dB with a float32 constant
        assert got_psnr[i].item() == pytest.approx(10 * math.log10(1 / np.mean((x - y) ** 2)), rel=1e-6)
        assert got_ssim[i].item() == pytest.approx(_reference_ssim(x, y), abs=1e-6)
    assert got_psnr[2].item() == math.inf and got_ssim[2].item() == pytest.approx(1.0, abs=1e-9)


@pytest.mark.parametrize("a,b,message", [
    (torch.rand(1, 3, 16, 16), torch.rand(1, 3, 16, 12), "same shape"),
    (torch.rand(3, 16, 16), torch.rand(3, 16, 16), "[B, C, H, W]"),
    (torch.rand(1, 16, 16, 3), torch.rand(1, 16, 16, 3), "channels-first"),
    (torch.rand(1, 3, 16, 16) * 255, torch.rand(1, 3, 16, 16), "values in [0, 1]"),
    (torch.randint(0, 255, (1, 3, 16, 16)), torch.rand(1, 3, 16, 16), "float tensor"),
])
def test_metrics_refuse_bad_images(a, b, message):
    for metric in (psnr, ssim):
        with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
            metric(a, b)


def test_ssim_refuses_images_smaller_than_its_window():
    with pytest.raises(ValueError, match="at least 11x11"):
        ssim(torch.rand(1, 3, 10, 32), torch.rand(1, 3, 10, 32))


# ---------------------------------------------------------------------------------------------
# compare with FID and CLIP score: the maintained implementations (torchmetrics, torch-fidelity,
# transformers' CLIP) run for real, with small random-weight models saved to local files
# ---------------------------------------------------------------------------------------------
def _random_inception_weights(path: Path) -> Path:
    """A weights file for torch-fidelity's InceptionV3 with PyTorch's default random initialisation (its
    real weights are a download). The class lays out its own layers; it then refuses the empty weights
    it is given, and its freshly initialised layers are saved."""
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3
    empty = path.with_name("empty.pth")
    torch.save({}, empty)
    extractor = FeatureExtractorInceptionV3.__new__(FeatureExtractorInceptionV3)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        with pytest.raises(RuntimeError, match="Missing key"):
            extractor.__init__("inception-v3-compat", ["2048"], feature_extractor_weights_path=str(empty))
    torch.save(extractor.state_dict(), path)
    return path


def _tiny_clip(folder: Path) -> Path:
    """A small random CLIP saved as transformers saves any CLIP (model + processor), with the CLIP BPE
    vocabulary ComfyUI ships. Positive final-norm biases and projections make the embeddings point
    the same general way, so the CLIP score (which clamps negative cosines to 0) is not trivially 0."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor, CLIPTokenizer
    import_comfy()  # puts ComfyUI's tree on sys.path
    import comfy.sd1_clip
    vocabulary = Path(comfy.sd1_clip.__file__).parent / "sd1_tokenizer"
    tokenizer = CLIPTokenizer(str(vocabulary / "vocab.json"), str(vocabulary / "merges.txt"))
    images = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    layers = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2}
    config = CLIPConfig(text_config={**layers, "vocab_size": tokenizer.vocab_size, "max_position_embeddings": 77},
                        vision_config={**layers, "image_size": 32, "patch_size": 8}, projection_dim=16)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = CLIPModel(config)
    with torch.no_grad():
        model.vision_model.post_layernorm.bias.fill_(1.0)
        model.text_model.final_layer_norm.bias.fill_(1.0)
        model.visual_projection.weight.abs_()
        model.text_projection.weight.abs_()
    model.save_pretrained(folder)
    CLIPProcessor(image_processor=images, tokenizer=tokenizer).save_pretrained(folder)
    return folder


def _independent_clip_score(folder: Path, files: list[Path], captions: list[str]) -> float:
    """The CLIP score straight from transformers' CLIPModel: 100 * max(cos, 0), averaged."""
    from transformers import CLIPModel, CLIPProcessor
    model, processor = CLIPModel.from_pretrained(folder), CLIPProcessor.from_pretrained(folder)
    pixels = [torch.from_numpy(np.asarray(Image.open(f).convert("RGB")).copy()).permute(2, 0, 1) for f in files]
    inputs = processor(text=captions, images=pixels, return_tensors="pt", padding=True)
    with torch.no_grad():
        out = model(**inputs)
    cosine = (out.image_embeds * out.text_embeds).sum(-1)  # both normalised; row i pairs image i, caption i
    return float((100 * cosine.clamp(min=0)).mean())


def test_compare_with_fid_and_clip_score(setup, unmerged, merged, tmp_path):
    short = {image_id: " ".join(caption.split()[:8]) for image_id, caption in CAPTIONS}
    captions = tmp_path / "captions.json"
    captions.write_text(json.dumps([{"image_id": i, "caption": c} for i, c in short.items()]))
    clip_folder = _tiny_clip(tmp_path / "clip")
    weights = _random_inception_weights(tmp_path / "inception.pth")
    report_path = tmp_path / "report.json"
    # The unmerged images are their own FID reference: B's FID is then that of a set with itself.
    result = run_cli("compare", str(merged["dir"]), str(unmerged["dir"]), "--json", str(report_path),
                     "--fid-ref", str(unmerged["dir"]), "--fid-weights", str(weights),
                     "--caption-path", str(captions), "--clip-model", str(clip_folder), "--device", "cpu")
    assert result.returncode == 0, result.stderr[-4000:]
    report = json.loads(report_path.read_text())
    fid, clip_score = report["fid"], report["clip_score"]
    assert math.isfinite(fid["a"]) and fid["a"] > 0
    assert abs(fid["b"]) < 1e-3 * fid["a"]
    assert clip_score["images"] == len(CAPTIONS)
    for key, folder in (("a", merged["dir"]), ("b", unmerged["dir"])):
        names = sorted(short)
        expected = _independent_clip_score(clip_folder, [folder / f"{i:012d}.jpg" for i in names],
                                           [short[i] for i in names])
        assert expected > 0
        assert clip_score[key] == pytest.approx(expected, rel=1e-4)
    assert f"A {fid['a']:.3f}" in result.stdout and f"A {clip_score['a']:.3f}" in result.stdout
