"""`python -m commands.evaluate compare`: PSNR/SSIM between matched images of two folders, FID and CLIP score,
every input checked before any metric model loads or any metric work starts."""
from __future__ import annotations

import argparse
import json
import math
import os
from pathlib import Path

from .eval_captions import SETTINGS_FILE, UsageError, image_files, load_captions
from .eval_sampling import pick_device


def optional_module(module: str) -> bool:
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
    """[1, 3, H, W] uint8, what torchmetrics' FID and CLIP score take."""
    import torch

    from harness.image_metrics import read_rgb
    return torch.from_numpy(read_rgb(path)).permute(2, 0, 1).unsqueeze(0)


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


def clip_metric(model_name: str, device):
    """torchmetrics' CLIPScore: 100 * max(cos, 0) of the CLIP image and caption embeddings (captions
    longer than the text encoder are truncated)."""
    from torchmetrics.multimodal.clip_score import CLIPScore
    return CLIPScore(model_name_or_path=_clip_model_loader(model_name)).to(device)


def _folder_settings(folder: Path, option: str) -> dict | None:
    """The settings a sample folder was made with (its SETTINGS_FILE), None when it has none."""
    path = folder / SETTINGS_FILE
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise UsageError(f"{option} {folder}: {SETTINGS_FILE} is unreadable ({error}); remove it or fix it") from None
    if not isinstance(data, dict) or not isinstance(data.get("settings"), dict):
        raise UsageError(f"{option} {folder}: {SETTINGS_FILE} holds no 'settings' object; remove it or fix it")
    return data["settings"]


def _image_size(path: Path) -> tuple[int, int]:
    """(width, height) of an image file, decoding it all so that a corrupt file is found before any metric work."""
    from PIL import Image
    try:
        with Image.open(path) as image:
            image.load()
            return image.size
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
        raise UsageError(f"{path}: not a readable image ({error})") from None


def run_compare(args: argparse.Namespace) -> int:
    """PSNR/SSIM per matched image, plus FID and CLIP score where asked and available; a table on
    stdout and a JSON report."""
    dir_a, dir_b = Path(args.dir_a), Path(args.dir_b)
    for option, folder in (("DIR_A", dir_a), ("DIR_B", dir_b)):
        if not folder.is_dir():
            raise UsageError(f"{option} {folder}: no such folder")
    files_a, files_b = image_files(dir_a), image_files(dir_b)
    names = sorted(set(files_a) & set(files_b))
    if not names:
        raise UsageError(f"no image file names in common between {dir_a} ({len(files_a)} images) and {dir_b} "
                         f"({len(files_b)} images)")
    if args.fid_ref is not None:
        if not Path(args.fid_ref).is_dir() or not image_files(Path(args.fid_ref)):
            raise UsageError(f"--fid-ref {args.fid_ref}: not a folder of images")
        for module, package in (("torchmetrics", "torchmetrics"), ("torch_fidelity", "torch-fidelity")):
            if not optional_module(module):
                raise UsageError(f"--fid-ref: FID needs {package}, which is not installed (pip install {package})")
    if args.fid_weights is not None and not os.path.isfile(args.fid_weights):
        raise UsageError(f"--fid-weights {args.fid_weights}: no such file")
    captions = None
    if args.caption_path is not None:
        captions = {p.name: p.caption for p in load_captions(args.caption_path)}
        for module, package in (("torchmetrics", "torchmetrics"), ("transformers", "transformers")):
            if not optional_module(module):
                raise UsageError(f"--caption-path: the CLIP score needs {package}, which is not installed "
                                 f"(pip install {package})")
        if not any(name in captions for name in names):
            raise UsageError(f"--caption-path {args.caption_path}: "
                             "none of its image ids names an image in both folders")
    settings = {key: _folder_settings(folder, option) for key, option, folder in (("a", "DIR_A", dir_a),
                                                                                  ("b", "DIR_B", dir_b))}
    sizes_a = {name: _image_size(files_a[name]) for name in names}
    for name in names:
        size_b = _image_size(files_b[name])
        if sizes_a[name] != size_b:
            raise UsageError(f"{name}: {files_a[name]} is {sizes_a[name][0]}x{sizes_a[name][1]} but {files_b[name]} is "
                             f"{size_b[0]}x{size_b[1]}")
    if args.fid_ref is not None:
        for path in image_files(Path(args.fid_ref)).values():
            _image_size(path)
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

    from harness.image_metrics import load_images, psnr, ssim
    device = torch.device(pick_device(args.device))
    # The models first, so that a model that cannot load stops the command before any work.
    fid = _fid_metric(args.fid_weights, device) if args.fid_ref is not None else None
    clip = clip_metric(args.clip_model, device) if captions is not None else None
    per_image = {}
    for name in tqdm(names, unit="img", desc="PSNR/SSIM", disable=None):
        a, b = load_images([files_a[name]]), load_images([files_b[name]])
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
    for key, folder_settings in settings.items():
        if folder_settings is not None:
            report[f"settings_{key}"] = folder_settings

    if fid is not None:
        for path in image_files(Path(args.fid_ref)).values():
            fid.update(_uint8_image(path).to(device), real=True)
        report["fid"] = {"ref": args.fid_ref}
        for key, files in (("a", files_a), ("b", files_b)):
            for path in files.values():  # one at a time: the metric resizes each image itself
                fid.update(_uint8_image(path).to(device), real=False)
            report["fid"][key] = float(fid.compute())
            fid.reset()  # keeps the reference statistics
    else:
        missing = [p for m, p in (("torchmetrics", "torchmetrics"), ("torch_fidelity", "torch-fidelity"))
                   if not optional_module(m)]
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
        missing = [p for m, p in (("torchmetrics", "torchmetrics"), ("transformers", "transformers"))
                   if not optional_module(m)]
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
        ("FID vs --fid-ref", (f"A {fid['a']:.3f}, B {fid['b']:.3f}  (reference {fid['ref']})" if fid
                              else report["notes"]["fid"])),
        ("CLIP score", (f"A {clip_score['a']:.3f}, B {clip_score['b']:.3f}  ({clip_score['images']} captioned images, "
                        f"{clip_score['model']})") if clip_score else report["notes"]["clip_score"]),
    ]
    width = max(len(name) for name, _ in rows)
    lines = [(f"A = {report['dir_a']}, B = {report['dir_b']}: {report['matched']} matched images "
              f"({report['only_in_a']} only in A, {report['only_in_b']} only in B)")]
    lines += [f"{name:<{width}}  {text}" for name, text in rows]
    lines.append(f"JSON report: {json_path}")
    return "\n".join(lines)
