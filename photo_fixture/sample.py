"""Sampling the photo fixture through ComfyUI's KSampler path: the one call the trainer's sample grid,
the benchmarks, the tests and the pictures share."""
from __future__ import annotations

import torch

from harness.comfy_env import import_comfy

from .photo_codec import LATENT_CHANNELS

CFG = 4.5  # the fixture's guidance scale (classifier-free guidance, empty negative prompt)
SAMPLER, SCHEDULER = "euler", "sgm_uniform"  # ComfyUI's SD3 example settings


def sample_fixture(model, seed: int, positive, negative, steps: int, latent_hw: tuple[int, int] | None = None,
                   cfg: float = CFG, sampler: str = SAMPLER, scheduler: str = SCHEDULER,
                   latent: torch.Tensor | None = None, start: int | None = None, last: int | None = None,
                   add_noise: bool = True, full_denoise: bool = False, denoise: float = 1.0) -> torch.Tensor:
    """Latent samples [1, 16, h, w] through ``nodes.common_ksampler`` (what KSampler runs; with ``start`` /
    ``last`` / ``add_noise`` / ``full_denoise``, what KSamplerAdvanced runs), from an empty latent of
    ``latent_hw`` = (h, w) or from ``latent`` (with ``denoise`` < 1: KSampler's img2img / hires pass over the
    last steps of a longer schedule); decode them with ``photo_codec.decode``."""
    nodes = import_comfy()
    if latent is None:
        latent = torch.zeros(1, LATENT_CHANNELS, *latent_hw)
    (out,) = nodes.common_ksampler(model, seed, steps, cfg, sampler, scheduler, positive, negative,
                                   {"samples": latent}, denoise=denoise, disable_noise=not add_noise, start_step=start,
                                   last_step=last, force_full_denoise=full_denoise)
    return out["samples"]
