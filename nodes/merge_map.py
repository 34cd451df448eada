"""SDTM Merge Map: a picture of what the last sampling run merged.

For chosen steps, one panel per step: the image-token grid over the decoded image (or a plain
background), every merged group of tokens tinted in its own colour, tokens left alone untinted; a
title with the step, its phase and the share of image tokens the attention and the MLP saw. Below, a
per-step chart of those shares for the whole run.
"""
from __future__ import annotations

import colorsys
import logging

import numpy as np
import torch
from comfy_api.latest import io
from PIL import Image, ImageDraw, ImageFont

from .node_schema import CATEGORY, SEARCH_ALIASES, schema
from .run_records import KEY, run_of_latent

log = logging.getLogger("SDTM")

CELL = 16  # pixels per image token without an image: VAE / 8, patch 2
TITLE = 14  # pixels of the title strip above each panel
MIN_PANEL_WIDTH = 288  # smaller images are enlarged (nearest neighbour) so titles and cells stay readable
MIN_SHEET_WIDTH = 640  # room for the chart's legend
ASPECT_TOLERANCE = 0.02  # an image may be resized by a little more than its padding to whole tokens

PHASE_COLOURS = {"full": (150, 150, 150), "structure": (66, 135, 245), "detail": (245, 145, 50)}


def group_palette(num: int, seed: int = 0) -> np.ndarray:
    """[num, 3] uint8 distinct, saturated colours in a shuffled order (neighbouring groups differ)."""
    rng = np.random.default_rng(seed)
    hues = (np.arange(num) * 0.61803398875) % 1.0
    rng.shuffle(hues)
    return np.array([[int(255 * c) for c in colorsys.hsv_to_rgb(h, 0.85, 1.0)] for h in hues], dtype=np.uint8)


def merged_tokens(groups: torch.Tensor) -> torch.Tensor:
    """[N] group ids -> [N] bool: the token shares its group with at least one other token."""
    sizes = torch.bincount(groups)
    return sizes[groups] > 1


def token_overlay(groups: torch.Tensor, grid: tuple[int, int], base: np.ndarray, opacity: float) -> np.ndarray:
    """Tint every merged token's cell of ``base`` ([H, W, 3] uint8) with its group's colour."""
    h, w = grid
    height, width = base.shape[:2]
    palette = group_palette(int(groups.max()) + 1)
    colours = palette[groups.numpy()].reshape(h, w, 3)
    mask = merged_tokens(groups).numpy().reshape(h, w)
    # token (r, c) covers rows r*H/h .. (r+1)*H/h of the image (the latent is padded to whole patches)
    rows = np.minimum((np.arange(height) * h) // height, h - 1)
    cols = np.minimum((np.arange(width) * w) // width, w - 1)
    tint = colours[rows][:, cols].astype(np.float32)
    where = mask[rows][:, cols][..., None]
    out = base.astype(np.float32)
    out = np.where(where, (1 - opacity) * out + opacity * tint, out)
    return out.round().clip(0, 255).astype(np.uint8)


def pick_steps(spec: str, merged_steps: list[int], limit: int = 6) -> list[int]:
    """"auto": up to ``limit`` merged steps spread over the run; otherwise a comma separated list
    (repeated steps are shown once)."""
    if spec.strip().lower() == "auto":
        if len(merged_steps) <= limit:
            return merged_steps
        idx = np.linspace(0, len(merged_steps) - 1, limit).round().astype(int)
        return [merged_steps[i] for i in sorted(set(idx))]
    try:
        steps = [int(v) for v in spec.replace(" ", "").split(",") if v]
    except ValueError:
        raise ValueError(f"steps must be 'auto' or comma separated step numbers, got {spec!r}") from None
    if not steps:
        raise ValueError("steps must be 'auto' or comma separated step numbers, got nothing")
    return list(dict.fromkeys(steps))


def _text(draw: ImageDraw.ImageDraw, xy, text: str, fill=(255, 255, 255)) -> None:
    draw.text(xy, text, fill=fill, font=ImageFont.load_default())


def token_chart(steps: list[dict], width: int, height: int = 150) -> Image.Image:
    """Bars per step: the share of image tokens the attention (left bar) and the MLP (right bar) saw."""
    img = Image.new("RGB", (width, height), (24, 24, 24))
    draw = ImageDraw.Draw(img)
    _text(draw, (6, 4), "image tokens seen per step: attention (left) and MLP (right) bars, "
                        "grey full / blue structure / orange detail")
    if not steps:
        return img
    top, bottom, left = 22, height - 16, 30
    span = (width - left - 8) / len(steps)
    draw.line([(left, top), (left, bottom)], fill=(120, 120, 120))
    _text(draw, (2, top - 4), "100%", fill=(160, 160, 160))
    for i, s in enumerate(steps):
        colour = PHASE_COLOURS.get(s["phase"], (200, 200, 200))
        shares = (s["attn_tokens"] / s["tokens"], s["mlp_tokens"] / s["tokens"]) if s["tokens"] else (1.0, 1.0)
        for j, share in enumerate(shares):
            x0 = left + 2 + i * span + j * span / 2
            x1 = x0 + max(1.0, span / 2 - 2)
            y0 = bottom - share * (bottom - top)
            draw.rectangle([x0, y0, x1, bottom], fill=colour if j == 0 else tuple(int(c * 0.7) for c in colour))
        if len(steps) <= 40 or i % 5 == 0:
            _text(draw, (left + i * span + 1, bottom + 2), str(s["step"]), fill=(170, 170, 170))
    return img


def image_underlay(image: torch.Tensor, grid: tuple[int, int]) -> np.ndarray:
    """The first image of a ComfyUI IMAGE [B, H, W, C] as [H, W, 3] uint8 (grey for 1 or 2 channels,
    alpha dropped); refused with a clear message when the batch is empty or the image's aspect is not
    that of the run's token grid (then it is not the run's image)."""
    if image.dim() != 4 or image.shape[0] == 0 or image.shape[1] == 0 or image.shape[2] == 0:
        raise ValueError(f"image must be a batch of at least one image [B, H, W, C], got shape {list(image.shape)}")
    height, width, channels = image.shape[1:]
    h, w = grid
    # the latent (image / 8) is padded to whole 2x2 patches: h tokens cover 2h - 1 or 2h latent rows
    lowest, highest = (2 * h - 1) / (2 * w), (2 * h) / max(1, 2 * w - 1)
    aspect = height / width
    if not lowest * (1 - ASPECT_TOLERANCE) <= aspect <= highest * (1 + ASPECT_TOLERANCE):
        raise ValueError(
            f"image is {width}x{height} (height/width {aspect:.2f}), but the run's token grid is {w}x{h} tokens "
            f"({16 * w}x{16 * h} px, height/width {h / w:.2f}): it is not the image of this run. Connect the "
            f"decoded image of the sampler whose LATENT is connected to samples.")
    pixels = (image[0].float().clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()
    if channels < 3:
        pixels = np.repeat(pixels[..., :1], 3, axis=-1)
    return np.ascontiguousarray(pixels[..., :3])


NOT_RECORDED = ("this run kept no merge map: it ran before a Merge Map read this model (for example the SDTM node "
                "came from ComfyUI's cache of a prompt without one). The model's next run keeps one: queue again "
                "with another seed or setting.")


def report_grid(report: dict) -> tuple[int, int]:
    """The run's token grid (h, w) from its latent's shape [B, C, H, W] (patch 2, padded)."""
    shape = report.get("latent_shape")
    if not shape or len(shape) != 4:
        raise ValueError("the run produced no latent (it was interrupted): there is no merge map to draw")
    return -(-shape[2] // 2), -(-shape[3] // 2)


def render_merge_map(maps: dict | None, report: dict, image: torch.Tensor | None, block: int, steps_spec: str,
                     opacity: float, note: str = "") -> torch.Tensor:
    """The merge-map picture as a ComfyUI IMAGE: [1, H, W, 3] float32 in [0, 1]. ``maps`` None: the run
    kept no map (the panels are untinted and say so); a run that merged nothing shows that."""
    if not 0.0 <= opacity <= 1.0:  # also NaN
        raise ValueError(f"opacity must be a number in [0, 1], got {opacity}")
    groups = (maps or {}).get("groups") or {}
    grid = (maps or {}).get("grid") or report_grid(report)
    if groups:
        blocks = sorted({b for _, b in groups})
        if block == -1:
            block = blocks[len(blocks) // 2]
        elif block not in blocks:
            raise ValueError(f"block {block} merged no tokens in this run; blocks that merged: {blocks}")
        merged_steps = sorted(s for s, b in groups if b == block)
    else:  # nothing to tint: show the run's steps as they ran
        empty = NOT_RECORDED if maps is None else ("the run merged no tokens (ratio 0, or no merging step or "
                                                   "block on this image): nothing is tinted")
        note = f"{note}; {empty}" if note else empty
        merged_steps = [s["step"] for s in report["steps"]]
    steps = pick_steps(steps_spec, merged_steps)
    first, last = report.get("first_step", 0), report.get("first_step", 0) + report["num_steps"] - 1
    unknown = [s for s in steps if not first <= s <= last]
    if unknown:
        raise ValueError(f"steps {unknown} are outside the run's {first}..{last}")
    base = image_underlay(image, grid) if image is not None else np.full((grid[0] * CELL, grid[1] * CELL, 3), 70,
                                                                          dtype=np.uint8)
    scale = -(-MIN_PANEL_WIDTH // base.shape[1])
    if scale > 1:
        base = base.repeat(scale, axis=0).repeat(scale, axis=1)
    by_step = {s["step"]: s for s in report["steps"]}
    panels = []
    for s in steps:
        g = groups.get((s, block))
        panel = token_overlay(g, grid, base, opacity) if g is not None else base.copy()
        info = by_step.get(s)
        title = f"step {s}: " + (f"{info['phase']}, attention {info['attn_tokens'] / info['tokens']:.0%}, "
                                 f"MLP {info['mlp_tokens'] / info['tokens']:.0%}" if info else "not run")
        if g is None and info and maps is not None:
            title += " (nothing merged in this block)"
        pil = Image.new("RGB", (panel.shape[1], panel.shape[0] + TITLE), (0, 0, 0))
        pil.paste(Image.fromarray(panel), (0, TITLE))
        _text(ImageDraw.Draw(pil), (3, 2), title)
        panels.append(pil)
    cols = min(3, len(panels))
    rows = -(-len(panels) // cols)
    pw, ph = panels[0].size
    width = max(cols * pw, MIN_SHEET_WIDTH)
    chart = token_chart(report["steps"], width)
    notes = 32 if note else 16
    sheet = Image.new("RGB", (width, rows * ph + chart.height + notes), (24, 24, 24))
    for i, p in enumerate(panels):
        sheet.paste(p, ((i % cols) * pw, (i // cols) * ph))
    draw = ImageDraw.Draw(sheet)
    shown = f"block {block}: merged groups tinted, one colour per group" if groups else "no merged groups"
    _text(draw, (4, rows * ph + 2), f"{report['label']}, seed {report['seed']}, {shown}; "
                                    f"FLOP-model speedup {report['flop_speedup']:.2f}x")
    if note:
        _text(draw, (4, rows * ph + 18), note, fill=(255, 200, 80))
    sheet.paste(chart, (0, rows * ph + notes))
    return torch.from_numpy(np.asarray(sheet, dtype=np.float32) / 255.0).unsqueeze(0)


class SDTMMergeMap(io.ComfyNode):
    """What the last sampling run of an SDTM-patched model merged, as a picture."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return schema(
            node_id="SDTM_MergeMap",
            display_name="SDTM Merge Map",
            category=CATEGORY,
            search_aliases=SEARCH_ALIASES,
            description="Shows which image tokens the sampling run of the given LATENT merged: per chosen step, "
                        "every merged group tinted in its own colour over the image, and a per-step chart of the image "
                        "tokens the attention and the MLP saw.",
            is_output_node=True,
            inputs=[
                io.Model.Input("model", tooltip="The MODEL output of an SDTM node (or a model cloned from it) "
                                                "that the sampler used."),
                io.Image.Input("image", optional=True,
                               tooltip="The decoded image of that run, to draw the map over (its first image is "
                                       "used); it must have the aspect of the run's latent."),
                io.Latent.Input("samples", optional=True,
                                tooltip="The sampler's output LATENT: the map shows the run that produced it "
                                        "(without it, the model's latest run, with a warning)."),
                io.Int.Input("block", default=-1, min=-1, max=1000,
                             tooltip="Which joint block's merges to show; -1 = the middle one of the blocks "
                                     "that merged."),
                io.String.Input("steps", default="auto",
                                tooltip="'auto' (up to 6 merged steps spread over the run) or step numbers, "
                                        "comma separated (0-based)."),
                io.Float.Input("opacity", default=0.55, min=0.0, max=1.0, step=0.05,
                               tooltip="How strongly merged tokens are tinted."),
            ],
            outputs=[io.Image.Output(tooltip="The merge map: one panel per step, and the per-step token chart.")],
        )

    @classmethod
    def execute(cls, model, block: int, steps: str, opacity: float, image=None, samples=None) -> io.NodeOutput:
        record = run_of_latent(model, samples, "samples")
        note = ""
        if samples is None:
            note = ("samples not connected: this is the model's latest run, which may not be this image's; "
                    "connect the sampler's LATENT to samples")
            log.warning("SDTM Merge Map: %s", note)
        if record.maps is None:  # from now on this model's runs keep their map for this node
            model.model_options["transformer_options"][KEY].record_maps = True
        picture = render_merge_map(record.maps, record.report, image, block, steps, opacity, note=note)
        return io.NodeOutput(picture)
