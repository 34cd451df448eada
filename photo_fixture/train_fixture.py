"""Train the photo fixture: a small SD3-architecture MMDiT, learned on real photographs, that
ComfyUI loads with UNETLoader and samples with KSampler like any SD3 model.

    nice -n 5 .venv/bin/python -m photo_fixture.train_fixture            # the committed fixture (about 40 min)
    .venv/bin/python -m photo_fixture.train_fixture --steps 200 --out /tmp/pilot   # a quick try
    .venv/bin/python -m photo_fixture.train_fixture --grid-only          # redraw the sample grid from the fixture
    .venv/bin/python -m photo_fixture.train_fixture --dense --grid-only --grid-size 256 --grid-seeds 2

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
# The dense fixture: the deep fixture fine-tuned at SD3's 1024x1024 token density (64 x 64 image tokens,
# 256 x 256 pixels) mixed with 128-pixel crops so that it keeps the 32 x 32 size (docs/FIXTURE.md).
DENSE_POS_EMBED_MAX = 64
DENSE_CROPS = ((256, 2), (128, 4))
DENSE_STEPS, DENSE_LR, DENSE_WARMUP = 2400, 3e-4, 100
CONTEXT_DIM = 4096  # SD3's context width (CLIP-L's 768 padded, as CLIPLoader type "sd3" does)
POOLED_DIM = 2048  # SD3's pooled width (CLIP-L 768 + CLIP-G 1280, zeros without CLIP-G)
FIXTURE = photo_codec.FIXTURE
DEEP_FIXTURE = photo_codec.DEEP_FIXTURE
DENSE_FIXTURE = photo_codec.DENSE_FIXTURE
LOSS_CSV = REPO / "tests" / "fixtures" / "sdtm_photo_mmdit_loss.csv"
DEEP_LOSS_CSV = REPO / "tests" / "fixtures" / "sdtm_photo_mmdit_deep_loss.csv"
DENSE_LOSS_CSV = REPO / "tests" / "fixtures" / "sdtm_photo_mmdit_dense_loss.csv"


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
    pos_embed_max: int = POS_EMBED_MAX  # side of the position table (token grids up to that square)
    init_from: str = ""  # sha256 of the fixture file the weights start from ("" = DiT initialisation)
    clip_seed: int = photo_codec.CLIP_SEED  # the random CLIP-L the captions are encoded with (recorded only)
    captions: tuple[str, ...] = field(default_factory=lambda: tuple(p.caption for p in photo_codec.PHOTOS))


# ------------------------------------------------------------------------------------------------
# Model
# ------------------------------------------------------------------------------------------------
def position_table(hidden: int, size: int) -> torch.Tensor:
    """The fixtures' fixed 2-D sin-cos position table [size * size, hidden] (ComfyUI's
    ``get_2d_sincos_pos_embed_torch``). Every size keeps the spacing of the 32 x 32 table (positions
    0 to 15 over 32 tokens) and widens the range around the same centre, as SD3's own table is used:
    ComfyUI crops the centre of the table for smaller images, so the centre 32 x 32 of a 64 x 64 table
    is the 32 x 32 table (up to float rounding; :func:`initial_weights` copies it in exactly)."""
    from comfy.ldm.modules.diffusionmodules.mmdit import get_2d_sincos_pos_embed_torch
    magnitude = 7.5 * (size - 1) / (POS_EMBED_MAX - 1)
    return get_2d_sincos_pos_embed_torch(hidden, size, size, val_center=7.5, val_magnitude=magnitude)


def build_model(generator: torch.Generator, depth: int = DEPTH, blocks: int = DEPTH,
                pos_embed_max: int = POS_EMBED_MAX) -> torch.nn.Module:
    """The MMDiT class ComfyUI's SD3 model uses, with DiT-style initialisation: Xavier linear
    layers, zero biases, adaLN-Zero modulation and output layer, and a fixed 2-D sin-cos position
    table of ``pos_embed_max`` x ``pos_embed_max`` tokens (ComfyUI keeps ``pos_embed`` as a buffer)."""
    import comfy.ops
    from comfy.ldm.modules.diffusionmodules.mmdit import OpenAISignatureMMDITWrapper
    model = OpenAISignatureMMDITWrapper(
        input_size=None, patch_size=2, in_channels=photo_codec.LATENT_CHANNELS,
        out_channels=photo_codec.LATENT_CHANNELS,
        depth=depth, num_blocks=blocks, adm_in_channels=POOLED_DIM, pos_embed_max_size=pos_embed_max,
        num_patches=pos_embed_max * pos_embed_max,
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
        model.pos_embed.copy_(position_table(model.hidden_size, pos_embed_max).reshape(model.pos_embed.shape))
    return model


def initial_weights(fixture: Path, model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A trained fixture's weights as a state dict for ``model`` (float32): the same architecture,
    with a position table as wide as the fixture's or wider. A wider table is the model's own
    :func:`position_table` with the fixture's table copied exactly into its centre, so that at the
    fixture's sizes the model starts as the fixture is."""
    from safetensors.torch import load_file
    stored = {k: v.float() for k, v in load_file(str(fixture)).items()}
    own = model.state_dict()
    if sorted(stored) != sorted(own):
        raise ValueError(f"--init-from {fixture}: its weights do not match the model "
                         f"(missing {sorted(set(own) - set(stored))[:3]}, extra {sorted(set(stored) - set(own))[:3]})")
    wrong = [k for k in own if k != "pos_embed" and stored[k].shape != own[k].shape]
    if wrong:
        raise ValueError(f"--init-from {fixture}: another depth or block count ({wrong[0]}: "
                         f"{tuple(stored[wrong[0]].shape)}, the model has {tuple(own[wrong[0]].shape)})")
    old_side = round(stored["pos_embed"].shape[1] ** 0.5)
    new_side = round(own["pos_embed"].shape[1] ** 0.5)
    if new_side < old_side or (new_side - old_side) % 2:
        raise ValueError(f"--init-from {fixture}: its position table is {old_side} x {old_side}; the model's "
                         f"({new_side} x {new_side}) must be as wide or wider by an even number of tokens")
    table = own["pos_embed"].clone().view(new_side, new_side, -1)
    lo = (new_side - old_side) // 2
    old_table = stored["pos_embed"].view(old_side, old_side, -1)
    if not torch.allclose(table[lo:lo + old_side, lo:lo + old_side], old_table, atol=2e-3):
        raise ValueError(f"--init-from {fixture}: its position table is not the centre of the model's "
                         "(another table function)")
    table[lo:lo + old_side, lo:lo + old_side] = old_table
    stored["pos_embed"] = table.reshape(own["pos_embed"].shape)
    return stored


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
          stop_after: int | None = None, init_from: Path | None = None) -> tuple[dict | None, list[dict]]:
    """Train; return the EMA weights as the fixture state dict and the log rows (also written to
    ``log_path`` as CSV while training). With ``checkpoint_every`` > 0 the whole training state
    (weights, EMA, optimizer, RNG states) is saved beside the log every that many steps; with
    ``resume`` a run continues from that checkpoint, and the result is the same as an
    uninterrupted run's. ``stop_after`` ends the run after that many steps, as an interruption
    would (returning no weights), so that resuming can be tested. ``init_from`` starts from a trained
    fixture's weights (:func:`initial_weights`; ``config.init_from`` must be its sha256)."""
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
    model = build_model(generator, config.depth, config.blocks, config.pos_embed_max)
    ema = build_model(torch.Generator().manual_seed(config.seed), config.depth, config.blocks, config.pos_embed_max)
    if (init_from is None) != (not config.init_from):
        raise ValueError("init_from and config.init_from go together (the fixture file and its sha256)")
    if init_from is not None:
        if photo_codec.file_digest(init_from) != config.init_from:
            raise ValueError(f"--init-from {init_from}: its sha256 is not the one in the training config")
        model.load_state_dict(initial_weights(init_from, model))
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
        tiles = [photo_codec.decode_to_pil(photo_codec.encode(photo_codec.whole_photo(pixels, size_px)))[0]]
        for seed in range(seeds):
            latent = sample_fixture(model, seed, positive, negative, steps, (latent_h // 8, latent_w // 8), cfg)
            tiles.append(photo_codec.decode_to_pil(latent)[0])
        for col, tile in enumerate(tiles):
            grid.paste(tile, (pad + col * (size_px + pad), y + label_h))
    png.parent.mkdir(parents=True, exist_ok=True)
    grid.save(png)


def parse_crops(text: str) -> tuple[tuple[int, int], ...]:
    """``"256x2,128x4"`` -> ((256, 2), (128, 4)): crop pixels and batch, used on alternating steps."""
    crops = []
    for part in text.split(","):
        size, _, batch = part.strip().partition("x")
        if not (size.isdigit() and batch.isdigit()) or int(size) < 16 or int(size) % 16 or int(batch) < 1:
            raise ValueError(f"--crops: {part!r} is not PIXELSxBATCH with pixels a multiple of 16 (at least 16) "
                             "and batch at least 1, e.g. 256x2,128x4")
        crops.append((int(size), int(batch)))
    return tuple(crops)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    kind = parser.add_mutually_exclusive_group()
    kind.add_argument("--deep", action="store_true",
                      help=f"the deep fixture: {DEEP_BLOCKS} joint blocks of width {64 * DEEP_DEPTH} (docs/FIXTURE.md)")
    kind.add_argument("--dense", action="store_true",
                      help=f"the dense fixture: the deep fixture with a {DENSE_POS_EMBED_MAX} x {DENSE_POS_EMBED_MAX} "
                           f"position table, fine-tuned on {DENSE_CROPS} crops (docs/FIXTURE.md)")
    parser.add_argument("--steps", type=int, default=None,
                        help=f"optimizer steps (default {TrainConfig.steps}; {DEEP_STEPS} with --deep, "
                             f"{DENSE_STEPS} with --dense)")
    parser.add_argument("--seed", type=int, default=TrainConfig.seed)
    parser.add_argument("--threads", type=int, default=TrainConfig.threads, help="torch CPU threads")
    parser.add_argument("--lr", type=float, default=None,
                        help=f"peak learning rate (default {TrainConfig.lr}; {DENSE_LR} with --dense)")
    parser.add_argument("--warmup", type=int, default=None,
                        help=f"learning-rate warm-up steps (default {TrainConfig.warmup}; {DENSE_WARMUP} with --dense)")
    parser.add_argument("--crops", type=str, default=None,
                        help="crop pixels and batch per step, alternating, as PIXELSxBATCH,... "
                             f"(default {TrainConfig.crops}; {DENSE_CROPS} with --dense)")
    parser.add_argument("--pos-embed-max", type=int, default=None,
                        help=f"side of the position table in tokens (default {POS_EMBED_MAX}; "
                             f"{DENSE_POS_EMBED_MAX} with --dense); crops may be up to 8 x that many pixels")
    parser.add_argument("--init-from", type=Path, default=None,
                        help="start from this fixture's weights (same depth and blocks; its position table "
                             "becomes the centre of a wider one); --dense starts from the deep fixture")
    parser.add_argument("--val-every", type=int, default=TrainConfig.val_every, help="validation every N steps")
    parser.add_argument("--out", type=Path, default=None,
                        help="folder for the fixture, the log and the pictures "
                             "(default: tests/fixtures and docs/images)")
    parser.add_argument("--checkpoint-every", type=int, default=250,
                        help="save the whole training state every N steps (0 = never)")
    parser.add_argument("--resume", action="store_true", help="continue from the checkpoint beside the loss log")
    parser.add_argument("--grid-only", action="store_true", help="only redraw the sample grid from the saved fixture")
    parser.add_argument("--no-grid", action="store_true", help="skip the sample grid")
    parser.add_argument("--grid-size", type=int, default=128,
                        help="the sample grid's image side in pixels (128: <prefix>_samples.png; other sizes: "
                             "<prefix>_samples_<size>.jpg)")
    parser.add_argument("--grid-seeds", type=int, default=4, help="samples per caption in the grid")
    args = parser.parse_args(argv)
    defaults = {"steps": (TrainConfig.steps, DEEP_STEPS, DENSE_STEPS), "lr": (TrainConfig.lr,) * 2 + (DENSE_LR,),
                "warmup": (TrainConfig.warmup,) * 2 + (DENSE_WARMUP,),
                "crops": (TrainConfig.crops,) * 2 + (DENSE_CROPS,),
                "pos_embed_max": (POS_EMBED_MAX,) * 2 + (DENSE_POS_EMBED_MAX,)}
    which = 2 if args.dense else 1 if args.deep else 0
    for name, values in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, values[which])
    if args.dense and args.init_from is None:
        args.init_from = DEEP_FIXTURE
    try:
        crops = parse_crops(args.crops) if isinstance(args.crops, str) else args.crops
    except ValueError as error:
        parser.error(str(error))
    for name, value, low in (("--steps", args.steps, 1), ("--threads", args.threads, 1), ("--warmup", args.warmup, 0),
                             ("--val-every", args.val_every, 1), ("--checkpoint-every", args.checkpoint_every, 0),
                             ("--pos-embed-max", args.pos_embed_max, 2)):
        if value < low:
            parser.error(f"{name} must be at least {low}, got {value}")
    if args.lr <= 0:
        parser.error(f"--lr must be positive, got {args.lr}")
    too_big = [size for size, _ in crops if size > 8 * args.pos_embed_max]
    if too_big:
        parser.error(f"--crops: {too_big[0]} pixels is {too_big[0] // 8} tokens a side, more than the "
                     f"{args.pos_embed_max} x {args.pos_embed_max} position table (--pos-embed-max)")
    if args.init_from is not None and not args.init_from.is_file():
        parser.error(f"--init-from: no such fixture file {args.init_from}")
    fixture, log_path = ((DENSE_FIXTURE, DENSE_LOSS_CSV) if args.dense else (DEEP_FIXTURE, DEEP_LOSS_CSV) if args.deep
                         else (FIXTURE, LOSS_CSV))
    if args.out is not None:
        fixture, log_path = args.out / fixture.name, args.out / log_path.name
    images = IMAGES if args.out is None else args.out
    prefix = "fixture_dense" if args.dense else "fixture_deep" if args.deep else "fixture"
    import_comfy()
    torch.set_num_threads(args.threads)
    if not args.grid_only:
        depth, blocks = (DEEP_DEPTH, DEEP_BLOCKS) if (args.deep or args.dense) else (DEPTH, DEPTH)
        config = TrainConfig(steps=args.steps, seed=args.seed, threads=args.threads, lr=args.lr, warmup=args.warmup,
                             depth=depth, blocks=blocks, crops=crops, val_every=args.val_every,
                             pos_embed_max=args.pos_embed_max,
                             init_from="" if args.init_from is None else photo_codec.file_digest(args.init_from))
        state_dict, rows = train(config, log_path, args.checkpoint_every, args.resume, init_from=args.init_from)
        seconds = float(rows[-1]["seconds"])
        final_val = float(rows[-1]["val_loss_ema"])
        save_fixture(state_dict, fixture, config, seconds, final_val)
        print(f"trained {config.steps} steps in {seconds / 60:.1f} min; EMA validation loss {final_val:.4f}; "
              f"wrote {fixture} ({os.path.getsize(fixture) / 1e6:.1f} MB) and {log_path}")
        plot_loss(log_path, images / f"{prefix}_loss.png")
    if args.no_grid:
        return
    started = time.perf_counter()
    grid = images / (f"{prefix}_samples.png" if args.grid_size == 128 else f"{prefix}_samples_{args.grid_size}.jpg")
    sample_grid(fixture, grid, seeds=args.grid_seeds, size_px=args.grid_size)
    print(f"sample grid {grid} in {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
