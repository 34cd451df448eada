"""How alike neighbouring image tokens are where SDTM merges them, at 64x64 and at 32x32 tokens, on the dense
photo fixture (docs/FIXTURE.md): the premise that denser token grids (SD3 at 1024x1024) leave more to merge.

Samples unpatched through ComfyUI's KSampler (``photo_fixture.sample.sample_fixture``, 30 steps euler /
sgm_uniform, the front's prompts: seed s uses caption s mod 7) and records the image tokens entering the
middle joint block at a few steps (a forward pre-hook; nothing is patched). Per step and size: the mean cosine
similarity of each token to its right and lower neighbours, and the mean pairwise cosine similarity inside
each 2x2 window (SDTM's structure-phase unit), over the conditional and unconditional halves and the seeds.
The same for the finished samples and for the real photographs (whole, scaled to each size), as latent tokens
(2x2 latent patches, each image's mean removed): how much more alike neighbours become at double density in
real scenes, against what the fixture draws.

    .venv/bin/python -m benchmarks.token_similarity            # docs/benchmarks/token_similarity_dense.json
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from harness.comfy_env import REPO, import_comfy
from photo_fixture import photo_codec
from photo_fixture.sample import sample_fixture

OUT = REPO / "docs" / "benchmarks" / "token_similarity_dense.json"
SIZES = (256, 128)  # pixels: 64x64 and 32x32 image tokens
STEPS, RECORDED = 30, (3, 10, 20, 28)  # structure-phase steps (before 0.41) and detail-phase steps


def neighbour_similarity(x: torch.Tensor, grid: tuple[int, int]) -> dict:
    """x [B, N, C] image tokens on an h x w grid -> mean cosine similarity to the right / lower neighbour and
    inside 2x2 windows."""
    h, w = grid
    t = F.normalize(x.float(), dim=-1).reshape(x.shape[0], h, w, -1)
    right = (t[:, :, :-1] * t[:, :, 1:]).sum(-1).mean()
    down = (t[:, :-1] * t[:, 1:]).sum(-1).mean()
    win = t[:, : h // 2 * 2, : w // 2 * 2].reshape(x.shape[0], h // 2, 2, w // 2, 2, -1).permute(0, 1, 3, 2, 4, 5)
    win = win.reshape(x.shape[0], h // 2, w // 2, 4, -1)
    gram = win @ win.transpose(-1, -2)  # [B, h/2, w/2, 4, 4]
    pairs = (gram.sum((-1, -2)) - 4) / 12
    return {"right": float(right), "down": float(down), "window_2x2": float(pairs.mean())}


def latent_tokens(latent: torch.Tensor) -> torch.Tensor:
    """[B, 16, h, w] latent -> [B, (h/2)(w/2), 64] image tokens as MMDiT's 2x2 patch embedding groups them."""
    b, c, h, w = latent.shape
    return latent.reshape(b, c, h // 2, 2, w // 2, 2).permute(0, 2, 4, 1, 3, 5).reshape(b, (h // 2) * (w // 2), -1)


def photo_similarity(size: int) -> dict:
    """The same statistic on the real photographs (centre square, scaled to ``size``), as latent tokens."""
    rows = []
    for pixels in photo_codec.load_photos():
        latent = photo_codec.encode(photo_codec.whole_photo(pixels, size))
        side = latent.shape[-1] // 2
        rows.append(neighbour_similarity(latent_tokens(latent - latent.mean((-1, -2), keepdim=True)), (side, side)))
    return {k: sum(r[k] for r in rows) / len(rows) for k in rows[0]}


def measure(seeds: int) -> dict:
    import_comfy()
    import comfy.utils
    comfy.utils.PROGRESS_BAR_ENABLED = False
    model, clip = photo_codec.load_fixture(photo_codec.DENSE_FIXTURE)
    blocks = model.model.diffusion_model.joint_blocks
    block = len(blocks) // 2
    captions = [p.caption for p in photo_codec.PHOTOS]
    negative = photo_codec.prompt_conditioning(clip, photo_codec.UNCONDITIONAL_PROMPT)
    result = {"setup": {"fixture": "dense", "sha256": photo_codec.file_digest(photo_codec.DENSE_FIXTURE),
                        "block": block, "steps": STEPS, "recorded_steps": list(RECORDED), "seeds": seeds,
                        "sampler": "euler", "scheduler": "sgm_uniform",
                        "command": "python -m benchmarks.token_similarity"},
              "sizes": {}}
    for size in SIZES:
        side = size // photo_codec.PIXELS_PER_LATENT
        grid = (side // 2, side // 2)  # 2x2 latent patches per token
        per_step = {step: [] for step in RECORDED}
        calls: list[dict] = []
        finals: list[dict] = []

        def record(module, args, kwargs) -> None:
            calls.append(neighbour_similarity(args[1], grid))
        started = time.perf_counter()
        for seed in range(seeds):
            positive = photo_codec.prompt_conditioning(clip, captions[seed % len(captions)])
            calls.clear()
            handle = blocks[block].register_forward_pre_hook(record, with_kwargs=True)
            try:
                final = sample_fixture(model, seed, positive, negative, STEPS, (side, side))
            finally:
                handle.remove()
            finals.append(neighbour_similarity(latent_tokens(final - final.mean((-1, -2), keepdim=True)), grid))
            for i, sims in enumerate(calls):  # one model call per step, or two when cond and uncond run apart
                step = i * STEPS // len(calls)
                if step in per_step:
                    per_step[step].append(sims)
        rows = {str(step): {k: sum(v[k] for v in values) / len(values) for k in values[0]}
                for step, values in per_step.items()}
        result["sizes"][f"{grid[0]}x{grid[1]}"] = {
            "size_px": size, "steps": rows,
            "final_latent": {k: sum(r[k] for r in finals) / len(finals) for k in finals[0]},
            "photos_latent": photo_similarity(size), "seconds": round(time.perf_counter() - started, 1)}
    return result


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    result = measure(args.seeds)
    print("| tokens | step | right neighbour | lower neighbour | inside 2x2 windows |\n|---|---|---|---|---|")
    for tokens, data in result["sizes"].items():
        for step, row in data["steps"].items():
            print(f"| {tokens} | {step} | {row['right']:.3f} | {row['down']:.3f} | {row['window_2x2']:.3f} |")
        for label, key in (("the sample (latent tokens)", "final_latent"), ("the real photos (latent tokens)",
                                                                            "photos_latent")):
            row = data[key]
            print(f"| {tokens} | {label} | {row['right']:.3f} | {row['down']:.3f} | {row['window_2x2']:.3f} |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    print(f"wrote {args.out}")
    return result


if __name__ == "__main__":
    main()
