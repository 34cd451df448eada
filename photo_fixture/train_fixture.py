"""Train the photo fixture: a small SD3-architecture MMDiT, learned on real photographs, that
ComfyUI loads with UNETLoader and samples with KSampler like any SD3 model.

    nice -n 5 .venv/bin/python -m photo_fixture.train_fixture            # the committed fixture (about 40 min)
    .venv/bin/python -m photo_fixture.train_fixture --steps 200 --out /tmp/pilot   # a quick try
    .venv/bin/python -m photo_fixture.train_fixture --grid-only          # redraw the sample grid from the fixture

What it trains (docs/FIXTURE.md says why):

* the model: ComfyUI's own ``OpenAISignatureMMDITWrapper`` (the MMDiT class ``comfy.model_base.SD3``
  builds) with SD3's key layout: depth 3 (hidden 192, 3 heads: ComfyUI derives depth = hidden / 64
  from the weights), patch 2, 16 latent channels, context_embedder 4096 -> 192, y_embedder 2048 ->
  192, a fixed 2-D sin-cos ``pos_embed`` table of 32 x 32 tokens. Stored in float16: 10 MB.
* the data: random crops (64 and 128 pixels, random scale and flip) of the photographs listed in
  ``photo_fixture.photo_codec.PHOTOS``, turned into latents by ``photo_codec.encode`` (no VAE) and then by
  SD3's ``latent_format.process_in``, as ComfyUI's sampler does.
* the conditioning: each photo's caption through ComfyUI's CLIPLoader (type "sd3") and CLIPTextEncode,
  with the random CLIP-L of ``harness.tiny_sd3.clip_l_state_dict(seed=0)`` (the file
  ``write_tiny_bundle`` writes): context [1, 77, 4096], pooled [1, 2048]. 10% of the samples get
  the empty prompt's conditioning instead, so classifier-free guidance works.
* the objective: SD3's rectified flow as ComfyUI samples it (``model_sampling.CONST`` and
  ``ModelSamplingDiscreteFlow``): x_t = (1 - sigma) x0 + sigma noise, the model gets timestep
  sigma * 1000 and predicts noise - x0 (ComfyUI computes denoised = x_t - sigma * output). Training
  sigmas: SD3's logit-normal progress u ~ sigmoid(N(0, 1)) mapped through the sampler's shift
  3.0, sigma = 3u / (1 + 2u), so training sees the noise levels KSampler visits.
* AdamW, warm-up then cosine learning rate, bfloat16 autocast, gradient clipping, an EMA of the
  weights (what is saved). One thread by default: on a shared 2-core machine a second thread made
  steps several times slower, and a fixed thread count keeps the run bit-reproducible.
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import os
import platform
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from harness.comfy_env import REPO, import_comfy

from . import photo_codec
from .sample import CFG, sample_fixture

DEPTH = 3  # hidden = 64 * depth, heads = depth (SD3's rule, which ComfyUI's detection relies on)
# The deep fixture: 8 joint blocks (enough to measure block ranges and protected blocks) of width
# 128 (depth 2 by SD3's rule), so that it stays small (11 MB) and trains in about the first one's time.
# ComfyUI derives the width, not the block count, from the weights: photo_fixture.photo_codec.load_fixture
# builds it with MMDiT's own ``num_blocks`` argument.
# It trains for half the first fixture's steps, to fit one working session on 2 shared cores.
DEEP_DEPTH, DEEP_BLOCKS, DEEP_STEPS = 2, 8, 3000
POS_EMBED_MAX = 32  # token grids up to 32 x 32 (latents up to 64 x 64, images up to 128 x 128 pixels)
CONTEXT_DIM = 4096  # SD3's context width (CLIP-L's 768 padded, as CLIPLoader type "sd3" does)
POOLED_DIM = 2048  # SD3's pooled width (CLIP-L 768 + CLIP-G 1280, zeros without CLIP-G)
FIXTURE = photo_codec.FIXTURE
DEEP_FIXTURE = photo_codec.DEEP_FIXTURE
LOSS_CSV = REPO / "tests" / "fixtures" / "sdtm_photo_mmdit_loss.csv"
DEEP_LOSS_CSV = REPO / "tests" / "fixtures" / "sdtm_photo_mmdit_deep_loss.csv"


def checkpoint_path(log_path: Path) -> Path:
    """The training checkpoint beside the loss log (``--resume`` continues from it)."""
    return log_path.with_suffix(".checkpoint.pt")
IMAGES = REPO / "docs" / "images"


@dataclass(frozen=True)
class TrainConfig:
    steps: int = 6000
    seed: int = 0
    depth: int = DEPTH  # hidden = 64 * depth, heads = depth
    blocks: int = DEPTH  # joint blocks (MMDiT's num_blocks)
    crops: tuple[tuple[int, int], ...] = ((64, 16), (128, 4))  # (crop pixels, batch), alternating steps
    lr: float = 1e-3
    final_lr_fraction: float = 0.1
    warmup: int = 200
    ema_decay: float = 0.999
    cond_dropout: float = 0.1
    grad_clip: float = 1.0
    logit_normal_std: float = 1.0
    shift: float = 3.0  # ComfyUI's SD3 sampling shift (checked against comfy.supported_models.SD3)
    bf16: bool = True
    threads: int = 1
    val_every: int = 250
    clip_seed: int = photo_codec.CLIP_SEED  # the random CLIP-L the captions are encoded with (recorded only)
    captions: tuple[str, ...] = field(default_factory=lambda: tuple(p.caption for p in photo_codec.PHOTOS))


# ------------------------------------------------------------------------------------------------
# Model
# ------------------------------------------------------------------------------------------------
def build_model(generator: torch.Generator, depth: int = DEPTH, blocks: int = DEPTH) -> torch.nn.Module:
    """The MMDiT class ComfyUI's SD3 model uses, with DiT-style initialisation: Xavier linear
    layers, zero biases, adaLN-Zero modulation and output layer, and a fixed 2-D sin-cos position
    table (ComfyUI keeps ``pos_embed`` as a buffer)."""
    import comfy.ops
    from comfy.ldm.modules.diffusionmodules.mmdit import OpenAISignatureMMDITWrapper, get_2d_sincos_pos_embed_torch
    model = OpenAISignatureMMDITWrapper(
        input_size=None, patch_size=2, in_channels=photo_codec.LATENT_CHANNELS,
        out_channels=photo_codec.LATENT_CHANNELS,
        depth=depth, num_blocks=blocks, adm_in_channels=POOLED_DIM, pos_embed_max_size=POS_EMBED_MAX,
        num_patches=POS_EMBED_MAX * POS_EMBED_MAX,
        context_embedder_config={"target": "torch.nn.Linear",
                                 "params": {"in_features": CONTEXT_DIM, "out_features": 64 * depth}},
        operations=comfy.ops.disable_weight_init)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 1:
                p.zero_()
            elif name.startswith(("t_embedder", "y_embedder")):
                p.copy_(0.02 * torch.randn(p.shape, generator=generator))
            else:
                fan_out, fan_in = p.shape[0], p[0].numel()
                bound = math.sqrt(6.0 / (fan_in + fan_out))
                p.copy_((torch.rand(p.shape, generator=generator) * 2.0 - 1.0) * bound)
        for name, module in model.named_modules():
            if name.endswith("adaLN_modulation") or name.startswith("final_layer"):
                for p in module.parameters():
                    p.zero_()
        table = get_2d_sincos_pos_embed_torch(model.hidden_size, POS_EMBED_MAX, POS_EMBED_MAX)
        model.pos_embed.copy_(table.reshape(model.pos_embed.shape))
    return model


def fixture_state_dict(model: torch.nn.Module) -> dict:
    """float16 weights with SD3's key names (the ones UNETLoader detects)."""
    return {k: v.detach().to(torch.float16).contiguous() for k, v in model.state_dict().items()}


# ------------------------------------------------------------------------------------------------
# Conditioning and data
# ------------------------------------------------------------------------------------------------
def text_conditioning(texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """context [len, 77, 4096] and pooled [len, 2048] of each text, through ComfyUI's CLIPLoader
    (type "sd3") and CLIPTextEncode with the fixture's text encoder."""
    clip = photo_codec.load_fixture_clip()
    contexts, pooled = [], []
    for text in texts:
        conditioning = photo_codec.prompt_conditioning(clip, text)
        contexts.append(conditioning[0][0][0].float())
        pooled.append(conditioning[0][1]["pooled_output"][0].float())
    return torch.stack(contexts), torch.stack(pooled)


def model_latents(pixels: torch.Tensor) -> torch.Tensor:
    """Pixels -> what the MMDiT sees for a clean image: SD3's process_in of the codec's latent."""
    import comfy.latent_formats
    return comfy.latent_formats.SD3().process_in(photo_codec.encode(pixels))


def crop_batch(photos: list[torch.Tensor], size: int, batch: int,
               generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """``batch`` random crops of random photos: pixels [batch, 3, size, size] and photo indices."""
    which = torch.randint(0, len(photos), (batch,), generator=generator)
    return torch.stack([photo_codec.random_crop(photos[int(i)], size, generator) for i in which]), which


def training_sigmas(count: int, config: TrainConfig, generator: torch.Generator) -> torch.Tensor:
    """Logit-normal progress through the sampler's shift: the noise levels KSampler visits."""
    from comfy.model_sampling import time_snr_shift
    u = torch.sigmoid(config.logit_normal_std * torch.randn(count, generator=generator))
    return time_snr_shift(config.shift, u)


def flow_loss(model: torch.nn.Module, x0: torch.Tensor, noise: torch.Tensor, sigma: torch.Tensor,
              context: torch.Tensor, pooled: torch.Tensor, bf16: bool) -> torch.Tensor:
    """Rectified-flow loss in ComfyUI's convention (CONST): predict noise - x0 from x_t."""
    s = sigma.view(-1, 1, 1, 1)
    noisy = (1.0 - s) * x0 + s * noise
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        prediction = model(noisy, sigma * 1000.0, context=context, y=pooled)
    return torch.nn.functional.mse_loss(prediction.float(), noise - x0)


# ------------------------------------------------------------------------------------------------
# Training
# ------------------------------------------------------------------------------------------------
def learning_rate(step: int, config: TrainConfig) -> float:
    if step < config.warmup:
        return config.lr * (step + 1) / config.warmup
    progress = (step - config.warmup) / max(1, config.steps - config.warmup)
    low = config.final_lr_fraction
    return config.lr * (low + (1.0 - low) * 0.5 * (1.0 + math.cos(math.pi * progress)))


def validation_set(photos: list[torch.Tensor], config: TrainConfig, context: torch.Tensor,
                   pooled: torch.Tensor) -> list[tuple]:
    """Fixed crops, noise and noise levels (one batch per crop size): the same every evaluation."""
    generator = torch.Generator().manual_seed(config.seed + 1_000_003)
    batches = []
    for size, _ in config.crops:
        pixels, which = crop_batch(photos, size, 2 * len(photos), generator)
        x0 = model_latents(pixels)
        sigma = torch.linspace(0.05, 0.95, len(which))
        batches.append((x0, torch.randn(x0.shape, generator=generator), sigma, context[which], pooled[which]))
    return batches


@torch.no_grad()
def validation_loss(model: torch.nn.Module, batches: list[tuple], bf16: bool) -> float:
    return sum(float(flow_loss(model, *b, bf16=bf16)) for b in batches) / len(batches)


def _checkpoint_state(step: int, model, ema, optimizer, generator: torch.Generator, config: TrainConfig,
                      seconds: float) -> dict:
    return {"next_step": step, "config": asdict(config), "model": model.state_dict(), "ema": ema.state_dict(),
            "optimizer": optimizer.state_dict(), "generator": generator.get_state(),
            "torch_rng": torch.get_rng_state(), "seconds": seconds}


def save_checkpoint(path: Path, state: dict) -> None:
    """Write atomically, so a run killed while writing leaves the previous checkpoint intact."""
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def train(config: TrainConfig, log_path: Path, checkpoint_every: int = 0, resume: bool = False,
          stop_after: int | None = None) -> tuple[dict | None, list[dict]]:
    """Train; return the EMA weights as the fixture state dict and the log rows (also written to
    ``log_path`` as CSV while training). With ``checkpoint_every`` > 0 the whole training state
    (weights, EMA, optimizer, RNG states) is saved beside the log every that many steps; with
    ``resume`` a run continues from that checkpoint, and the result is the same as an
    uninterrupted run's. ``stop_after`` ends the run after that many steps, as an interruption
    would (returning no weights), so that resuming can be tested."""
    import comfy.supported_models
    comfy_shift = comfy.supported_models.SD3.sampling_settings["shift"]
    if comfy_shift != config.shift:
        raise RuntimeError(f"ComfyUI samples SD3 with shift {comfy_shift}, the training config says {config.shift}")
    torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    photos = photo_codec.load_photos()
    if len(config.captions) != len(photos):
        raise ValueError(f"captions must name each of the {len(photos)} photos, got {len(config.captions)}")
    context, pooled = text_conditioning(list(config.captions) + [photo_codec.UNCONDITIONAL_PROMPT])
    cond_context, cond_pooled = context[:-1], pooled[:-1]
    model = build_model(generator, config.depth, config.blocks)
    ema = build_model(torch.Generator().manual_seed(config.seed), config.depth, config.blocks)
    ema.load_state_dict(model.state_dict())
    ema.requires_grad_(False)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, betas=(0.9, 0.99), weight_decay=0.0)
    val_batches = validation_set(photos, config, cond_context, cond_pooled)
    rows: list[dict] = []
    first_step, seconds_before = 0, 0.0
    checkpoint = checkpoint_path(log_path)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    if resume:
        if not checkpoint.is_file():
            raise FileNotFoundError(f"--resume: no checkpoint {checkpoint} to resume from")
        state = torch.load(checkpoint, weights_only=False)
        if state["config"] != asdict(config):
            raise ValueError(f"--resume: {checkpoint} was written with another training config: {state['config']}")
        model.load_state_dict(state["model"])
        ema.load_state_dict(state["ema"])
        optimizer.load_state_dict(state["optimizer"])
        generator.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])
        first_step, seconds_before = state["next_step"], state["seconds"]
        with open(log_path, newline="") as f:
            rows = [r for r in csv.DictReader(f) if int(r["step"]) < first_step]
        print(f"resuming at step {first_step} of {config.steps} from {checkpoint}", flush=True)
    started = time.perf_counter() - seconds_before
    fieldnames = ["step", "crop_px", "loss", "val_loss_ema", "lr", "seconds"]
    with open(log_path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fieldnames)
        writer.writeheader()
        writer.writerows(rows)
        for step in range(first_step, config.steps):
            size, batch = config.crops[step % len(config.crops)]
            pixels, which = crop_batch(photos, size, batch, generator)
            x0 = model_latents(pixels)
            drop = torch.rand(batch, generator=generator) < config.cond_dropout
            ctx = torch.where(drop.view(-1, 1, 1), context[-1:], cond_context[which])
            pool = torch.where(drop.view(-1, 1), pooled[-1:], cond_pooled[which])
            sigma = training_sigmas(batch, config, generator)
            noise = torch.randn(x0.shape, generator=generator)
            lr = learning_rate(step, config)
            for group in optimizer.param_groups:
                group["lr"] = lr
            loss = flow_loss(model, x0, noise, sigma, ctx, pool, config.bf16)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
            optimizer.step()
            with torch.no_grad():
                d = min(config.ema_decay, (1.0 + step) / (10.0 + step))
                for e, p in zip(ema.parameters(), model.parameters()):
                    e.lerp_(p, 1.0 - d)
            last = step == config.steps - 1
            val = validation_loss(ema, val_batches, config.bf16) if (step % config.val_every == 0 or last) else None
            row = {"step": step, "crop_px": size, "loss": round(loss.item(), 6),
                   "val_loss_ema": "" if val is None else round(val, 6), "lr": f"{lr:.3g}",
                   "seconds": round(time.perf_counter() - started, 2)}
            writer.writerow(row)
            rows.append(row)
            if val is not None:
                f.flush()
                print(f"step {step:5d}  loss {loss.item():.4f}  val(EMA) {val:.4f}  lr {lr:.2e}  "
                      f"{row['seconds']:.0f} s", flush=True)
            if checkpoint_every > 0 and ((step + 1) % checkpoint_every == 0) and not last:
                f.flush()
                save_checkpoint(checkpoint, _checkpoint_state(step + 1, model, ema, optimizer, generator, config,
                                                              time.perf_counter() - started))
            if stop_after is not None and step + 1 >= stop_after:
                return None, rows
    checkpoint.unlink(missing_ok=True)
    return fixture_state_dict(ema), rows


def save_fixture(state_dict: dict, path: Path, config: TrainConfig, seconds: float, final_val: float) -> None:
    from safetensors.torch import save_file
    metadata = {
        "sdtm_fixture": json.dumps({
            "what": "SD3-architecture MMDiT trained on photographs by photo_fixture/train_fixture.py (docs/FIXTURE.md)",
            "config": asdict(config), "train_seconds": round(seconds, 1), "final_val_loss_ema": round(final_val, 6),
            "torch": torch.__version__, "machine": platform.machine(),
            "photos": [{**asdict(p), "sha256": photo_codec.file_digest(photo_codec.photo_path(p))}
                       for p in photo_codec.PHOTOS],
            "clip_l_sha256": photo_codec.fixture_clip_digest(),
        }),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(state_dict, str(path), metadata=metadata)


# ------------------------------------------------------------------------------------------------
# Pictures
# ------------------------------------------------------------------------------------------------
def plot_loss(log_path: Path, png: Path) -> None:
    """Training loss (mean over 100 steps) and the EMA model's validation loss."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    with open(log_path) as f:
        rows = list(csv.DictReader(f))
    steps = [int(r["step"]) for r in rows]
    loss = [float(r["loss"]) for r in rows]
    window = 100
    smooth_x = [steps[i + window - 1] for i in range(0, len(loss) - window + 1, window // 4)]
    smooth_y = [sum(loss[i:i + window]) / window for i in range(0, len(loss) - window + 1, window // 4)]
    val = [(int(r["step"]), float(r["val_loss_ema"])) for r in rows if r["val_loss_ema"]]
    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    ax.plot(steps, loss, color="#bbbbbb", linewidth=0.5, label="training loss (per step)")
    if smooth_y:
        ax.plot(smooth_x, smooth_y, color="#1f77b4", label=f"training loss (mean of {window} steps)")
    ax.plot([v[0] for v in val], [v[1] for v in val], "o-", color="#d62728", markersize=3,
            label="validation loss, EMA weights (fixed crops, noise, sigmas)")
    ax.set_xlabel("step")
    ax.set_ylabel("rectified-flow MSE")
    ax.set_ylim(0, max(smooth_y[:1] + [v[1] for v in val[:2]] + [1.0]) * 1.1)
    ax.set_title("Photo fixture training (photo_fixture/train_fixture.py)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png)
    plt.close(fig)


def sample_grid(fixture: Path, png: Path, seeds: int = 4, size_px: int = 128, steps: int = 30,
                cfg: float = CFG) -> None:
    """Sample every caption through ComfyUI (UNETLoader, CLIPLoader, CLIPTextEncode, KSampler
    euler / sgm_uniform), decode with photo_codec.decode, and draw one row per caption: a real
    crop of the photo (the whole photo scaled down) first, then the samples."""
    from PIL import Image, ImageDraw
    import_comfy()
    import comfy.utils
    comfy.utils.PROGRESS_BAR_ENABLED = False
    model, clip = photo_codec.load_fixture(fixture)
    negative = photo_codec.prompt_conditioning(clip, photo_codec.UNCONDITIONAL_PROMPT)
    photos = photo_codec.load_photos()
    pad, label_h = 4, 14
    cols = seeds + 1
    grid = Image.new("RGB", (cols * (size_px + pad) + pad, len(photos) * (size_px + pad + label_h) + pad), "white")
    draw = ImageDraw.Draw(grid)
    latent_w, latent_h = photo_codec.empty_latent_size(size_px, size_px)
    for row, (photo, pixels) in enumerate(zip(photo_codec.PHOTOS, photos)):
        positive = photo_codec.prompt_conditioning(clip, photo.caption)
        y = pad + row * (size_px + pad + label_h)
        draw.text((pad, y), f"{photo.caption!r} (left: the real photo)", fill="black")
        short = min(pixels.shape[-2:])
        top, left = (pixels.shape[-2] - short) // 2, (pixels.shape[-1] - short) // 2
        real = torch.nn.functional.interpolate(pixels[None, :, top:top + short, left:left + short],
                                               size=(size_px, size_px), mode="bilinear", antialias=True)
        tiles = [photo_codec.decode_to_pil(photo_codec.encode(real))[0]]
        for seed in range(seeds):
            latent = sample_fixture(model, seed, positive, negative, steps, (latent_h // 8, latent_w // 8), cfg)
            tiles.append(photo_codec.decode_to_pil(latent)[0])
        for col, tile in enumerate(tiles):
            grid.paste(tile, (pad + col * (size_px + pad), y + label_h))
    png.parent.mkdir(parents=True, exist_ok=True)
    grid.save(png)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=None,
                        help=f"optimizer steps (default {TrainConfig.steps}; {DEEP_STEPS} with --deep)")
    parser.add_argument("--seed", type=int, default=TrainConfig.seed)
    parser.add_argument("--threads", type=int, default=TrainConfig.threads, help="torch CPU threads")
    parser.add_argument("--lr", type=float, default=TrainConfig.lr, help="peak learning rate")
    parser.add_argument("--out", type=Path, default=None,
                        help="folder for the fixture, the log and the pictures "
                             "(default: tests/fixtures and docs/images)")
    parser.add_argument("--deep", action="store_true",
                        help=f"the deep fixture: {DEEP_BLOCKS} joint blocks of width {64 * DEEP_DEPTH} "
                             "(docs/FIXTURE.md)")
    parser.add_argument("--checkpoint-every", type=int, default=250,
                        help="save the whole training state every N steps (0 = never)")
    parser.add_argument("--resume", action="store_true", help="continue from the checkpoint beside the loss log")
    parser.add_argument("--grid-only", action="store_true", help="only redraw the sample grid from the saved fixture")
    parser.add_argument("--no-grid", action="store_true", help="skip the sample grid")
    args = parser.parse_args(argv)
    if args.steps is None:
        args.steps = DEEP_STEPS if args.deep else TrainConfig.steps
    if args.steps < 1:
        parser.error(f"--steps must be at least 1, got {args.steps}")
    if args.lr <= 0:
        parser.error(f"--lr must be positive, got {args.lr}")
    if args.threads < 1:
        parser.error(f"--threads must be at least 1, got {args.threads}")
    if args.checkpoint_every < 0:
        parser.error(f"--checkpoint-every must be 0 or more, got {args.checkpoint_every}")
    fixture_name = (DEEP_FIXTURE if args.deep else FIXTURE).name
    log_name = (DEEP_LOSS_CSV if args.deep else LOSS_CSV).name
    fixture = (FIXTURE.parent if args.out is None else args.out) / fixture_name
    log_path = (LOSS_CSV.parent if args.out is None else args.out) / log_name
    images = IMAGES if args.out is None else args.out
    prefix = "fixture_deep" if args.deep else "fixture"
    import_comfy()
    torch.set_num_threads(args.threads)
    if not args.grid_only:
        depth, blocks = (DEEP_DEPTH, DEEP_BLOCKS) if args.deep else (DEPTH, DEPTH)
        config = TrainConfig(steps=args.steps, seed=args.seed, threads=args.threads, lr=args.lr,
                             depth=depth, blocks=blocks)
        state_dict, rows = train(config, log_path, args.checkpoint_every, args.resume)
        seconds = float(rows[-1]["seconds"])
        final_val = float(rows[-1]["val_loss_ema"])
        save_fixture(state_dict, fixture, config, seconds, final_val)
        print(f"trained {config.steps} steps in {seconds / 60:.1f} min; EMA validation loss {final_val:.4f}; "
              f"wrote {fixture} ({os.path.getsize(fixture) / 1e6:.1f} MB) and {log_path}")
        plot_loss(log_path, images / f"{prefix}_loss.png")
    if args.no_grid:
        return
    started = time.perf_counter()
    sample_grid(fixture, images / f"{prefix}_samples.png")
    print(f"sample grid {images / f'{prefix}_samples.png'} in {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
