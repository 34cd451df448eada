"""The one-command demo: the real ComfyUI server, headless, runs the SD3 workflow with SDTM and the same
workflow without it (same seed), and writes the images and a short report to out/demo/.

    commands/demo.sh                          # the photo fixture: a small SD3-architecture MMDiT trained here
    commands/demo.sh --model tiny             # a tiny random SD3 model made on the fly (no download)
    commands/demo.sh --checkpoint PATH        # a real SD3 / SD3.5 checkpoint (.safetensors)

The model is pluggable: a ``DemoModel`` prepares the model files the server sees and adapts the
workflow's API prompt to them (checkpoint name, image size, a different decoder...). Add an entry to
``MODELS`` for a new one.
"""
from __future__ import annotations

import argparse
import copy
import json
import shutil
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from PIL import Image

from harness.comfy_env import REPO, comfy_root, import_comfy
from harness.comfy_server import ComfyServer, PromptError, PromptRun, ServerError
from harness.image_metrics import load_images, psnr
from photo_fixture.photo_codec import PHOTOS

WORKFLOW = REPO / "workflows" / "api" / "sd3_medium_sdtm.json"
OUT = REPO / "out" / "demo"
PATCH_NODES = {"SDTM_Apply", "SDTM_ApplyAdvanced"}  # MODEL in, patched MODEL out
SAMPLERS = ("KSampler", "KSamplerAdvanced")
SEED_INPUT = {"KSampler": "seed", "KSamplerAdvanced": "noise_seed"}
REPORT_NODES = {"SDTM_RunReport", "SDTM_MergeMap"}  # need a patched model


# ---------------------------------------------------------------------------------------------
# Models
# ---------------------------------------------------------------------------------------------
@dataclass
class DemoModel:
    """What the demo runs. ``model_dirs``: ComfyUI model kind -> folder for the server; ``adapt``
    returns the workflow's API prompt changed to use this model."""

    name: str
    description: str
    model_dirs: dict[str, Path] = field(default_factory=dict)
    checkpoint: str | None = None  # file name in model_dirs["checkpoints"]
    size: tuple[int, int] | None = None  # (width, height) instead of the workflow's
    steps: int | None = None  # instead of the workflow's
    notes: list[str] = field(default_factory=list)
    rewire: Callable[[dict], dict] | None = None  # other loaders / outputs than the workflow's
    decode: Callable[[Path], Image.Image] | None = None  # a SaveLatent file -> picture (no VAE)
    enlarge: int = 1  # the decoded picture is written this many times its size (nearest), to be seen

    def adapt(self, prompt: dict) -> dict:
        prompt = copy.deepcopy(prompt) if self.rewire is None else self.rewire(prompt)
        for node in prompt.values():
            inputs = node["inputs"]
            if node["class_type"] == "CheckpointLoaderSimple" and self.checkpoint:
                inputs["ckpt_name"] = self.checkpoint
            if node["class_type"] in ("EmptySD3LatentImage", "EmptyLatentImage") and self.size:
                inputs["width"], inputs["height"] = self.size
            if node["class_type"] in SAMPLERS and self.steps:
                inputs["steps"] = self.steps
        return prompt


def tiny_model(work: Path, args) -> DemoModel:
    """A tiny random SD3-medium-shaped model (3 joint blocks), random CLIP-L and TAESD3, made on the fly."""
    from harness.tiny_sd3 import cached_tiny_checkpoint, tiny_cache_dir
    path = cached_tiny_checkpoint(tiny_cache_dir(), "sd3-medium", vae="taesd")
    size = (args.size, args.size) if args.size else (512, 512)
    return DemoModel(
        name="tiny random SD3 (made on the fly, no download)",
        description=("a 3-block MMDiT with SD3-medium's layout and random weights, a random CLIP-L and a random "
                     "TAESD3 decoder in one checkpoint; its pictures are structured noise and its timings say "
                     "nothing about real models: run with --checkpoint for those"),
        model_dirs={"checkpoints": path.parent}, checkpoint=path.name, size=size, steps=args.steps,
        notes=[f"image size {size[0]}x{size[1]} instead of the workflow's 1024x1024 (keeps the CPU run short)"])


def checkpoint_model(work: Path, args) -> DemoModel:
    """A checkpoint file the user names; the server sees it through a link in a folder of its own."""
    path = Path(args.checkpoint).expanduser()
    if not path.is_file():
        raise SystemExit(f"--checkpoint: no file at {path} (give the path of an SD3 / SD3.5 .safetensors checkpoint "
                         "that includes its text encoders, e.g. sd3_medium_incl_clips_t5xxlfp8.safetensors)")
    folder = work / "checkpoints"
    folder.mkdir(parents=True, exist_ok=True)
    link = folder / path.name
    link.unlink(missing_ok=True)
    link.symlink_to(path.resolve())
    size = (args.size, args.size) if args.size else None
    return DemoModel(name=path.name, description=f"checkpoint {path.resolve()}", model_dirs={"checkpoints": folder},
                     checkpoint=path.name, size=size, steps=args.steps)


def photo_model(work: Path, args) -> DemoModel:
    """The photo fixture (tests/fixtures, docs/FIXTURE.md) through UNETLoader and CLIPLoader("sd3") with
    the random CLIP-L it was trained with; its latents are pictures folded 2x2 into channels, so the
    workflow saves the latent (SaveLatent) and the demo unfolds it (photo_fixture.photo_codec.decode)."""
    from photo_fixture import photo_codec
    if not photo_codec.FIXTURE.is_file():
        raise SystemExit(f"the photo fixture {photo_codec.FIXTURE} is missing (see docs/FIXTURE.md)")
    import_comfy()  # the random CLIP-L is built with ComfyUI's own CLIP class
    clip = photo_codec.write_fixture_clip(work / "text_encoders")
    caption = next(p.caption for p in photo_codec.PHOTOS if p.name == args.photo)
    pixels = args.size // photo_codec.EMPTY_LATENT_PER_PIXEL if args.size else 128
    size = photo_codec.empty_latent_size(pixels, pixels)

    def rewire(prompt: dict) -> dict:
        prompt = copy.deepcopy(prompt)
        loader = nodes_of(prompt, "CheckpointLoaderSimple")
        if len(loader) != 1:
            raise SystemExit("the photo model replaces the workflow's one CheckpointLoaderSimple; it has "
                             f"{len(loader)}")
        loader = loader[0]
        prompt[loader] = {"class_type": "UNETLoader", "inputs": {"unet_name": photo_codec.FIXTURE.name,
                                                                 "weight_dtype": "default"}}
        prompt["clip"] = {"class_type": "CLIPLoader", "inputs": {"clip_name": clip.name, "type": "sd3"}}
        for sampler in nodes_of(prompt, *SAMPLERS):
            inputs = prompt[sampler]["inputs"]
            inputs["cfg"] = 4.5
            for link, text in (("positive", caption), ("negative", photo_codec.UNCONDITIONAL_PROMPT)):
                prompt[inputs[link][0]]["inputs"]["text"] = text
        for nid in nodes_of(prompt, "CLIPTextEncode"):
            prompt[nid]["inputs"]["clip"] = ["clip", 0]
        for decode in nodes_of(prompt, "VAEDecode"):
            samples = prompt.pop(decode)["inputs"]["samples"]
            for save in [n for n in nodes_of(prompt, "SaveImage") if prompt[n]["inputs"]["images"][0] == decode]:
                prefix = prompt[save]["inputs"]["filename_prefix"]
                prompt[save] = {"class_type": "SaveLatent", "inputs": {"samples": samples, "filename_prefix": prefix}}
        return prompt

    def decode(path: Path) -> Image.Image:
        return photo_codec.decode_to_pil(photo_codec.load_saved_latent(path))[0]

    return DemoModel(
        name="photo fixture (a small SD3-architecture MMDiT trained on photographs, in the repository)",
        description=(f"3 joint blocks, trained here on seven photographs that ship inside scikit-learn and "
                     f"scikit-image (docs/FIXTURE.md); prompt {caption!r}; its latents are 2x2-folded pixels, "
                     f"decoded without a VAE and shown 4x enlarged"),
        model_dirs={"diffusion_models": photo_codec.FIXTURE.parent, "text_encoders": clip.parent},
        size=size, steps=args.steps, rewire=rewire, decode=decode, enlarge=4,
        notes=[f"{pixels}x{pixels} pixel images (the fixture's size), cfg 4.5, the fixture's own prompt"])


MODELS = {"photo": photo_model, "tiny": tiny_model, "checkpoint": checkpoint_model}


def choose_model(args) -> str:
    return "checkpoint" if args.checkpoint else args.model


# ---------------------------------------------------------------------------------------------
# Prompts
# ---------------------------------------------------------------------------------------------
def without_sdtm(prompt: dict) -> dict:
    """The same prompt without SDTM: every SDTM node bridged (its consumers get its model input), the
    report and merge-map nodes dropped, with whatever only they fed."""
    prompt = copy.deepcopy(prompt)
    patches = {nid: node["inputs"]["model"] for nid, node in prompt.items() if node["class_type"] in PATCH_NODES}
    dropped = set(patches) | {nid for nid, node in prompt.items() if node["class_type"] in REPORT_NODES}
    for node in prompt.values():
        for name, value in node["inputs"].items():
            while isinstance(value, list) and value[0] in patches:
                value = patches[value[0]]
            node["inputs"][name] = value
    changed = True
    while changed:  # drop what only dropped nodes fed
        changed = False
        for nid, node in prompt.items():
            if nid not in dropped and any(isinstance(v, list) and v[0] in dropped for v in node["inputs"].values()):
                dropped.add(nid)
                changed = True
    return {nid: node for nid, node in prompt.items() if nid not in dropped}


def nodes_of(prompt: dict, *class_types: str) -> list[str]:
    return [nid for nid, node in prompt.items() if node["class_type"] in class_types]


def sampler_settings(prompt: dict) -> tuple[str, int, int]:
    """The (node id, steps, seed) of the prompt's first sampler, a KSampler or a KSamplerAdvanced."""
    found = nodes_of(prompt, *SAMPLERS)
    if not found:
        raise SystemExit(f"the workflow has no sampler node (one of {', '.join(SAMPLERS)})")
    node = prompt[found[0]]
    return found[0], node["inputs"]["steps"], node["inputs"][SEED_INPUT[node["class_type"]]]


def with_inputs(prompt: dict, class_types: tuple[str, ...], **inputs) -> dict:
    prompt = copy.deepcopy(prompt)
    for nid in nodes_of(prompt, *class_types):
        prompt[nid]["inputs"].update(inputs)
    return prompt


# ---------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------
def timing(seconds: list[float]) -> dict:
    """The median of repeated runs and their spread."""
    return {"runs": [round(s, 4) for s in seconds], "median": statistics.median(seconds), "min": min(seconds),
            "max": max(seconds)}


def merged_tokens(sdtm_report: dict) -> dict:
    """Per phase: its steps and the share of image tokens the attention and the MLP did not see."""
    out = {}
    for phase, p in sdtm_report.get("phases", {}).items():
        if p["steps"] and p["tokens"]:
            out[phase] = {"steps": len(p["steps"]), "attention_merged": round(1 - p["attn_tokens"] / p["tokens"], 4),
                          "mlp_merged": round(1 - p["mlp_tokens"] / p["tokens"], 4)}
    return out


def markdown(report: dict) -> str:
    r, w, wo = report, report["with_sdtm"], report["without_sdtm"]
    lines = [
        "# SDTM demo", "",
        f"- ComfyUI {r['comfyui_version']} ({r['device']}), workflow `{r['workflow']}`",
        f"- Model: {r['model']['name']}: {r['model']['description']}",
        *[f"- Note: {n}" for n in r["model"]["notes"]],
        f"- {image_size(r)}, {r['steps']} steps, seed {r['seed']}", "",
        "| | without SDTM | with SDTM |", "|---|---|---|",
        f"| sampler (KSampler node) seconds, median (min-max) | {_spread(wo['sampler_seconds'])} | "
        f"{_spread(w['sampler_seconds'])} |",
        f"| whole prompt seconds, median (min-max) | {_spread(wo['prompt_seconds'])} | "
        f"{_spread(w['prompt_seconds'])} |",
        f"| image | ![without]({wo['image']}) | ![with]({w['image']}) |", "",
        f"Measured sampler speedup: **{r['speedup']:.2f}x**, the ratio of the medians of {r['repeats']} runs per "
        f"side, interleaved (without, with, without, ...) after a warm-up run of each; run by run "
        f"{', '.join(f'{x:.2f}x' for x in r['speedup_per_repeat'])}. SDTM's FLOP-model speedup: "
        f"{r['flop_speedup']:.2f}x. PSNR of the SDTM image against the plain one: {r['psnr_db']:.1f} dB.", "",
        *([f"Note: {SMALL_MODEL_TIMING}", ""] if r["model"]["source"] != "checkpoint" else []),
        "Image tokens merged away per phase (share of what the plain model computes):", "",
        "| phase | steps | attention | MLP |", "|---|---|---|---|",
        *[f"| {phase} | {p['steps']} | {p['attention_merged']:.0%} | {p['mlp_merged']:.0%} |"
          for phase, p in r["merged_tokens"].items()],
        "", f"SDTM's own summary: {r['sdtm_summary']}", "",
    ]
    return "\n".join(lines)


def image_size(report: dict) -> str:
    """The size of the pictures the sampler made and, where they are written enlarged, of the files shown."""
    made = (report.get("generated_width", report["width"]), report.get("generated_height", report["height"]))
    if made == (report["width"], report["height"]):
        return f"{made[0]}x{made[1]}"
    return f"{made[0]}x{made[1]} pixel images (shown enlarged to {report['width']}x{report['height']})"


def _spread(t: dict) -> str:
    return f"{t['median']:.2f} ({t['min']:.2f}-{t['max']:.2f})"


SMALL_MODEL_TIMING = ("this is a 3-block model on this machine; its timing tells little about SD3 (24 blocks and "
                      "more) on a GPU, where attention and the MLP dominate differently: run with --checkpoint on "
                      "the GPU for real figures.")


def side_by_side(left: Path, right: Path, path: Path) -> None:
    a, b = Image.open(left).convert("RGB"), Image.open(right).convert("RGB")
    canvas = Image.new("RGB", (a.width + b.width + 8, max(a.height, b.height)), (255, 255, 255))
    canvas.paste(a, (0, 0))
    canvas.paste(b, (a.width + 8, 0))
    canvas.save(path)


# ---------------------------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------------------------
def run_demo(args) -> dict:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    work = out / "work"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    source = choose_model(args)
    if source == "tiny":
        print("Making a tiny random SD3 model on the fly (no download). It shows the pipeline working; its "
              f"images are noise. Note: {SMALL_MODEL_TIMING}")
    elif source == "photo":
        print("No --checkpoint given: using the photo fixture, a small SD3-architecture model trained on "
              f"photographs (no download). Note: {SMALL_MODEL_TIMING}")
    model = MODELS[source](work, args)
    base = model.adapt(json.loads(Path(args.workflow).read_text()))
    if not nodes_of(base, *PATCH_NODES):
        raise SystemExit(f"{args.workflow} has no SDTM node")
    saves = ("SaveImage", "SaveLatent")
    with_sdtm = with_inputs(base, saves, filename_prefix="demo/with_sdtm")
    plain = with_inputs(without_sdtm(base), saves, filename_prefix="demo/without_sdtm")
    sampler, steps, seed = sampler_settings(base)
    report_node = nodes_of(base, "SDTM_RunReport")
    if not report_node:
        raise SystemExit(f"{args.workflow} has no SDTM_RunReport node: the demo reads SDTM's statistics from it")
    device = "cpu" if args.device == "cpu" or (args.device == "auto" and not _cuda()) else "gpu"
    print(f"Starting ComfyUI ({comfy_root()}) on {device} with this pack...")
    server = ComfyServer(model.model_dirs, cpu=device == "cpu", root=work / "server")
    try:
        server.start()
        version = server.get("/system_stats").get("system", {}).get("comfyui_version", "unknown")
        print(f"ComfyUI {version} at {server.url}; warm-up runs (loading the model)...")
        for prompt in (plain, with_sdtm):  # load, encode, decode once; the timed runs then only re-sample
            server.run_prompt(with_inputs(prompt, SAMPLERS, steps=2), timeout=args.timeout)
        runs = time_interleaved(server, {"without_sdtm": plain, "with_sdtm": with_sdtm}, sampler, args)
        results, made = {}, {}
        for label, repeats in runs.items():
            run = repeats[0]
            target = out / f"{label}.png"
            if model.decode is None:
                shutil.copyfile(server.output_path(run.images()[-1]), target)
                with Image.open(target) as picture:
                    made[label] = picture.size
            else:
                latents = [f for o in run.history.get("outputs", {}).values() for f in o.get("latents", [])]
                picture = model.decode(server.output_path(latents[-1]))
                made[label] = picture.size
                picture.resize((picture.width * model.enlarge, picture.height * model.enlarge),
                               Image.NEAREST).save(target)
            results[label] = {"image": target.name,
                              "sampler_seconds": timing([r.node_seconds[sampler] for r in repeats]),
                              "prompt_seconds": timing([r.seconds for r in repeats])}
        sdtm = json.loads(runs["with_sdtm"][0].texts(report_node[0])[0])
    except (ServerError, PromptError) as e:
        print(f"The demo failed: {e}\nServer log: {server.log_path}", file=sys.stderr)
        raise SystemExit(1) from None
    finally:
        server.stop()
    side_by_side(out / "without_sdtm.png", out / "with_sdtm.png", out / "comparison.png")
    images = load_images([out / "without_sdtm.png", out / "with_sdtm.png"])
    with Image.open(out / "with_sdtm.png") as shown:  # the size the report names is that of what it shows
        width, height = shown.size
    workflow = Path(args.workflow).resolve()
    report = {
        "comfyui_version": version, "device": device,
        "workflow": str(workflow.relative_to(REPO) if workflow.is_relative_to(REPO) else workflow),
        "model": {"source": source, "name": model.name, "description": model.description, "notes": model.notes},
        "width": width, "height": height,  # of the images shown (with_sdtm.png, without_sdtm.png)
        "generated_width": made["with_sdtm"][0], "generated_height": made["with_sdtm"][1],  # as the sampler made them
        "steps": steps, "seed": seed, "repeats": args.repeats,
        "without_sdtm": results["without_sdtm"], "with_sdtm": results["with_sdtm"],
        "speedup": (results["without_sdtm"]["sampler_seconds"]["median"]
                    / results["with_sdtm"]["sampler_seconds"]["median"]),
        "speedup_per_repeat": [a.node_seconds[sampler] / b.node_seconds[sampler]
                               for a, b in zip(runs["without_sdtm"], runs["with_sdtm"])],
        "flop_speedup": sdtm["flop_speedup"], "merged_tokens": merged_tokens(sdtm),
        "psnr_db": float(psnr(images[:1], images[1:])[0]),
        "sdtm_summary": sdtm["summary"], "sdtm_report": sdtm,
    }
    (out / "report.json").write_text(json.dumps(report, indent=1) + "\n")
    (out / "report.md").write_text(markdown(report))
    shutil.rmtree(work / "server" / "output", ignore_errors=True)
    return report


def time_interleaved(server: ComfyServer, prompts: dict[str, dict], sampler: str, args) -> dict[str, list[PromptRun]]:
    """Run each prompt ``args.repeats`` times, alternating between them, so that a slow spell of the machine
    falls on both sides. ComfyUI's cache keeps only the last prompt's outputs, so alternating prompts
    re-run their sampler every time; a run that took the sampler from the cache is an error."""
    runs: dict[str, list[PromptRun]] = {label: [] for label in prompts}
    for repeat in range(args.repeats):
        for label, prompt in prompts.items():
            print(f"Run {repeat + 1} of {args.repeats}: the workflow {label.replace('_', ' ')}...")
            run = server.run_prompt(prompt, timeout=args.timeout, node_timings=True)
            if sampler in run.cached_nodes or sampler not in run.node_seconds:
                raise SystemExit(f"run {repeat + 1} {label}: ComfyUI took the sampler's output from its cache "
                                 "instead of sampling; the timing would be meaningless")
            runs[label].append(run)
    return runs


def _cuda() -> bool:
    try:
        import torch
        return torch.cuda.is_available()
    except ImportError:
        return False


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="commands/demo.sh", description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", help="an SD3 / SD3.5 checkpoint file with its text encoders "
                                             "(default: the model --model names)")
    parser.add_argument("--model", choices=("photo", "tiny"), default="photo",
                        help="without --checkpoint: the photo fixture (default) or a tiny random model")
    parser.add_argument("--photo", default="flower", choices=[p.name for p in PHOTOS],
                        help="the photo fixture's prompt: the caption of this training photo (default: %(default)s)")
    parser.add_argument("--workflow", default=str(WORKFLOW), help="API-format workflow with an SDTM node and an "
                                                                  "SDTM Run Report node (default: %(default)s)")
    parser.add_argument("--out", default=str(OUT), help="output folder (default: %(default)s)")
    parser.add_argument("--size", type=int, help="image width and height (default: 512 for the tiny model, the "
                                                 "workflow's for a checkpoint)")
    parser.add_argument("--steps", type=int, help="sampler steps (default: the workflow's)")
    parser.add_argument("--device", choices=("auto", "cpu", "gpu"), default="auto",
                        help="where ComfyUI runs (auto: the GPU if torch sees one)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per side, interleaved; the report "
                                                                "gives their median and spread (default: 3)")
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds allowed per prompt")
    args = parser.parse_args(argv)
    if args.repeats < 3:
        parser.error(f"--repeats must be at least 3 (the report gives a median and a spread), got {args.repeats}")
    for name in ("size", "steps"):
        value = getattr(args, name)
        if value is not None and value < (16 if name == "size" else 1):
            parser.error(f"--{name} must be at least {16 if name == 'size' else 1}, got {value}")
    if args.size is not None and args.size % 16:
        parser.error(f"--size must be a multiple of 16 (SD3 latents are 1/8 size, patches 2x2), got {args.size}")
    return args


def main(argv: list[str] | None = None) -> int:
    started = time.perf_counter()
    args = parse_args(argv)
    report = run_demo(args)
    out = Path(args.out)
    print(markdown(report))
    print(f"Wrote {out}/report.md, report.json, with_sdtm.png, without_sdtm.png, comparison.png "
          f"in {time.perf_counter() - started:.0f} s.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
