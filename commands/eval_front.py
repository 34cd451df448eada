"""`python -m commands.evaluate front`: the speed-fidelity front on the user's own model (or a built-in
fixture) and device. The unpatched reference, the unpatched model at fewer steps, core LazyCache at a few
thresholds, every SDTM preset and the best stack, each run through ComfyUI's KSampler path
(``photo_fixture.sample.sample_fixture``: ``nodes.common_ksampler``, what the KSampler node runs) with the
patches built as the nodes build them (``benchmarks.front_settings``). For every setting: the MEASURED
sampler seconds per image on this device (CUDA-synchronised on a GPU; one warm-up run per setting left
out; the median over captions and repeats, the settings interleaved), the speedup against the reference's
seconds, peak memory, and PSNR / SSIM of the decoded image against the reference image of the same
caption and seed (LPIPS and CLIP score where their optional packages and weights are there). Writes
front.json and front.png (``commands.eval_front_report``) only when every run is done. See
docs/EVALUATION.md."""
from __future__ import annotations

import argparse
import inspect
import math
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path

from .eval_captions import Prompt, UsageError, image_stem, load_captions
from .eval_compare import clip_metric, optional_module
from .eval_sampling import (
    SampleJob,
    _check_output_folder,
    check_sampler_names,
    load_models,
    model_file_depth,
    pick_device,
    prepare_comfy,
    validate_models,
)

FIXTURE_NAMES = ("photo", "deep", "dense")
KINDS = ("reference", "fewer_steps", "lazycache", "sdtm", "stack")
STACK = ("balanced", 0.2)  # the stack the committed fronts measure: SDTM balanced, then LazyCache 0.2
MODEL_CAPTIONS = (  # the built-in captions for a user's model (COCO-like scenes)
    "a photo of a cat sleeping on a sofa next to a window",
    "a red double-decker bus driving down a city street",
    "a bowl of fruit on a wooden kitchen table",
    "a lighthouse on a rocky coast at sunset",
)
MODEL_SIZE, MODEL_CFG = 1024, 7.0  # the defaults of `evaluate sample`
UNSUPPORTED = ("not an SD3 / SD3.5 model ({why}): SDTM and this front run on SD3-family MMDiT models only "
               "(SD3-medium, SD3.5-medium / large / large-turbo)")


@dataclass
class FrontJob:
    args: argparse.Namespace
    prompts: list[Prompt]
    output: Path
    models: dict | None  # eval_sampling.validate_models' files; None for a fixture
    fixture: str | None
    width: int
    height: int
    cfg: float
    fewer_steps: list[int]  # step counts below --steps, most first
    thresholds: list[float]


def _numbers(option: str, text: str, low: float, high: float) -> list[float]:
    """A comma-separated list of numbers in (low, high]."""
    values = []
    for part in text.split(","):
        try:
            value = float(part)
        except ValueError:
            value = math.nan
        if not low < value <= high:
            raise UsageError(f"{option} must be a comma-separated list of numbers in ({low:g}, {high:g}], "
                             f"got {part.strip()!r}")
        values.append(value)
    return values


def validate_front(args: argparse.Namespace) -> FrontJob:
    """Everything that can be checked without ComfyUI, in one line each: the model (or fixture), sizes,
    step counts, thresholds, captions, optional metric packages and the output folder (created last)."""
    if args.fixture:
        given = [option for option, value in (("--checkpoint", args.checkpoint), ("--unet", args.unet),
                                              ("--clip", args.clip), ("--vae", args.vae),
                                              ("--models-dir", args.models_dir)) if value]
        if given:
            raise UsageError(f"--fixture {args.fixture} is a whole model (with its text encoder and exact 'VAE'): "
                             f"leave out {', '.join(given)}")
        from benchmarks.bench_front import FIXTURE_SIZES, FIXTURES, SIZE_PX
        path = FIXTURES[args.fixture]
        if not path.is_file():
            raise UsageError(f"--fixture {args.fixture}: {path} is missing (it ships in the repository's "
                             "tests/fixtures)")
        models, size, multiple = None, FIXTURE_SIZES.get(args.fixture, SIZE_PX), 4
        cfg_default = None  # the fixture's own, read with its sampler
    else:
        if not args.checkpoint and not args.unet:
            raise UsageError("a model is needed: --fixture photo|deep|dense, or --checkpoint FILE, or --unet FILE "
                             "with --clip FILE and --vae FILE")
        models, size, multiple, cfg_default = validate_models(args), MODEL_SIZE, 16, MODEL_CFG
    width = args.width if args.width is not None else size
    height = args.height if args.height is not None else size
    why = " (a fixture image has 2x2 pixels per latent pixel, 2x2 latent pixels per token)" if args.fixture else ""
    for option, value in (("--width", width), ("--height", height)):
        if value % multiple:
            raise UsageError(f"{option} must be a multiple of {multiple}{why}, got {value}")
    if args.steps < 2:
        raise UsageError(f"--steps must be at least 2 (the front compares it with fewer steps), got {args.steps}")
    fractions = _numbers("--fewer-steps", args.fewer_steps, 0.0, 1.0)
    fewer = sorted({max(1, round(args.steps * f)) for f in fractions} - {args.steps}, reverse=True)
    if not fewer:
        raise UsageError(f"--fewer-steps {args.fewer_steps}: gives no step count below --steps {args.steps}")
    thresholds = _numbers("--lazy-thresholds", args.lazy_thresholds, 0.0, 3.0)
    if args.caption_path:
        prompts = load_captions(args.caption_path)
    else:
        captions = MODEL_CAPTIONS if not args.fixture else _fixture_captions()
        prompts = [Prompt(i, text, image_stem(i)) for i, text in enumerate(captions)]
    prompts = prompts[:args.limit] if args.limit is not None else prompts
    if not optional_module("torchmetrics"):
        raise UsageError("front needs torchmetrics for PSNR and SSIM, which is not installed "
                         "(pip install torchmetrics)")
    if args.clip_model is not None:
        for module, package in (("torchmetrics", "torchmetrics"), ("transformers", "transformers")):
            if not optional_module(module):
                raise UsageError(f"--clip-model: the CLIP score needs {package}, which is not installed "
                                 f"(pip install {package})")
    output = Path(args.output_path)
    _check_output_folder(output)  # last: it creates the folder
    from photo_fixture.sample import CFG
    cfg = args.cfg if args.cfg is not None else (cfg_default if cfg_default is not None else CFG)
    return FrontJob(args, prompts, output, models, args.fixture, width, height, cfg, fewer, thresholds)


def _fixture_captions() -> list[str]:
    """The captions the fixtures learned (one per training photograph)."""
    from photo_fixture.photo_codec import PHOTOS
    return [photo.caption for photo in PHOTOS[:4]]


# ---------------------------------------------------------------------------------------------
# The model, the settings and the timed runs
# ---------------------------------------------------------------------------------------------
@dataclass
class Entry:
    name: str
    kind: str  # one of KINDS
    params: dict  # what the nodes get
    model: object  # the MODEL it samples with (patched clone, or the unpatched one)
    steps: int
    seconds: list[float] = field(default_factory=list)
    peaks: list[int] = field(default_factory=list)
    metrics: list[dict] = field(default_factory=list)  # per caption, against the reference's image
    clip_score: float | None = None


@dataclass
class Loaded:
    model: object
    clip: object
    decode: object  # latent [1, 16, h, w] -> image [1, 3, H, W] float in [0, 1], on the CPU
    latent_hw: tuple[int, int]
    info: dict


def _load(job: FrontJob, device: str, nodes) -> Loaded:
    if job.fixture:
        from benchmarks.bench_front import FIXTURES
        from harness.comfy_env import REPO
        from photo_fixture import photo_codec
        path = FIXTURES[job.fixture]
        model, clip = photo_codec.load_fixture(path)
        info = {"fixture": job.fixture, "file": str(path.relative_to(REPO) if path.is_relative_to(REPO) else path),
                "sha256": photo_codec.file_digest(path)}
        return Loaded(model, clip, photo_codec.decode, (job.height // 2, job.width // 2), info)
    sample_job = SampleJob(job.args, job.prompts, job.output, job.models, {})
    model, clip, vae = load_models(sample_job, nodes)
    diffusion = getattr(model.model, "diffusion_model", None)
    if not hasattr(diffusion, "joint_blocks"):
        raise UsageError(UNSUPPORTED.format(why=f"ComfyUI loaded it as {type(model.model).__name__} with a "
                                                f"{type(diffusion).__name__}, not an MMDiT"))

    def decode(latent):
        return vae.decode(latent)[..., :3].movedim(-1, 1).float().clamp(0.0, 1.0).cpu()
    info = {key: (value.describe() if hasattr(value, "describe") else [m.describe() for m in value] if value else None)
            for key, value in job.models.items()}
    return Loaded(model, clip, decode, (job.height // 8, job.width // 8), {**info, "clip_type": job.args.clip_type})


def _entries(job: FrontJob, pack, model) -> list[Entry]:
    """Reference, fewer steps, LazyCache, every SDTM preset and the stack, as the nodes would patch them."""
    from benchmarks.front_settings import build_settings, lazycache, stack_settings
    steps = job.args.steps
    depth = len(model.model.diffusion_model.joint_blocks)
    entries = [Entry("unpatched", "reference", {}, model, steps)]
    entries += [Entry(f"fewer steps {k} of {steps}", "fewer_steps", {"steps": k, "step_cost": k / steps}, model, k)
                for k in job.fewer_steps]
    window = {f"{name}_percent": value.default for name, value in inspect.signature(lazycache).parameters.items()
              if name in ("start", "end")}  # the LazyCache node's defaults, as front_settings builds it
    entries += [Entry(f"LazyCache {t:g}", "lazycache", {"lazycache": t, **window}, lazycache(t)(model), steps)
                for t in job.thresholds]
    for setting in build_settings(pack, depth, {"presets"}, steps):
        entries.append(Entry(setting.name, "sdtm", setting.params, setting.build(model), steps))
    label, threshold = STACK
    stack = stack_settings(pack, label, pack.presets.preset_config(label), threshold)[0]  # SDTM first, as in a graph
    entries.append(Entry(stack.name, "stack", stack.params, stack.build(model), steps))
    return entries


def _device_name(device: str) -> str:
    import torch
    if device == "cuda":
        return f"cuda: {torch.cuda.get_device_name()}"
    return f"cpu: {platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads"


def _timed_run(entry: Entry, job: FrontJob, loaded: Loaded, conditioning, index: int, cuda: bool):
    """One image through the KSampler path: (latent, sampler seconds, peak CUDA bytes or None)."""
    import torch

    from photo_fixture.sample import sample_fixture
    positive, negative = conditioning[index]
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    latent = sample_fixture(entry.model, job.args.seed + index, positive, negative, entry.steps, loaded.latent_hw,
                            cfg=job.cfg, sampler=job.args.sampler, scheduler=job.args.scheduler)
    if cuda:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - started
    return latent, seconds, (torch.cuda.max_memory_allocated() if cuda else None)


def _lpips(device: str):
    """torchmetrics' LPIPS (AlexNet) where torchmetrics and torchvision are installed and torchvision's AlexNet
    weights are in the torch hub cache (nothing is downloaded): (metric or None, reason when None)."""
    missing = [m for m in ("torchmetrics", "torchvision") if not optional_module(m)]
    if missing:
        return None, f"not available: {' and '.join(missing)} not installed"
    import torch
    import torchvision
    url = torchvision.models.AlexNet_Weights.IMAGENET1K_V1.url
    cached = Path(torch.hub.get_dir()) / "checkpoints" / url.rsplit("/", 1)[-1]
    if not cached.is_file():
        return None, (f"not available: torchvision's AlexNet weights are not in the torch hub cache ({cached}); "
                      f"LPIPS would download them from {url}")
    from torchmetrics.image.lpip import LearnedPerceptualImagePatchSimilarity
    return LearnedPerceptualImagePatchSimilarity(net_type="alex", normalize=True).to(device), None


def _scores(image, reference, prompt: Prompt, seed: int, device: str, lpips, clip_score) -> dict:
    """One image against the reference's image of its caption and seed: PSNR, SSIM, and LPIPS and the
    CLIP score (100 * max(cos, 0) of the image and its caption; a setting's is the mean over its images,
    as CLIPScore's own over a batch) where those metrics are there."""
    import torch

    from harness.image_metrics import psnr, ssim
    scores = {"caption": prompt.caption, "seed": seed, "psnr": float(psnr(image, reference)[0]),
              "ssim": float(ssim(image, reference)[0]), "lpips": None, "clip_score": None}
    if lpips is not None:
        scores["lpips"] = float(lpips(image.to(device), reference.to(device)))
    if clip_score is not None:
        clip_score.update([(255 * image[0]).round().to(torch.uint8).to(device)], [prompt.caption])
        scores["clip_score"] = float(clip_score.compute())
        clip_score.reset()
    return scores


def run_front(job: FrontJob) -> int:
    import torch
    from tqdm import tqdm

    from .eval_front_report import report_rows, write_outputs
    args = job.args
    device = pick_device(args.device)
    if job.fixture:
        from harness.comfy_env import import_comfy, load_pack
        nodes = import_comfy(device)
        pack = load_pack()
        check_sampler_names(args)
    else:
        sample_job = SampleJob(args, job.prompts, job.output, job.models, {})
        nodes, pack = prepare_comfy(sample_job, device)  # names, sampler, scheduler, CLIP type: no model loads
        depth, read = model_file_depth(sample_job)
        if read and depth is None:
            model = job.models["checkpoint"] or job.models["unet"]
            raise UsageError(f"{model.option} {model.describe()}: " +
                             UNSUPPORTED.format(why="its weights hold no MMDiT joint_blocks"))
    import comfy.utils
    comfy.utils.PROGRESS_BAR_ENABLED = False  # one bar over the whole run instead of one per sampler call
    started = time.perf_counter()
    loaded = _load(job, device, nodes)
    entries = _entries(job, pack, loaded.model)
    cuda = device == "cuda"
    lpips, lpips_reason = _lpips(device)
    clip_score = clip_metric(args.clip_model, device) if args.clip_model else None
    runs = len(entries) * (1 + len(job.prompts) * args.repeats)
    bar = tqdm(total=runs, unit="run", desc="front")
    with torch.inference_mode():
        def encode(text: str):
            return nodes.CLIPTextEncode().encode(loaded.clip, text)[0]
        negative = encode(args.negative_prompt)
        conditioning = [(encode(p.caption), negative) for p in job.prompts]
        for entry in entries:  # warm-up, left out of the timings (weights to the device, kernels, caches)
            bar.set_postfix_str(f"warm-up {entry.name}")
            _timed_run(entry, job, loaded, conditioning, 0, cuda)
            bar.update()
        references = []  # the reference's decoded image per caption (it runs first in every round)
        for repeat in range(args.repeats):
            for index, prompt in enumerate(job.prompts):
                for entry in entries:  # interleaved, so that a drift of the machine's speed hits every setting
                    bar.set_postfix_str(entry.name)
                    latent, seconds, peak = _timed_run(entry, job, loaded, conditioning, index, cuda)
                    entry.seconds.append(seconds)
                    entry.peaks.append(peak)
                    if repeat == 0:  # the images do not change between repeats: score the first
                        image = loaded.decode(latent)
                        if entry.kind == "reference":
                            references.append(image)
                        entry.metrics.append(_scores(image, references[index], prompt, args.seed + index, device,
                                                     lpips, clip_score))
                    bar.update()
    bar.close()
    for entry in entries:
        clip_scores = [m["clip_score"] for m in entry.metrics]
        entry.clip_score = sum(clip_scores) / len(clip_scores) if clip_score is not None else None
    setup = {
        "command": "python -m commands.evaluate " + " ".join(getattr(args, "argv", [])),
        "device": _device_name(device), "torch": torch.__version__, "comfyui": pack.hook.comfyui_version(),
        "model": loaded.info, "width": job.width, "height": job.height, "latent": list(loaded.latent_hw),
        "steps": args.steps, "sampler": args.sampler, "scheduler": args.scheduler, "cfg": job.cfg, "seed": args.seed,
        "negative_prompt": args.negative_prompt, "captions": [p.caption for p in job.prompts],
        "repeats": args.repeats,
        "timing": ("sampler seconds per image (the KSampler call: sampling only, no text encoding or VAE decoding), "
                   f"{'CUDA-synchronised, ' if cuda else ''}median over {len(job.prompts)} caption(s) x "
                   f"{args.repeats} repeat(s) after one warm-up run per setting, settings interleaved"),
        "memory": ("peak CUDA memory allocated by torch during a sampler call (torch.cuda.max_memory_allocated, "
                   "weights included), the largest over the timed runs" if cuda else
                   "not measured on the CPU: torch keeps no per-call peak of CPU memory, and the process's peak "
                   "RSS only ever grows, so it cannot tell the settings apart"),
        "metrics": {"lpips": {"computed": lpips is not None, "reason": lpips_reason},
                    "clip_score": {"computed": clip_score is not None, "model": args.clip_model,
                                   "reason": None if clip_score is not None else "not computed: give --clip-model"}},
        "seconds_total": round(time.perf_counter() - started, 1),
    }
    rows = report_rows(entries, cuda)
    write_outputs(job.output, setup, rows)
    return 0

