"""Evaluation sampling over a caption file, on one device or many (torchrun), and quality metrics.

    python -m tools.evaluate sample --caption-path captions.json --checkpoint sd3_medium_incl_clips.safetensors \\
        --output-path out/sdtm --method sdtm
    torchrun --nproc_per_node=4 -m tools.evaluate sample ...      # the same files, four times faster
    python -m tools.evaluate compare out/sdtm out/none [--fid-ref coco/val2017] [--caption-path captions.json]

``sample`` runs ComfyUI's own loaders, text encoding (CLIPTextEncode), sampler (comfy.sample, the
KSampler path), VAE decoding and this pack's patch, and writes one image per caption, named
``<image_id zero-padded to 12>.jpg`` (the COCO convention, so FID against val2017 is direct).
Each image's starting noise depends only on --seed and its image_id. Prompts are cut into a fixed list
of batches (--batch-size, in caption-file order) and batch i runs on rank i % world_size, so every
batch, and therefore every file, is the same whatever the number of processes. Existing images are
skipped, the caption file is only read, and bad input is reported in one line before any model loads.
See docs/EVALUATION.md.
"""
from __future__ import annotations

import argparse
import csv
import hashlib
import json
import math
import os
import re
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

PROG = "python -m tools.evaluate"
SETTINGS_FILE = "evaluate_settings.json"  # what a sample folder was made with; checked when resuming
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")
SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")
TAESD_NAMES = ("taesd", "taesdxl", "taesd3", "taef1")  # VAELoader's built-in tiny autoencoders
MODEL_FOLDERS = {  # ComfyUI model kind -> sub-folders of a models folder (current and legacy names)
    "checkpoints": ("checkpoints",),
    "diffusion_models": ("diffusion_models", "unet"),
    "text_encoders": ("text_encoders", "clip"),
    "vae": ("vae",),
    "vae_approx": ("vae_approx",),
    "embeddings": ("embeddings",),
}


class UsageError(Exception):
    """Bad input: reported as one line, exit status 2."""


# ---------------------------------------------------------------------------------------------
# Caption files
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Prompt:
    image_id: int | str
    caption: str
    name: str  # file name stem of its image


def image_stem(image_id: int | str) -> str:
    """File name stem of an image: integer ids (and strings of digits) zero-padded to 12 digits, as
    COCO names its files; other string ids as they are (letters, digits, '.', '_', '-')."""
    if isinstance(image_id, bool):
        raise TypeError(f"image_id must be an integer or a string, got {image_id!r}")
    if isinstance(image_id, int) or (isinstance(image_id, str) and image_id.isdigit() and image_id.isascii()):
        number = int(image_id)
        if number < 0:
            raise ValueError(f"image_id must not be negative, got {image_id!r}")
        return f"{number:012d}"
    if isinstance(image_id, str) and SAFE_NAME.match(image_id) and image_id not in (".", ".."):
        return image_id
    raise ValueError(f"image_id must be a non-negative integer or a string of letters, digits, '.', '_', '-' "
                     f"(it names the image file), got {image_id!r}")


def _prompts_from_pairs(pairs: list[tuple[object, object]], where: str) -> list[Prompt]:
    prompts, seen = [], {}
    for index, (image_id, caption) in enumerate(pairs):
        if not isinstance(caption, str) or not caption.strip():
            raise UsageError(f"{where}: entry {index} (image_id {image_id!r}) has no caption text")
        try:
            stem = image_stem(image_id)
        except (TypeError, ValueError) as error:
            raise UsageError(f"{where}: entry {index}: {error}") from None
        if stem in seen:
            raise UsageError(f"{where}: entries {seen[stem]} and {index} both have image_id {image_id!r}")
        seen[stem] = index
        prompts.append(Prompt(image_id, caption.strip(), stem))
    if not prompts:
        raise UsageError(f"{where}: no captions in the file")
    return prompts


def _coco_longest_captions(data: dict, where: str) -> list[tuple[object, object]]:
    """Raw COCO captions_*.json: the longest caption of each image (ties: the lowest annotation id),
    ordered by image_id."""
    annotations = data.get("annotations")
    if not isinstance(annotations, list):
        raise UsageError(f"{where}: a COCO captions file needs an 'annotations' list")
    best: dict = {}
    for index, item in enumerate(annotations):
        if not isinstance(item, dict) or not isinstance(item.get("image_id"), int) or not isinstance(item.get("caption"), str):
            raise UsageError(f"{where}: annotation {index} needs an integer 'image_id' and a 'caption' string")
        caption, order = item["caption"].strip(), item.get("id", index)
        current = best.get(item["image_id"])
        if current is None or (len(caption), -order) > (len(current[0]), -current[1]):
            best[item["image_id"]] = (caption, order)
    return [(image_id, best[image_id][0]) for image_id in sorted(best)]


def _partiprompts(path: Path, where: str) -> list[tuple[object, object]]:
    """PartiPrompts TSV (columns Prompt, Category, Challenge, Note): image_id = row index from 0."""
    with path.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE))  # prompts keep their quotes
    if not rows or "Prompt" not in rows[0]:
        raise UsageError(f"{where}: a PartiPrompts TSV needs a header row with a 'Prompt' column")
    column = rows[0].index("Prompt")
    body = [row for row in rows[1:] if any(cell.strip() for cell in row)]
    for number, row in enumerate(body):
        if len(row) <= column:
            raise UsageError(f"{where}: data row {number} has no 'Prompt' column")
    return [(index, row[column]) for index, row in enumerate(body)]


def load_captions(path: str | Path) -> list[Prompt]:
    """Read a caption file: a JSON list of {"image_id", "caption"} (file order), a raw COCO
    captions_*.json (the longest caption per image, by image_id), or a PartiPrompts .tsv (row order,
    image_id = row index). Raises UsageError naming the file and the problem."""
    path = Path(path)
    where = f"--caption-path {path}"
    if not path.is_file():
        raise UsageError(f"{where}: no such file")
    try:
        if path.suffix.lower() == ".tsv":
            return _prompts_from_pairs(_partiprompts(path, where), where)
        with path.open(encoding="utf-8") as handle:
            data = json.load(handle)
    except UnicodeDecodeError as error:
        raise UsageError(f"{where}: not UTF-8 text ({error.reason} at byte {error.start})") from None
    except json.JSONDecodeError as error:
        raise UsageError(f"{where}: not valid JSON (line {error.lineno}, column {error.colno}: {error.msg})") from None
    except OSError as error:
        raise UsageError(f"{where}: cannot read it ({error.strerror})") from None
    if isinstance(data, dict):
        return _prompts_from_pairs(_coco_longest_captions(data, where), where)
    if isinstance(data, list):
        pairs = []
        for index, item in enumerate(data):
            if not isinstance(item, dict) or "image_id" not in item or "caption" not in item:
                raise UsageError(f"{where}: entry {index} must be an object with 'image_id' and 'caption'")
            pairs.append((item["image_id"], item["caption"]))
        return _prompts_from_pairs(pairs, where)
    raise UsageError(f"{where}: expected a JSON list of {{image_id, caption}} objects, a COCO captions file "
                     f"or a PartiPrompts .tsv, got JSON {type(data).__name__}")


# ---------------------------------------------------------------------------------------------
# Determinism: per-image noise, fixed batches, sharding
# ---------------------------------------------------------------------------------------------
def derived_seed(seed: int, key: str) -> int:
    """A 63-bit seed that depends only on (seed, key)."""
    digest = hashlib.sha256(f"{seed}/{key}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


def image_noise(seed: int, stem: str, latent_shape: tuple[int, ...]):
    """The starting noise of one image [1, *latent_shape], float32 on the CPU (as ComfyUI makes it)."""
    import torch
    generator = torch.Generator(device="cpu").manual_seed(derived_seed(seed, "image/" + stem))
    return torch.randn((1, *latent_shape), generator=generator, dtype=torch.float32, device="cpu")


def make_batches(prompts: list[Prompt], batch_size: int) -> list[list[Prompt]]:
    """The global batch list: consecutive prompts in file order."""
    return [prompts[i:i + batch_size] for i in range(0, len(prompts), batch_size)]


def shard(batches: list, rank: int, world_size: int) -> list:
    """The batches of one rank: batch i goes to rank i % world_size."""
    return batches[rank::world_size]


# ---------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------
class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line instead of usage + message
        raise UsageError(message)


def _ranged(kind: type, low, high):
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {'a whole number' if kind is int else 'a number'} in "
                                             f"[{low}, {high}], got {text!r}") from None
        if not (low <= value <= high) or (isinstance(value, float) and math.isnan(value)):
            raise argparse.ArgumentTypeError(f"must be in [{low}, {high}], got {text!r}")
        return value
    return parse


def _boolean(text: str) -> bool:
    if text.lower() in ("1", "true", "yes", "on"):
        return True
    if text.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"must be true or false, got {text!r}")


# CLI option -> (SDTMConfig field, type, help). Left out, each takes the preset's value.
SDTM_KNOBS = {
    "ratio": ("ratio", float, "centre of the cosine ratio schedule (fraction of image tokens merged away)"),
    "deviation": ("deviation", float, "half-range of the schedule: ratio + deviation at the first step, ratio - deviation at the last"),
    "switch_percent": ("switch", float, "last progress (step s of S is at s/(S-1)) of the structure phase"),
    "start_percent": ("start", float, "merging starts at this progress"),
    "end_percent": ("end", float, "merging stops after this progress"),
    "window": ("window", int, "window side k (k x k token windows)"),
    "priority_weight": ("priority_weight", float, "a_s: bonus of long-merged windows in the structure phase"),
    "protect_steps_every": ("protect_every", int, "every P-th step runs at full length (0 = off)"),
    "protect_blocks_every": ("protect_blocks_every", int, "f > 0: blocks l %% f == 0 and the last block never merge"),
    "block_start": ("block_start", int, "first joint block that merges"),
    "block_end": ("block_end", int, "last joint block that merges (-1 = the last)"),
    "cache": ("use_cache", _boolean, "true/false: blend protected steps' outputs into merged positions"),
    "cache_fresh_weight": ("cache_fresh_weight", float, "mcw: weight of the fresh value when blending"),
    "merge_mode": ("merge_mode", str, "mean or prune"),
    "merge_seed": ("seed", int, "merge RNG seed (-1 = the sampler's seed)"),
    "round_to": ("round_to", int, "merged counts are rounded down to a multiple of this"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=PROG, description="SDTM evaluation: sample images over a caption file, compare folders.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    sample = commands.add_parser("sample", help="one image per caption, through ComfyUI with (or without) SDTM")
    sample.add_argument("--caption-path", required=True,
                        help="JSON list of {image_id, caption}, raw COCO captions_*.json (longest caption per image) "
                             "or PartiPrompts .tsv")
    sample.add_argument("--output-path", required=True, help="folder for the images (created; existing images are kept)")
    sample.add_argument("--checkpoint", help="a ComfyUI checkpoint (file path, or a name in ComfyUI's checkpoints folders)")
    sample.add_argument("--unet", help="a diffusion model (path, or a name in ComfyUI's diffusion_models folders)")
    sample.add_argument("--clip", action="append", default=[],
                        help="a text encoder (path, or a name in ComfyUI's text_encoders folders); repeat for "
                             "several (clip_l, clip_g, t5xxl)")
    sample.add_argument("--clip-type", default="sd3", help="ComfyUI's CLIPLoader type (default sd3)")
    sample.add_argument("--vae", help="a VAE (path, or a name in ComfyUI's vae folders, or taesd3)")
    sample.add_argument("--models-dir", action="append", default=[],
                        help="a ComfyUI models folder (checkpoints/, diffusion_models/, text_encoders/, vae/, "
                             "vae_approx/) searched before ComfyUI's own; repeatable")
    sample.add_argument("--height", type=_ranged(int, 16, 16384), default=1024, help="multiple of 16 (default 1024)")
    sample.add_argument("--width", type=_ranged(int, 16, 16384), default=1024, help="multiple of 16 (default 1024)")
    sample.add_argument("--steps", type=_ranged(int, 1, 10000), default=50, help="default 50")
    sample.add_argument("--cfg", type=_ranged(float, 0.0, 100.0), default=7.0, help="default 7.0")
    sample.add_argument("--sampler", default="euler", help="a ComfyUI sampler name (default euler)")
    sample.add_argument("--scheduler", default="sgm_uniform", help="a ComfyUI scheduler name (default sgm_uniform)")
    sample.add_argument("--negative-prompt", default="", help="the negative prompt (default empty)")
    sample.add_argument("--batch-size", type=_ranged(int, 1, 4096), default=4, help="images per sampler call (default 4)")
    sample.add_argument("--seed", type=_ranged(int, 0, 2**63 - 1), default=0, help="default 0")
    sample.add_argument("--limit", type=_ranged(int, 1, 10**9), help="only the first N captions")
    sample.add_argument("--method", choices=("sdtm", "tome", "none"), default="sdtm",
                        help="sdtm, tome (the ToMe baseline on the same schedule) or none (no merging)")
    sample.add_argument("--preset", default="reference",
                        help="the SDTM preset the knobs below start from (reference, balanced, fast, turbo; "
                             "default reference, the official release's settings)")
    knobs = sample.add_argument_group("SDTM knobs (those of the SDTM Advanced node; default: the preset's)")
    for option, (_, kind, text) in SDTM_KNOBS.items():
        knobs.add_argument("--" + option.replace("_", "-"), dest=option, type=kind, help=text)
    sample.add_argument("--format", choices=("jpg", "png"), default="jpg", help="image format (default jpg)")
    sample.add_argument("--jpeg-quality", type=_ranged(int, 1, 100), default=95, help="default 95")
    sample.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                        help="auto: cuda when available (each torchrun rank uses GPU LOCAL_RANK)")

    compare = commands.add_parser("compare", help="PSNR/SSIM between matched images of two folders, FID, CLIP score")
    compare.add_argument("dir_a", help="images to judge (e.g. the SDTM folder)")
    compare.add_argument("dir_b", help="reference images with the same names (e.g. the --method none folder)")
    compare.add_argument("--json", dest="json_path", help="where to write the JSON report (default DIR_A/compare-<name of DIR_B>.json)")
    compare.add_argument("--fid-ref", help="folder of real images (e.g. COCO val2017): FID of DIR_A and of DIR_B "
                                           "against it (needs torchmetrics and torch-fidelity)")
    compare.add_argument("--fid-weights", help="InceptionV3 weights file for FID (torch-fidelity's "
                                               "weights-inception-2015-12-05-6726825d.pth), for machines without internet")
    compare.add_argument("--caption-path", help="the caption file the images were made from: adds the CLIP score "
                                                "(needs torchmetrics and transformers)")
    compare.add_argument("--clip-model", default="openai/clip-vit-large-patch14",
                         help="CLIP model for the CLIP score: a Hugging Face name or a local folder "
                              "(default openai/clip-vit-large-patch14)")
    compare.add_argument("--batch-size", type=_ranged(int, 1, 4096), default=16, help="images per metric batch (default 16)")
    compare.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="where FID and CLIP run")
    return parser


# ---------------------------------------------------------------------------------------------
# Validation of `sample` (before any model loads)
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ModelFile:
    option: str  # "--unet", ...
    kind: str  # ComfyUI model kind of its folders
    value: str  # as given
    path: str | None  # a file given by path; None: a name in ComfyUI's folders, resolved later

    def describe(self) -> str:
        return self.path or self.value


def _model_file(option: str, kind: str, value: str) -> ModelFile:
    if os.path.isfile(value):
        return ModelFile(option, kind, value, os.path.abspath(value))
    if os.sep in value or "/" in value or os.path.exists(value):
        raise UsageError(f"{option} {value}: no such file")
    return ModelFile(option, kind, value, None)


def _check_output_folder(path: Path) -> None:
    if path.exists() and not path.is_dir():
        raise UsageError(f"--output-path {path}: exists and is not a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as error:
        raise UsageError(f"--output-path {path}: cannot write there ({error.strerror})") from None


def _sdtm_overrides(args: argparse.Namespace) -> dict:
    """The knobs given on the command line, as SDTMConfig fields, each checked on its own so that an
    error names the option."""
    overrides = {}
    for option, (field, _, _) in SDTM_KNOBS.items():
        value = getattr(args, option)
        if value is None:
            continue
        flag = "--" + option.replace("_", "-")
        if args.method == "none":
            raise UsageError(f"{flag} has no effect with --method none")
        from sdtm_ops.config import SDTMConfig  # imports torch: only when a knob is given
        try:
            SDTMConfig(**{field: value})
        except ValueError as error:
            message = str(error)
            raise UsageError(flag + message[len(field):] if message.startswith(field) else f"{flag}: {message}") from None
        overrides[field] = value
    return overrides


@dataclass
class SampleJob:
    args: argparse.Namespace
    prompts: list[Prompt]
    output: Path
    models: dict  # "checkpoint" / "unet" / "vae": ModelFile or None; "clip": [ModelFile]
    sdtm_overrides: dict


def validate_sample(args: argparse.Namespace) -> SampleJob:
    """Everything that can be checked without ComfyUI: the caption file, the output folder, model
    files given as paths, and option values."""
    for option in ("height", "width"):
        if getattr(args, option) % 16:
            raise UsageError(f"--{option} must be a multiple of 16, got {getattr(args, option)}")
    if args.checkpoint and args.unet:
        raise UsageError("give either --checkpoint or --unet (with --clip and --vae), not both")
    if not args.checkpoint and not args.unet:
        raise UsageError("a model is needed: --checkpoint FILE, or --unet FILE with --clip FILE and --vae FILE")
    if args.unet and not args.clip:
        raise UsageError("--unet needs a text encoder: add --clip FILE (repeat for clip_l, clip_g, t5xxl)")
    if args.unet and not args.vae:
        raise UsageError("--unet needs a VAE: add --vae FILE (or --vae taesd3)")
    if len(args.clip) > 3:
        raise UsageError(f"--clip may be given at most 3 times (clip_l, clip_g, t5xxl), got {len(args.clip)}")
    for folder in args.models_dir:
        if not os.path.isdir(folder):
            raise UsageError(f"--models-dir {folder}: no such folder")
    prompts = load_captions(args.caption_path)
    if args.limit is not None:
        prompts = prompts[:args.limit]
    overrides = _sdtm_overrides(args)
    models = {
        "checkpoint": _model_file("--checkpoint", "checkpoints", args.checkpoint) if args.checkpoint else None,
        "unet": _model_file("--unet", "diffusion_models", args.unet) if args.unet else None,
        "clip": [_model_file("--clip", "text_encoders", value) for value in args.clip],
        "vae": None,
    }
    if args.vae:
        models["vae"] = (ModelFile("--vae", "vae_approx", args.vae, None) if args.vae in TAESD_NAMES
                         else _model_file("--vae", "vae", args.vae))
    output = Path(args.output_path)
    if Path(args.caption_path).resolve() == (output / SETTINGS_FILE).resolve():
        raise UsageError(f"--caption-path must not be the output folder's {SETTINGS_FILE}")
    _check_output_folder(output)  # last: it creates the folder
    return SampleJob(args, prompts, output, models, overrides)


# ---------------------------------------------------------------------------------------------
# Processes
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Ranks:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @classmethod
    def from_env(cls) -> Ranks:
        """torchrun's RANK / WORLD_SIZE / LOCAL_RANK (one process when unset)."""
        try:
            return cls(int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1")),
                       int(os.environ.get("LOCAL_RANK", "0")))
        except ValueError:
            raise UsageError("RANK, WORLD_SIZE and LOCAL_RANK must be integers (as torchrun sets them)") from None


def _pick_device(requested: str) -> str:
    import torch
    if requested == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda: torch sees no CUDA device")
    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return requested


def _start_process_group(ranks: Ranks, device: str):
    """torch.distributed under torchrun (gloo on CPU, nccl on GPU); None for one process."""
    if ranks.world_size == 1:
        return None
    import torch
    import torch.distributed as dist
    if device == "cuda":
        torch.cuda.set_device(ranks.local_rank)  # before ComfyUI picks its device
        dist.init_process_group("nccl", device_id=torch.device("cuda", ranks.local_rank))
    else:
        dist.init_process_group("gloo")
    return dist


# ---------------------------------------------------------------------------------------------
# ComfyUI: models, conditioning, sampling
# ---------------------------------------------------------------------------------------------
def _resolve(model: ModelFile) -> str:
    """A model file's full path: as given, or found by name in ComfyUI's folders."""
    import folder_paths
    if model.path:
        return model.path
    found = folder_paths.get_full_path(model.kind, model.value)
    if not found:
        folders = ", ".join(folder_paths.get_folder_paths(model.kind)) or "none"
        raise UsageError(f"{model.option} {model.value}: not a file, and not in ComfyUI's {model.kind} folders ({folders})")
    return found


def _check_taesd(name: str) -> None:
    import folder_paths
    files = folder_paths.get_filename_list("vae_approx")
    for part in ("encoder", "decoder"):
        if not any(f.startswith(f"{name}_{part}.") for f in files):
            folders = ", ".join(folder_paths.get_folder_paths("vae_approx")) or "none"
            raise UsageError(f"--vae {name}: needs {name}_encoder.* and {name}_decoder.* in ComfyUI's vae_approx "
                             f"folders ({folders})")


def _sdtm_config(pack, job: SampleJob):
    presets = pack.presets.PRESETS
    if job.args.preset not in presets:
        raise UsageError(f"--preset must be one of {', '.join(presets)}, got {job.args.preset!r}")
    if job.args.method == "none":
        return None
    try:
        return presets[job.args.preset][0].replace(method=job.args.method, **job.sdtm_overrides)
    except ValueError as error:
        raise UsageError(f"SDTM settings: {error}") from None


def _settings(job: SampleJob, sdtm_config) -> dict:
    """What decides the pixels of a sample folder; a resumed run must match it."""
    args = job.args
    return {
        "models": {"checkpoint": job.models["checkpoint"] and job.models["checkpoint"].describe(),
                   "unet": job.models["unet"] and job.models["unet"].describe(),
                   "clip": [m.describe() for m in job.models["clip"]], "clip_type": args.clip_type,
                   "vae": job.models["vae"] and job.models["vae"].describe()},
        "height": args.height, "width": args.width, "steps": args.steps, "cfg": args.cfg,
        "sampler": args.sampler, "scheduler": args.scheduler, "negative_prompt": args.negative_prompt,
        "batch_size": args.batch_size, "seed": args.seed, "method": args.method,
        "sdtm": asdict(sdtm_config) if sdtm_config is not None else None,
        "format": args.format, "jpeg_quality": args.jpeg_quality if args.format == "jpg" else None,
    }


def _check_settings(output: Path, settings: dict) -> bool:
    """Whether the folder's settings file is to be (re)written: it is missing, or the folder holds no
    images yet. Raises if the folder holds images made with other settings."""
    path = output / SETTINGS_FILE
    if not path.exists():
        return True
    try:
        previous = json.loads(path.read_text(encoding="utf-8")).get("settings")
    except (OSError, ValueError, AttributeError):
        previous = None
    if previous == settings:
        return False
    if not _image_files(output):
        return True  # an earlier run stopped before its first image: nothing to keep consistent with
    if previous is None:
        raise UsageError(f"--output-path {output}: {SETTINGS_FILE} is unreadable; remove it or use another folder")
    differ = sorted(k for k in set(previous) | set(settings) if previous.get(k) != settings.get(k))
    raise UsageError(f"--output-path {output} holds images made with other settings ({', '.join(differ)} "
                     f"differ, see {SETTINGS_FILE}); use another folder")


def _prepare_comfy(job: SampleJob, device: str):
    """Import ComfyUI and the pack, and check what needs them (names, sampler, presets) - no model loads."""
    from .comfy_env import import_comfy, load_pack
    nodes = import_comfy(device)
    pack = load_pack()
    import comfy.samplers
    import comfy.sd
    import folder_paths
    for folder in reversed(job.args.models_dir):
        for kind, subfolders in MODEL_FOLDERS.items():
            for sub in subfolders:
                if os.path.isdir(os.path.join(folder, sub)):
                    folder_paths.add_model_folder_path(kind, os.path.abspath(os.path.join(folder, sub)), is_default=True)
    if job.args.sampler not in comfy.samplers.KSampler.SAMPLERS:
        raise UsageError(f"--sampler must be one of ComfyUI's samplers ({', '.join(comfy.samplers.KSampler.SAMPLERS)}), "
                         f"got {job.args.sampler!r}")
    if job.args.scheduler not in comfy.samplers.KSampler.SCHEDULERS:
        raise UsageError(f"--scheduler must be one of {', '.join(comfy.samplers.KSampler.SCHEDULERS)}, "
                         f"got {job.args.scheduler!r}")
    if not hasattr(comfy.sd.CLIPType, job.args.clip_type.upper()):
        raise UsageError(f"--clip-type must be one of {', '.join(t.name.lower() for t in comfy.sd.CLIPType)}, "
                         f"got {job.args.clip_type!r}")
    for model in [job.models[k] for k in ("checkpoint", "unet", "vae") if job.models[k]] + job.models["clip"]:
        if model.kind == "vae_approx":
            _check_taesd(model.value)
        else:
            _resolve(model)
    return nodes, pack


def load_models(job: SampleJob, nodes):
    """MODEL, CLIP and VAE through ComfyUI's loaders (what CheckpointLoaderSimple, UNETLoader,
    CLIPLoader and VAELoader call)."""
    import comfy.sd
    import comfy.utils
    import folder_paths
    embeddings = folder_paths.get_folder_paths("embeddings")
    model = clip = vae = None
    if job.models["checkpoint"]:
        model, clip, vae = comfy.sd.load_checkpoint_guess_config(
            _resolve(job.models["checkpoint"]), output_vae=True, output_clip=True, embedding_directory=embeddings)[:3]
    if job.models["unet"]:
        model = comfy.sd.load_diffusion_model(_resolve(job.models["unet"]))
    if job.models["clip"]:
        clip = comfy.sd.load_clip(ckpt_paths=[_resolve(m) for m in job.models["clip"]], embedding_directory=embeddings,
                                  clip_type=getattr(comfy.sd.CLIPType, job.args.clip_type.upper()))
    vae_file = job.models["vae"]
    if vae_file is not None and vae_file.path is None:
        (vae,) = nodes.VAELoader().load_vae(vae_file.value)
    elif vae_file is not None:
        vae = comfy.sd.VAE(sd=comfy.utils.load_torch_file(vae_file.path))
        vae.throw_exception_if_invalid()
    if clip is None:
        raise UsageError(f"--checkpoint {job.args.checkpoint} has no text encoders: add --clip FILE (repeatable)")
    if vae is None:
        raise UsageError(f"--checkpoint {job.args.checkpoint} has no VAE: add --vae FILE")
    return model, clip, vae


def _encode(nodes, clip, text: str) -> tuple:
    """CLIPTextEncode's conditioning of one text, as (cond [1, L, D], extras with batch-1 tensors)."""
    (conditioning,) = nodes.CLIPTextEncode().encode(clip, text)
    if len(conditioning) != 1:
        raise RuntimeError(f"CLIPTextEncode returned {len(conditioning)} conditioning entries for one text; expected 1")
    return conditioning[0][0], conditioning[0][1]


def _batch_conditioning(encoded: list[tuple]) -> list:
    """One conditioning for several texts whose encodings have the same length: tensors stacked on
    the batch dimension (ComfyUI matches conditioning batch i to latent i)."""
    import torch
    conds = torch.cat([cond for cond, _ in encoded])
    extras = {}
    for key, value in encoded[0][1].items():
        extras[key] = torch.cat([e[key] for _, e in encoded]) if isinstance(value, torch.Tensor) else value
    return [[conds, extras]]


def _groups_of_equal_length(encoded: list[tuple]) -> list[list[int]]:
    """Indices of a batch grouped by text-token length, in order of first appearance: texts of
    different lengths cannot share one conditioning tensor (padding would change the attention)."""
    groups: dict[int, list[int]] = {}
    for index, (cond, _) in enumerate(encoded):
        groups.setdefault(cond.shape[1], []).append(index)
    return list(groups.values())


def _save(image, path: Path, fmt: str, quality: int) -> None:
    """Save [H, W, 3] in [0, 1] as SaveImage does (clip, then truncate to uint8); written to a
    temporary name and renamed, so a file that exists is complete."""
    import numpy as np
    from PIL import Image
    pixels = np.clip(255.0 * image.cpu().float().numpy(), 0, 255).astype(np.uint8)
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    if fmt == "jpg":
        Image.fromarray(pixels).save(partial, format="JPEG", quality=quality)
    else:
        Image.fromarray(pixels).save(partial, format="PNG")
    os.replace(partial, path)


def run_sample(job: SampleJob) -> int:
    args, ranks = job.args, Ranks.from_env()
    if ranks.world_size < 1 or not 0 <= ranks.rank < ranks.world_size:
        raise UsageError(f"RANK {ranks.rank} is not in [0, WORLD_SIZE {ranks.world_size})")
    device = _pick_device(args.device)
    dist = _start_process_group(ranks, device)
    try:
        return _sample_on_rank(job, ranks, device, dist)
    finally:
        if dist is not None:
            dist.destroy_process_group()


def _sample_on_rank(job: SampleJob, ranks: Ranks, device: str, dist) -> int:
    import torch
    from tqdm import tqdm
    args = job.args
    nodes, pack = _prepare_comfy(job, device)
    import comfy.sample
    import comfy.utils
    sdtm_config = _sdtm_config(pack, job)
    settings = _settings(job, sdtm_config)
    fresh = _check_settings(job.output, settings)
    if fresh and ranks.rank == 0:
        info = {"caption_path": os.path.abspath(args.caption_path), "comfyui": pack.hook.comfyui_version()}
        partial = job.output / f".{SETTINGS_FILE}.{os.getpid()}.partial"  # other ranks may be reading it
        partial.write_text(json.dumps({"settings": settings, "info": info}, indent=1) + "\n", encoding="utf-8")
        os.replace(partial, job.output / SETTINGS_FILE)

    suffix = "." + args.format
    batches = shard(make_batches(job.prompts, args.batch_size), ranks.rank, ranks.world_size)
    mine = sum(len(b) for b in batches)
    done_before = sum(1 for b in batches for p in b if (job.output / (p.name + suffix)).is_file())
    written, load_seconds, sample_seconds = 0, 0.0, 0.0
    if done_before < mine:
        started = time.perf_counter()
        model, clip, vae = load_models(job, nodes)
        if sdtm_config is not None:
            model = pack.hook.patch_model(model, sdtm_config, label=f"evaluate {args.method}")
        load_seconds = time.perf_counter() - started
        started = time.perf_counter()
        negative = _batch_conditioning([_encode(nodes, clip, args.negative_prompt)])
        latent_shape = (16, args.height // 8, args.width // 8)
        bar = tqdm(total=mine, initial=done_before, unit="img", disable=ranks.rank != 0,
                   desc=f"rank 0 of {ranks.world_size}" if ranks.world_size > 1 else "sampling")
        with torch.inference_mode():
            for batch in batches:
                missing = [p for p in batch if not (job.output / (p.name + suffix)).is_file()]
                if not missing:
                    continue
                # The whole batch runs even when some of its images exist, so that resumed files equal
                # those of an uninterrupted run (SDTM's merge RNG and batched maths see the whole batch).
                encoded = [_encode(nodes, clip, p.caption) for p in batch]
                for group in _groups_of_equal_length(encoded):
                    members = [batch[i] for i in group]
                    noise = torch.cat([image_noise(args.seed, p.name, latent_shape) for p in members])
                    latent = comfy.sample.fix_empty_latent_channels(model, torch.zeros_like(noise))
                    samples = comfy.sample.sample(
                        model, noise, args.steps, args.cfg, args.sampler, args.scheduler,
                        _batch_conditioning([encoded[i] for i in group]), negative, latent,
                        denoise=1.0, disable_pbar=True, seed=derived_seed(args.seed, "batch/" + members[0].name))
                    images = vae.decode(samples)
                    for prompt, image in zip(members, images):
                        path = job.output / (prompt.name + suffix)
                        if not path.is_file():
                            _save(image, path, args.format, args.jpeg_quality)
                            written += 1
                bar.update(len(missing))
        bar.close()
        sample_seconds = time.perf_counter() - started
    counts = torch.tensor([written, done_before], dtype=torch.float64)
    seconds = torch.tensor([load_seconds, sample_seconds], dtype=torch.float64)
    if dist is not None:
        reduce_device = torch.device("cuda", ranks.local_rank) if device == "cuda" else torch.device("cpu")
        counts, seconds = counts.to(reduce_device), seconds.to(reduce_device)
        dist.all_reduce(counts)
        dist.all_reduce(seconds, op=dist.ReduceOp.MAX)  # the slowest rank's times
    if ranks.rank == 0:
        (wrote, skipped), (load_seconds, sample_seconds) = counts.tolist(), seconds.tolist()
        timing = (f" in {sample_seconds:.1f} s ({wrote / sample_seconds:.3g} images/s; models loaded in "
                  f"{load_seconds:.1f} s)" if wrote and sample_seconds > 0 else "")
        print(f"{PROG} sample: wrote {int(wrote)} images{timing}, skipped {int(skipped)} existing, of "
              f"{len(job.prompts)} captions, {ranks.world_size} process(es) -> {job.output}", flush=True)
    return 0


# ---------------------------------------------------------------------------------------------
# compare
# ---------------------------------------------------------------------------------------------
def _image_files(folder: Path) -> dict[str, Path]:
    return {p.stem: p for p in sorted(folder.iterdir())
            if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")}


def _optional(module: str) -> bool:
    import importlib.util
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def _summary(values: list[float]) -> dict:
    import statistics
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return {"mean": None, "median": None, "min": None, "max": None, "std": None, "finite": 0}
    return {"mean": statistics.fmean(finite), "median": statistics.median(finite), "min": min(finite),
            "max": max(finite), "std": statistics.pstdev(finite), "finite": len(finite)}


def _json_number(value: float):
    return value if math.isfinite(value) else ("inf" if value > 0 else "-inf" if value < 0 else "nan")


def _fid_metric(weights: str | None, device):
    """torchmetrics' FrechetInceptionDistance (torch-fidelity's InceptionV3, 2048 features; the metric
    resizes the uint8 images itself); the real images' statistics survive reset()."""
    import pickle

    from torchmetrics.image.fid import FrechetInceptionDistance
    try:
        return FrechetInceptionDistance(feature=2048, reset_real_features=False,
                                        feature_extractor_weights_path=weights).to(device)
    except (OSError, RuntimeError, ValueError, pickle.UnpicklingError) as error:  # no internet, or a wrong file
        raise UsageError(f"FID: cannot load the InceptionV3 weights ({str(error).splitlines()[0]}); give "
                         f"--fid-weights FILE (torch-fidelity's weights-inception-2015-12-05-6726825d.pth)") from None


def _uint8_image(path: Path):
    import numpy as np
    import torch
    from PIL import Image
    with Image.open(path) as image:
        return torch.from_numpy(np.asarray(image.convert("RGB"), dtype=np.uint8).copy()).permute(2, 0, 1).unsqueeze(0)


def _clip_model_loader(model_name: str):
    """torchmetrics' CLIPScore takes a callable returning (model, processor). transformers 5 returns model
    outputs from get_image_features / get_text_features where torchmetrics 1.9 expects the projected
    embeddings (their pooler_output), so the model is wrapped to hand those over."""
    import torch
    from transformers import CLIPModel, CLIPProcessor

    def embeddings(output):
        return output if isinstance(output, torch.Tensor) else output.pooler_output

    class ProjectedFeatures(torch.nn.Module):
        def __init__(self, model) -> None:
            super().__init__()
            self.model, self.config = model, model.config

        def get_image_features(self, *args, **kwargs):
            return embeddings(self.model.get_image_features(*args, **kwargs))

        def get_text_features(self, *args, **kwargs):
            return embeddings(self.model.get_text_features(*args, **kwargs))

    def load():
        try:
            return ProjectedFeatures(CLIPModel.from_pretrained(model_name)), CLIPProcessor.from_pretrained(model_name)
        except OSError as error:
            raise UsageError(f"--clip-model {model_name}: cannot load it ({str(error).splitlines()[0]}); give a "
                             f"folder with a saved CLIPModel and CLIPProcessor") from None
    return load


def _clip_metric(model_name: str, device):
    """torchmetrics' CLIPScore: 100 * max(cos, 0) of the CLIP image and caption embeddings (captions
    longer than the text encoder are truncated)."""
    from torchmetrics.multimodal.clip_score import CLIPScore
    return CLIPScore(model_name_or_path=_clip_model_loader(model_name)).to(device)


def run_compare(args: argparse.Namespace) -> int:
    """PSNR/SSIM per matched image, plus FID and CLIP score where asked and available; a table on
    stdout and a JSON report."""
    dir_a, dir_b = Path(args.dir_a), Path(args.dir_b)
    for option, folder in (("DIR_A", dir_a), ("DIR_B", dir_b)):
        if not folder.is_dir():
            raise UsageError(f"{option} {folder}: no such folder")
    files_a, files_b = _image_files(dir_a), _image_files(dir_b)
    names = sorted(set(files_a) & set(files_b))
    if not names:
        raise UsageError(f"no image file names in common between {dir_a} ({len(files_a)} images) and {dir_b} "
                         f"({len(files_b)} images)")
    if args.fid_ref is not None:
        if not Path(args.fid_ref).is_dir() or not _image_files(Path(args.fid_ref)):
            raise UsageError(f"--fid-ref {args.fid_ref}: not a folder of images")
        for module, package in (("torchmetrics", "torchmetrics"), ("torch_fidelity", "torch-fidelity")):
            if not _optional(module):
                raise UsageError(f"--fid-ref: FID needs {package}, which is not installed (pip install {package})")
    if args.fid_weights is not None and not os.path.isfile(args.fid_weights):
        raise UsageError(f"--fid-weights {args.fid_weights}: no such file")
    captions = None
    if args.caption_path is not None:
        captions = {p.name: p.caption for p in load_captions(args.caption_path)}
        for module, package in (("torchmetrics", "torchmetrics"), ("transformers", "transformers")):
            if not _optional(module):
                raise UsageError(f"--caption-path: the CLIP score needs {package}, which is not installed (pip install {package})")
        if not any(name in captions for name in names):
            raise UsageError(f"--caption-path {args.caption_path}: none of its image ids names an image in both folders")
    json_path = Path(args.json_path) if args.json_path else dir_a / f"compare-{dir_b.resolve().name}.json"
    if json_path.is_dir():
        raise UsageError(f"--json {json_path}: is a folder")
    try:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        probe = json_path.parent / f".write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as error:
        raise UsageError(f"--json {json_path}: cannot write there ({error.strerror})") from None

    import torch
    from tqdm import tqdm

    from .image_metrics import load_images, psnr, ssim
    device = torch.device(_pick_device(args.device))
    # The models first, so that a model that cannot load stops the command before any work.
    fid = _fid_metric(args.fid_weights, device) if args.fid_ref is not None else None
    clip = _clip_metric(args.clip_model, device) if captions is not None else None
    per_image = {}
    for name in tqdm(names, unit="img", desc="PSNR/SSIM", disable=None):
        a, b = load_images([files_a[name]]), load_images([files_b[name]])
        if a.shape != b.shape:
            raise UsageError(f"{name}: {files_a[name]} is {a.shape[-1]}x{a.shape[-2]} but {files_b[name]} is "
                             f"{b.shape[-1]}x{b.shape[-2]}")
        per_image[name] = {"psnr": float(psnr(a, b)[0]), "ssim": float(ssim(a, b)[0])}
    psnr_values = [v["psnr"] for v in per_image.values()]
    report = {
        "dir_a": str(dir_a), "dir_b": str(dir_b), "matched": len(names),
        "only_in_a": len(set(files_a) - set(files_b)), "only_in_b": len(set(files_b) - set(files_a)),
        "psnr": {**_summary(psnr_values), "identical": sum(1 for v in psnr_values if v == math.inf)},
        "ssim": _summary([v["ssim"] for v in per_image.values()]),
        "fid": None, "clip_score": None, "notes": {},
        "per_image": {n: {k: _json_number(v) for k, v in m.items()} for n, m in per_image.items()},
    }
    for folder_key in ("a", "b"):
        settings = Path(report[f"dir_{folder_key}"]) / SETTINGS_FILE
        if settings.is_file():
            report[f"settings_{folder_key}"] = json.loads(settings.read_text(encoding="utf-8")).get("settings")

    if fid is not None:
        for path in _image_files(Path(args.fid_ref)).values():
            fid.update(_uint8_image(path).to(device), real=True)
        report["fid"] = {"ref": args.fid_ref}
        for key, files in (("a", files_a), ("b", files_b)):
            for path in files.values():  # one at a time: the metric resizes each image itself
                fid.update(_uint8_image(path).to(device), real=False)
            report["fid"][key] = float(fid.compute())
            fid.reset()  # keeps the reference statistics
    else:
        missing = [p for m, p in (("torchmetrics", "torchmetrics"), ("torch_fidelity", "torch-fidelity")) if not _optional(m)]
        report["notes"]["fid"] = ("not computed: give --fid-ref DIR (real images)" if not missing else
                                  f"not available: {' and '.join(missing)} not installed")
    if clip is not None:
        captioned = [n for n in names if n in captions]
        report["clip_score"] = {"model": args.clip_model, "images": len(captioned)}
        for key, files in (("a", files_a), ("b", files_b)):
            for start in range(0, len(captioned), args.batch_size):
                chunk = captioned[start:start + args.batch_size]
                clip.update([_uint8_image(files[n])[0].to(device) for n in chunk], [captions[n] for n in chunk])
            report["clip_score"][key] = float(clip.compute())
            clip.reset()
    else:
        missing = [p for m, p in (("torchmetrics", "torchmetrics"), ("transformers", "transformers")) if not _optional(m)]
        report["notes"]["clip_score"] = ("not computed: give --caption-path FILE (the captions)" if not missing else
                                         f"not available: {' and '.join(missing)} not installed")

    json_path.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    print(_table(report, json_path))
    return 0


def _table(report: dict, json_path: Path) -> str:
    def stats(summary: dict, digits: int) -> str:
        if summary["mean"] is None:
            return "-"
        return (f"{summary['mean']:.{digits}f}  (mean of {summary['finite']}; median {summary['median']:.{digits}f}, "
                f"min {summary['min']:.{digits}f}, max {summary['max']:.{digits}f})")
    psnr_text = stats(report["psnr"], 2)
    if report["psnr"]["identical"]:
        psnr_text += f"; {report['psnr']['identical']} identical pairs (inf) left out"
    fid, clip_score = report["fid"], report["clip_score"]
    rows = [
        ("PSNR, A vs B (dB)", psnr_text),
        ("SSIM, A vs B", stats(report["ssim"], 4)),
        ("FID vs --fid-ref", f"A {fid['a']:.3f}, B {fid['b']:.3f}  (reference {fid['ref']})" if fid else report["notes"]["fid"]),
        ("CLIP score", (f"A {clip_score['a']:.3f}, B {clip_score['b']:.3f}  ({clip_score['images']} captioned images, "
                        f"{clip_score['model']})") if clip_score else report["notes"]["clip_score"]),
    ]
    width = max(len(name) for name, _ in rows)
    lines = [(f"A = {report['dir_a']}, B = {report['dir_b']}: {report['matched']} matched images "
              f"({report['only_in_a']} only in A, {report['only_in_b']} only in B)")]
    lines += [f"{name:<{width}}  {text}" for name, text in rows]
    lines.append(f"JSON report: {json_path}")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        if args.command == "sample":
            return run_sample(validate_sample(args))
        return run_compare(args)
    except UsageError as error:
        if int(os.environ.get("RANK", "0") or 0) == 0:
            print(f"{PROG}: error: {error}", file=sys.stderr, flush=True)
        return 2


if __name__ == "__main__":
    sys.exit(main())
