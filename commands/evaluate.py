"""Evaluation sampling over a caption file, on one device or many (torchrun), and quality metrics.

    python -m commands.evaluate sample --caption-path captions.json --checkpoint sd3_medium_incl_clips.safetensors \\
        --output-path out/sdtm --method sdtm
    torchrun --nproc_per_node=4 -m commands.evaluate sample ...      # the same files, four times faster
    python -m commands.evaluate compare out/sdtm out/none [--fid-ref coco/val2017] [--caption-path captions.json]
    python -m commands.evaluate front --checkpoint sd3.5_large_turbo.safetensors --steps 8 --output-path out/front
    python -m commands.evaluate front --fixture photo --limit 1 --steps 8 --output-path out/front   # no model needed

``sample`` runs ComfyUI's own loaders, text encoding (CLIPTextEncode), sampler (comfy.sample, the
KSampler path), VAE decoding and this pack's patch, and writes one image per caption, named
``<image_id zero-padded to 12>.jpg`` (the COCO convention, so FID against val2017 is direct).
Each image's starting noise depends only on --seed and its image_id. Prompts are cut into a fixed list
of batches (--batch-size, in caption-file order) and batch i runs on rank i % world_size, so every
batch, and therefore every file, is the same whatever the number of processes. Existing images are
skipped, the caption file is only read, and bad input is reported in one line before any model loads.
``front`` (commands/eval_front.py) times the unpatched model, fewer steps, LazyCache, every SDTM preset
and the best stack on one device and scores each against the unpatched image. See docs/EVALUATION.md.
"""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

from sdtm_ops.knobs import KNOB_BY_FIELD, KNOBS

from .eval_captions import (
    SETTINGS_FILE,
    Prompt,
    UsageError,
    derived_seed,
    image_noise,
    image_stem,
    load_captions,
    make_batches,
    shard,
)
from .eval_compare import run_compare
from .eval_front import FIXTURE_NAMES, run_front, validate_front
from .eval_sampling import PROG, Ranks, run_sample, validate_sample

METHOD = KNOB_BY_FIELD["method"]
__all__ = ["main", "build_parser", "UsageError", "SETTINGS_FILE", "Prompt", "image_stem", "load_captions",
           "derived_seed", "image_noise", "make_batches", "shard"]


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


def _model_options(parser: argparse.ArgumentParser) -> None:
    """The model options ``sample`` and ``front`` share (checked by eval_sampling.validate_models)."""
    parser.add_argument("--checkpoint",
                        help="a ComfyUI checkpoint (file path, or a name in ComfyUI's checkpoints folders)")
    parser.add_argument("--unet", help="a diffusion model (path, or a name in ComfyUI's diffusion_models folders)")
    parser.add_argument("--clip", action="append", default=[],
                        help="a text encoder (path, or a name in ComfyUI's text_encoders folders); repeat for "
                             "several (clip_l, clip_g, t5xxl)")
    parser.add_argument("--clip-type", default="sd3", help="ComfyUI's CLIPLoader type (default sd3)")
    parser.add_argument("--vae", help="a VAE (path, or a name in ComfyUI's vae folders, or taesd3)")
    parser.add_argument("--models-dir", action="append", default=[],
                        help="a ComfyUI models folder (checkpoints/, diffusion_models/, text_encoders/, vae/, "
                             "vae_approx/) searched before ComfyUI's own; repeatable")


def _sampling_options(parser: argparse.ArgumentParser, size_help: str, size_default, steps_default: int,
                      cfg_help: str, cfg_default) -> None:
    """The sampling options ``sample`` and ``front`` share (their defaults differ)."""
    parser.add_argument("--height", type=_ranged(int, 16, 16384), default=size_default, help=size_help)
    parser.add_argument("--width", type=_ranged(int, 16, 16384), default=size_default, help=size_help)
    parser.add_argument("--steps", type=_ranged(int, 1, 10000), default=steps_default,
                        help=f"default {steps_default}")
    parser.add_argument("--cfg", type=_ranged(float, 0.0, 100.0), default=cfg_default, help=cfg_help)
    parser.add_argument("--sampler", default="euler", help="a ComfyUI sampler name (default euler)")
    parser.add_argument("--scheduler", default="sgm_uniform", help="a ComfyUI scheduler name (default sgm_uniform)")
    parser.add_argument("--negative-prompt", default="", help="the negative prompt (default empty)")
    parser.add_argument("--seed", type=_ranged(int, 0, 2**63 - 1), default=0, help="default 0")
    parser.add_argument("--limit", type=_ranged(int, 1, 10**9), help="only the first N captions")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                        help="auto: cuda when available (sample under torchrun: each rank uses GPU LOCAL_RANK)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=PROG, description="SDTM evaluation: sample images over a caption file, compare folders, "
                                            "measure the speed-fidelity front.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    sample = commands.add_parser("sample", help="one image per caption, through ComfyUI with (or without) SDTM")
    sample.add_argument("--caption-path", required=True,
                        help="JSON list of {image_id, caption}, raw COCO captions_*.json (longest caption per image) "
                             "or PartiPrompts .tsv")
    sample.add_argument("--output-path", required=True,
                        help="folder for the images (created; existing images are kept)")
    _model_options(sample)
    _sampling_options(sample, size_help="multiple of 16 (default 1024)", size_default=1024, steps_default=50,
                      cfg_help="default 7.0", cfg_default=7.0)
    sample.add_argument("--batch-size", type=_ranged(int, 1, 4096), default=4,
                        help="images per sampler call (default 4)")
    sample.add_argument("--method", choices=(*METHOD.choices, "none"), default=METHOD.default,
                        help="sdtm, tome (the ToMe baseline on the same schedule) or none (no merging)")
    sample.add_argument("--preset", default="reference",
                        help="the SDTM preset the knobs below start from (reference, balanced, fast, turbo; "
                             "default reference, the official release's settings and rules)")
    knobs = sample.add_argument_group("SDTM knobs (those of the SDTM Advanced node; default: the preset's)")
    for knob in KNOBS:  # left out, each takes the preset's value
        if knob is METHOD:
            continue  # --method above, which adds "none"
        knobs.add_argument(knob.option, dest=knob.input, type=_boolean if knob.kind is bool else knob.kind,
                           choices=knob.choices or None, help=knob.tooltip.replace("%", "%%"))
    sample.add_argument("--format", choices=("jpg", "png"), default="jpg", help="image format (default jpg)")
    sample.add_argument("--jpeg-quality", type=_ranged(int, 1, 100), default=95, help="default 95")

    front = commands.add_parser("front", help="the speed-fidelity front on your model and device: fewer steps, "
                                              "LazyCache, every SDTM preset and the best stack, timed")
    front.add_argument("--output-path", required=True, help="folder for front.json and front.png (created)")
    front.add_argument("--fixture", choices=FIXTURE_NAMES,
                       help="a built-in photo fixture instead of a model (runs anywhere; its 'VAE' is exact)")
    _model_options(front)
    _sampling_options(front, size_help="a model: multiple of 16 (default 1024); a fixture: the decoded image, a "
                                       "multiple of 4 (default: its trained size)", size_default=None,
                      steps_default=30, cfg_help="default 7.0 (a fixture: 4.5, its trained guidance)",
                      cfg_default=None)
    front.add_argument("--caption-path", help="a caption file as for sample (default: a small built-in list)")
    front.add_argument("--repeats", type=_ranged(int, 1, 100), default=3,
                       help="timed runs per setting and caption, after one warm-up run (default 3)")
    front.add_argument("--fewer-steps", default="0.75,0.6,0.5",
                       help="fractions k of --steps for the fewer-steps rows (round(steps*k), at least 1; "
                            "default 0.75,0.6,0.5)")
    front.add_argument("--lazy-thresholds", default="0.1,0.2,0.4",
                       help="core LazyCache thresholds (default 0.1,0.2,0.4)")
    front.add_argument("--clip-model", help="adds the CLIP score (needs torchmetrics and transformers): a Hugging "
                                            "Face name or a local folder")

    compare = commands.add_parser("compare", help="PSNR/SSIM between matched images of two folders, FID, CLIP score")
    compare.add_argument("dir_a", help="images to judge (e.g. the SDTM folder)")
    compare.add_argument("dir_b", help="reference images with the same names (e.g. the --method none folder)")
    compare.add_argument("--json", dest="json_path",
                         help="where to write the JSON report (default DIR_A/compare-<name of DIR_B>.json)")
    compare.add_argument("--fid-ref", help="folder of real images (e.g. COCO val2017): FID of DIR_A and of DIR_B "
                                           "against it (needs torchmetrics and torch-fidelity)")
    compare.add_argument("--fid-weights", help="InceptionV3 weights file for FID (torch-fidelity's "
                                               "weights-inception-2015-12-05-6726825d.pth), "
                                               "for machines without internet")
    compare.add_argument("--caption-path", help="the caption file the images were made from: adds the CLIP score "
                                                "(needs torchmetrics and transformers)")
    compare.add_argument("--clip-model", default="openai/clip-vit-large-patch14",
                         help="CLIP model for the CLIP score: a Hugging Face name or a local folder "
                              "(default openai/clip-vit-large-patch14)")
    compare.add_argument("--batch-size", type=_ranged(int, 1, 4096), default=16,
                         help="images per metric batch (default 16)")
    compare.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="where FID and CLIP run")
    return parser


def _remove_if_empty(folder: Path | None) -> None:
    """A folder this run created stays only if an image was written into it."""
    try:
        if folder is not None and folder.is_dir() and {p.name for p in folder.iterdir()} <= {SETTINGS_FILE}:
            (folder / SETTINGS_FILE).unlink(missing_ok=True)
            folder.rmdir()
    except OSError:
        pass


def main(argv: list[str] | None = None) -> int:
    created = None
    report = True  # whether this process prints the error line: rank 0, or any rank when the ranks are wrong
    try:
        ranks = Ranks.from_env()
        report = ranks.rank == 0
        args = build_parser().parse_args(argv)
        args.argv = list(sys.argv[1:] if argv is None else argv)
        if args.command == "compare":
            return run_compare(args)
        output = Path(args.output_path)
        created = None if output.exists() else output
        if args.command == "front":
            return run_front(validate_front(args))
        return run_sample(validate_sample(args))
    except UsageError as error:
        _remove_if_empty(created)
        if report:
            print(f"{PROG}: error: {error}", file=sys.stderr, flush=True)
        return 2
    except BaseException:
        _remove_if_empty(created)
        raise


if __name__ == "__main__":
    sys.exit(main())
