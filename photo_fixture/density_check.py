"""Did the dense fixture learn SD3's 1024x1024 token density? Its denoising loss on fixed held-out crops, against
the deep fixture it started from (docs/FIXTURE.md, "The dense fixture").

    .venv/bin/python -m photo_fixture.density_check          # prints the table, writes the JSON beside the fixture

Held-out crops: per crop size, 4 crops of each photograph drawn with a seed the trainer never uses (neither its
training crops nor its validation set), each with its own fixed noise, at noise levels spread evenly over
0.05-0.95; the same crops for every model. The loss is the trainer's (rectified-flow MSE, ComfyUI's CONST
convention), in float32. Models:

* ``dense``: the dense fixture (64 x 64 position table, fine-tuned on 256- and 128-pixel crops);
* ``deep, table extended``: the deep fixture with only its position table widened to 64 x 64 the way the
  trainer's ``--init-from`` does (its 32 x 32 table exactly at the centre), no training: what the dense fixture
  started from. At 128 pixels (32 x 32 tokens) ComfyUI crops the table's centre, so this is the deep fixture
  itself there.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from harness.comfy_env import import_comfy

from . import photo_codec
from .train_fixture import (
    DEEP_BLOCKS,
    DEEP_DEPTH,
    DENSE_POS_EMBED_MAX,
    build_model,
    flow_loss,
    initial_weights,
    model_latents,
    text_conditioning,
)

SIZES = (256, 128)
CROPS_PER_PHOTO = 4
HELD_OUT_SEED = 7_700_001  # the trainer seeds its crops with its seed (0) and its validation set with seed + 1_000_003
RESULT = photo_codec.DENSE_FIXTURE.with_name("sdtm_photo_mmdit_dense_heldout.json")


def held_out_crops(size: int, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The held-out crops at ``size`` pixels: pixels [7 * CROPS_PER_PHOTO, 3, size, size] (crop i is of photograph
    i // CROPS_PER_PHOTO, PHOTOS order) and the photograph of each; ``generator`` (default: seeded with
    HELD_OUT_SEED + size) goes on to draw the noise of :func:`held_out_set`."""
    generator = generator or torch.Generator().manual_seed(HELD_OUT_SEED + size)
    photos = photo_codec.load_photos()
    which = torch.arange(len(photos)).repeat_interleave(CROPS_PER_PHOTO)
    return torch.stack([photo_codec.random_crop(photos[int(i)], size, generator) for i in which]), which


def held_out_set(size: int, context: torch.Tensor, pooled: torch.Tensor) -> tuple:
    """(x0, noise, sigma, context, pooled) of CROPS_PER_PHOTO crops of every photograph at ``size`` pixels."""
    generator = torch.Generator().manual_seed(HELD_OUT_SEED + size)
    pixels, which = held_out_crops(size, generator)
    x0 = model_latents(pixels)
    sigma = torch.linspace(0.05, 0.95, len(which))[torch.randperm(len(which), generator=generator)]
    return x0, torch.randn(x0.shape, generator=generator), sigma, context[which], pooled[which]


def dense_model(weights: dict[str, torch.Tensor]) -> torch.nn.Module:
    model = build_model(torch.Generator().manual_seed(0), DEEP_DEPTH, DEEP_BLOCKS, DENSE_POS_EMBED_MAX)
    model.load_state_dict(weights)
    return model.eval()


@torch.no_grad()
def held_out_loss(model: torch.nn.Module, batch: tuple, chunk: int = 4) -> float:
    """Mean loss over the crops, a few at a time (the same value as one batch, less memory)."""
    total, count = 0.0, len(batch[0])
    for start in range(0, count, chunk):
        part = [t[start:start + chunk] for t in batch]
        total += float(flow_loss(model, *part, bf16=False)) * len(part[0])
    return total / count


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dense", type=Path, default=photo_codec.DENSE_FIXTURE)
    parser.add_argument("--deep", type=Path, default=photo_codec.DEEP_FIXTURE)
    parser.add_argument("--out", type=Path, default=RESULT)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    for flag, path in (("--dense", args.dense), ("--deep", args.deep)):
        if not path.is_file():
            parser.error(f"{flag}: no such fixture file {path}")
    import_comfy()
    torch.set_num_threads(args.threads)
    from safetensors.torch import load_file
    context, pooled = text_conditioning([p.caption for p in photo_codec.PHOTOS])
    probe = dense_model(initial_weights(args.deep, build_model(torch.Generator().manual_seed(0), DEEP_DEPTH,
                                                               DEEP_BLOCKS, DENSE_POS_EMBED_MAX)))
    models = {"dense": dense_model({k: v.float() for k, v in load_file(str(args.dense)).items()}),
              "deep, table extended": probe}
    rows = []
    for size in SIZES:
        batch = held_out_set(size, context, pooled)
        row = {"crop_px": size, "tokens": f"{size // 4} x {size // 4}", "crops": len(batch[0])}
        row.update({name: round(held_out_loss(model, batch), 6) for name, model in models.items()})
        rows.append(row)
        print(f"{size} px ({row['tokens']} tokens, {row['crops']} crops): "
              + ", ".join(f"{name} {row[name]:.4f}" for name in models), flush=True)
    result = {"command": "python -m photo_fixture.density_check",
              "fixtures": {"dense": photo_codec.file_digest(args.dense), "deep": photo_codec.file_digest(args.deep)},
              "held_out_seed": HELD_OUT_SEED, "crops_per_photo": CROPS_PER_PHOTO, "rows": rows}
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.out}")
    return result


if __name__ == "__main__":
    main()
