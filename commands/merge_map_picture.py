"""The README's merge-map picture: the photo fixture sampled with an SDTM preset through ComfyUI's
UNETLoader and KSampler, then the pack's own SDTM Merge Map node drawn over the decoded image.

    .venv/bin/python -m commands.merge_map_picture                       # docs/images/merge_map_fixture.png
    .venv/bin/python -m commands.merge_map_picture --photo cat --preset fast --out out/map.png
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image

from harness.comfy_env import REPO, import_comfy, load_pack
from photo_fixture import photo_codec
from photo_fixture.sample import sample_fixture

OUT = REPO / "docs" / "images" / "merge_map_fixture.png"


def merge_map_picture(preset: str, photo: str, seed: int, steps: int, size: int, scale: int) -> Image.Image:
    nodes = import_comfy()
    import comfy.utils
    comfy.utils.PROGRESS_BAR_ENABLED = False
    pack = load_pack()
    captions = {p.name: p.caption for p in photo_codec.PHOTOS}
    model, clip = photo_codec.load_fixture()
    # in-process, no prompt tells the patch that a Merge Map reads it: opt in to keeping the maps
    patched = pack.hook.patch_model(model, pack.presets.preset_config(preset), label=f"preset {preset}",
                                    record_maps=True)
    positive = photo_codec.prompt_conditioning(clip, captions[photo])
    negative = photo_codec.prompt_conditioning(clip, photo_codec.UNCONDITIONAL_PROMPT)
    side = size // photo_codec.PIXELS_PER_LATENT
    samples = sample_fixture(patched, seed, positive, negative, steps, (side, side))
    image = photo_codec.decode_to_comfy_image(samples)
    # nearest-neighbour enlargement: each token cell stays a crisp square in the picture
    image = image.repeat_interleave(scale, dim=1).repeat_interleave(scale, dim=2)
    merge_map = nodes.NODE_CLASS_MAPPINGS["SDTM_MergeMap"]
    (picture,) = merge_map.execute(patched, block=-1, steps="auto", opacity=0.55, image=image,
                                   samples={"samples": samples}).args
    return Image.fromarray((picture[0].numpy() * 255).round().astype(np.uint8))


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="balanced")
    parser.add_argument("--photo", default="flower", choices=[p.name for p in photo_codec.PHOTOS])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--size", type=int, default=128, help="image side in pixels (multiple of 4, at most 128)")
    parser.add_argument("--scale", type=int, default=2, help="enlargement of the image under the map")
    parser.add_argument("--colors", type=int, default=0,
                        help="save with a palette of this many colours (2-256; 0 = full colour): a smaller file")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    if args.size % 4 or not 16 <= args.size <= 128:
        parser.error(f"--size must be a multiple of 4 in [16, 128], got {args.size}")
    if args.steps < 2:
        parser.error(f"--steps must be at least 2, got {args.steps}")
    if not 1 <= args.scale <= 8:
        parser.error(f"--scale must be in [1, 8], got {args.scale}")
    if args.colors and not 2 <= args.colors <= 256:
        parser.error(f"--colors must be 0 or in [2, 256], got {args.colors}")
    picture = merge_map_picture(args.preset, args.photo, args.seed, args.steps, args.size, args.scale)
    if args.colors:
        picture = picture.quantize(colors=args.colors, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    picture.save(args.out, optimize=bool(args.colors))
    print(f"wrote {args.out} ({picture.width}x{picture.height})")
    return args.out


if __name__ == "__main__":
    main()
