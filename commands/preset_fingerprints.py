"""Fingerprints of what every preset produces on the photo fixture, to show that a refactor changes no
image: run it before and after the change and compare the two JSON files.

    .venv/bin/python -m commands.preset_fingerprints before.json
    .venv/bin/python -m commands.preset_fingerprints after.json && cmp before.json after.json

For seeds 0 and 1 (prompt = that photo's caption), 8 steps, a 16 x 16 latent: each preset through the
SDTM node as it is and with overridden inputs (ratio 0.4, start 0.1, end 0.9, switch 0.3), and the SDTM
Advanced node set to the preset's settings; the SHA-256 (first 16 hex digits) of each latent. One torch
thread, so that the sums reduce in the same order each time."""
from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path

import torch

from benchmarks.bench_fidelity import advanced_inputs
from harness.comfy_env import import_comfy, load_pack
from photo_fixture import photo_codec
from photo_fixture.sample import sample_fixture

OVERRIDES = {"plain": (-1.0, 0.0, 1.0, -1.0), "ratio0.4": (0.4, 0.1, 0.9, 0.3)}  # ratio, start, end, switch


def preset_fingerprints(seeds: int = 2, steps: int = 8, latent_hw: tuple[int, int] = (16, 16)) -> dict[str, str]:
    """{"<preset>/<plain|ratio0.4|advanced>/<seed>": first 16 hex digits of the latent's SHA-256}."""
    import_comfy()
    pack = load_pack()
    model, clip = photo_codec.load_fixture()
    negative = photo_codec.prompt_conditioning(clip, photo_codec.UNCONDITIONAL_PROMPT)
    out = {}
    for seed in range(seeds):
        positive = photo_codec.prompt_conditioning(clip, photo_codec.PHOTOS[seed].caption)
        for name in pack.presets.PRESETS:
            patched = {variant: pack.apply.execute(model, name, *values).args[0]
                       for variant, values in OVERRIDES.items()}
            patched["advanced"] = pack.advanced.execute(
                model, **advanced_inputs(pack, pack.presets.preset_config(name))).args[0]
            for variant, m in patched.items():
                latent = sample_fixture(m, seed, positive, negative, steps, latent_hw)
                out[f"{name}/{variant}/{seed}"] = hashlib.sha256(latent.numpy().tobytes()).hexdigest()[:16]
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("json", type=Path, help="where to write the fingerprints")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    fingerprints = preset_fingerprints()
    args.json.write_text(json.dumps(fingerprints, indent=1, sort_keys=True) + "\n")
    print(f"{len(fingerprints)} fingerprints written to {args.json}")


if __name__ == "__main__":
    main()
