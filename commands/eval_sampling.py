"""`python -m commands.evaluate sample`: its checks (before any model loads), the processes under torchrun,
and sampling through ComfyUI's own loaders, text encoding, sampler and VAE with this pack's patch."""
from __future__ import annotations

import argparse
import json
import os
import re
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from sdtm_ops.knobs import KNOB_BY_FIELD, KNOBS, knob_problem

from .eval_captions import (
    SETTINGS_FILE,
    Prompt,
    UsageError,
    derived_seed,
    image_files,
    image_noise,
    load_captions,
    make_batches,
    shard,
)

PROG = "python -m commands.evaluate"
JOINT_BLOCK = re.compile(r"(?:^|\.)joint_blocks\.(\d+)\.")  # MMDiT block weights
TAESD_NAMES = ("taesd", "taesdxl", "taesd3", "taef1")  # VAELoader's built-in tiny autoencoders
MODEL_FOLDERS = {  # ComfyUI model kind -> sub-folders of a models folder (current and legacy names)
    "checkpoints": ("checkpoints",),
    "diffusion_models": ("diffusion_models", "unet"),
    "text_encoders": ("text_encoders", "clip"),
    "vae": ("vae",),
    "vae_approx": ("vae_approx",),
    "embeddings": ("embeddings",),
}


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
    for knob in KNOBS:
        if knob.field == "method":
            continue  # --method, which may also be "none"
        value = getattr(args, knob.input)
        if value is None:
            continue
        if args.method == "none":
            raise UsageError(f"{knob.option} has no effect with --method none")
        problem = knob_problem(knob, value, knob.option)
        if problem:
            raise UsageError(problem)
        overrides[knob.field] = value
    return overrides


@dataclass
class SampleJob:
    args: argparse.Namespace
    prompts: list[Prompt]
    output: Path
    models: dict  # "checkpoint" / "unet" / "vae": ModelFile or None; "clip": [ModelFile]
    sdtm_overrides: dict


def validate_models(args: argparse.Namespace) -> dict:
    """The model options (--checkpoint, or --unet with --clip and --vae; --models-dir), checked without
    ComfyUI: "checkpoint" / "unet" / "vae": ModelFile or None; "clip": [ModelFile]. ``sample`` and
    ``front`` share them."""
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
    models = {
        "checkpoint": _model_file("--checkpoint", "checkpoints", args.checkpoint) if args.checkpoint else None,
        "unet": _model_file("--unet", "diffusion_models", args.unet) if args.unet else None,
        "clip": [_model_file("--clip", "text_encoders", value) for value in args.clip],
        "vae": None,
    }
    if args.vae:
        models["vae"] = (ModelFile("--vae", "vae_approx", args.vae, None) if args.vae in TAESD_NAMES
                         else _model_file("--vae", "vae", args.vae))
    return models


def validate_sample(args: argparse.Namespace) -> SampleJob:
    """Everything that can be checked without ComfyUI: the caption file, the output folder, model
    files given as paths, and option values."""
    for option in ("height", "width"):
        if getattr(args, option) % 16:
            raise UsageError(f"--{option} must be a multiple of 16, got {getattr(args, option)}")
    models = validate_models(args)
    prompts = load_captions(args.caption_path)
    if args.limit is not None:
        prompts = prompts[:args.limit]
    overrides = _sdtm_overrides(args)
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
        values = {name: os.environ.get(name, default) for name, default in
                  (("RANK", "0"), ("WORLD_SIZE", "1"), ("LOCAL_RANK", "0"))}
        try:
            ranks = cls(*(int(value) for value in values.values()))
        except ValueError:
            got = ", ".join(f"{name}={value!r}" for name, value in values.items())
            raise UsageError(f"RANK, WORLD_SIZE and LOCAL_RANK must be integers (as torchrun sets them), "
                             f"got {got}") from None
        if ranks.world_size < 1 or not 0 <= ranks.rank < ranks.world_size:
            raise UsageError(f"RANK {ranks.rank} is not in [0, WORLD_SIZE {ranks.world_size})")
        return ranks


def pick_device(requested: str) -> str:
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
        raise UsageError(f"{model.option} {model.value}: not a file, "
                         f"and not in ComfyUI's {model.kind} folders ({folders})")
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
    if not image_files(output):
        return True  # an earlier run stopped before its first image: nothing to keep consistent with
    if previous is None:
        raise UsageError(f"--output-path {output}: {SETTINGS_FILE} is unreadable; remove it or use another folder")
    differ = sorted(k for k in set(previous) | set(settings) if previous.get(k) != settings.get(k))
    raise UsageError(f"--output-path {output} holds images made with other settings ({', '.join(differ)} "
                     f"differ, see {SETTINGS_FILE}); use another folder")


def check_sampler_names(args: argparse.Namespace) -> None:
    """--sampler and --scheduler against ComfyUI's KSampler lists (ComfyUI imported, no model loaded)."""
    import comfy.samplers
    if args.sampler not in comfy.samplers.KSampler.SAMPLERS:
        raise UsageError("--sampler must be one of ComfyUI's samplers "
                         f"({', '.join(comfy.samplers.KSampler.SAMPLERS)}), got {args.sampler!r}")
    if args.scheduler not in comfy.samplers.KSampler.SCHEDULERS:
        raise UsageError(f"--scheduler must be one of {', '.join(comfy.samplers.KSampler.SCHEDULERS)}, "
                         f"got {args.scheduler!r}")


def prepare_comfy(job: SampleJob, device: str):
    """Import ComfyUI and the pack, and check what needs them (names, sampler, presets) - no model loads."""
    from harness.comfy_env import import_comfy, load_pack
    nodes = import_comfy(device)
    pack = load_pack()
    import comfy.sd
    import folder_paths
    for folder in reversed(job.args.models_dir):
        for kind, subfolders in MODEL_FOLDERS.items():
            for sub in subfolders:
                if os.path.isdir(os.path.join(folder, sub)):
                    folder_paths.add_model_folder_path(kind, os.path.abspath(os.path.join(folder, sub)),
                                                       is_default=True)
    check_sampler_names(job.args)
    if not hasattr(comfy.sd.CLIPType, job.args.clip_type.upper()):
        raise UsageError(f"--clip-type must be one of {', '.join(t.name.lower() for t in comfy.sd.CLIPType)}, "
                         f"got {job.args.clip_type!r}")
    for model in [job.models[k] for k in ("checkpoint", "unet", "vae") if job.models[k]] + job.models["clip"]:
        if model.kind == "vae_approx":
            _check_taesd(model.value)
        else:
            _resolve(model)
    return nodes, pack


def _model_file_keys(model: ModelFile) -> list[str] | None:
    """The tensor names of a .safetensors model file, read from its header (no weights load); None for
    other formats. Raises UsageError when the file is no readable safetensors file."""
    path = _resolve(model)
    if not path.lower().endswith(".safetensors"):
        return None
    from safetensors import safe_open
    try:
        with safe_open(path, framework="pt") as handle:
            return list(handle.keys())
    except Exception as error:  # safetensors raises its own error types for a corrupt header
        raise UsageError(f"{model.option} {path}: not a readable safetensors file "
                         f"({str(error).splitlines()[0] if str(error) else type(error).__name__})") from None


def model_file_depth(job: SampleJob) -> tuple[int | None, bool]:
    """Before any model loads: every .safetensors file has a readable header (else UsageError). Returns
    (the MMDiT joint blocks the diffusion model's weights hold, None where none; whether its header was
    read: False for a file in another format)."""
    depth, read = None, False
    for model in [job.models[k] for k in ("checkpoint", "unet", "vae") if job.models[k]] + job.models["clip"]:
        if model.kind == "vae_approx":
            continue
        keys = _model_file_keys(model)
        if keys is not None and model.kind in ("checkpoints", "diffusion_models"):
            blocks = {int(found.group(1)) for found in map(JOINT_BLOCK.search, keys) if found}
            depth, read = (max(blocks) + 1 if blocks else None), True
    return depth, read


def check_model_files(job: SampleJob, sdtm_config) -> None:
    """Before any model loads: every .safetensors file has a readable header, and the SDTM block range
    fits the diffusion model's joint blocks."""
    depth, _ = model_file_depth(job)
    if sdtm_config is None or depth is None:
        return
    for knob, value in ((KNOB_BY_FIELD["block_start"], sdtm_config.block_start),
                        (KNOB_BY_FIELD["block_end"], sdtm_config.block_end)):
        if value >= depth:
            raise UsageError(f"{knob.option} {value}: the model has {depth} joint blocks (0 to {depth - 1})")


def load_models(job: SampleJob, nodes):
    """``_load_models``, with any loader failure reported as one line."""
    try:
        return _load_models(job, nodes)
    except UsageError:
        raise
    except Exception as error:  # ComfyUI's loaders raise many kinds of errors for a file that is no model
        text = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise UsageError(f"ComfyUI cannot load the model files ({type(error).__name__}: {text})") from None


def _load_models(job: SampleJob, nodes):
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
    device = pick_device(args.device)
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
    nodes, pack = prepare_comfy(job, device)
    import comfy.sample
    import comfy.utils
    sdtm_config = _sdtm_config(pack, job)
    check_model_files(job, sdtm_config)
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
