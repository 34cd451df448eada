"""Sampling the photo fixture through ComfyUI's KSampler path: the one call the trainer's sample grid,
the benchmarks, the tests and the pictures share."""
from __future__ import annotations

import torch

from harness.comfy_env import import_comfy

from .photo_codec import LATENT_CHANNELS

CFG = 4.5  # the fixture's guidance scale (classifier-free guidance, empty negative prompt)
SAMPLER, SCHEDULER = "euler", "sgm_uniform"  # ComfyUI's SD3 example settings


def sample_fixture(model, seed: int, positive, negative, steps: int, latent_hw: tuple[int, int],
                   cfg: float = CFG, sampler: str = SAMPLER, scheduler: str = SCHEDULER) -> torch.Tensor:
    """Latent samples [1, 16, h, w] from an empty latent of ``latent_hw`` = (h, w) through
    ``nodes.common_ksampler`` (what KSampler runs); decode them with ``photo_codec.decode``."""
    nodes = import_comfy()
    latent = torch.zeros(1, LATENT_CHANNELS, *latent_hw)
    (out,) = nodes.common_ksampler(model, seed, steps, cfg, sampler, scheduler, positive, negative,
                                   {"samples": latent})
    return out["samples"]
