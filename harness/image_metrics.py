"""Image fidelity metrics: PSNR and SSIM between two images of the same scene, e.g. an SDTM image and
the unmerged image at the same seed.

The maths is torchmetrics' (a maintained implementation, a dev dependency); this module fixes the
conventions and checks the inputs:

* images are float tensors ``[B, C, H, W]`` (C = 3, or 1 for grey) with values in [0, 1];
* both functions return one value per image, a float64 tensor ``[B]``;
* PSNR is ``10 * log10(1 / MSE)`` over all pixels and channels of an image, ``inf`` when the images
  are identical;
* SSIM is Wang et al. (2004): an 11x11 Gaussian window with sigma 1.5, K1 = 0.01, K2 = 0.03, per
  channel, averaged over the image (torchmetrics pads the borders by reflection, so the border pixels
  count too), 1.0 when the images are identical. Images must be at least 11 pixels on each side.

Example::

    from harness.image_metrics import load_images, psnr, ssim
    a = load_images(["sdtm/000000000139.jpg"])
    b = load_images(["none/000000000139.jpg"])
    print(psnr(a, b).item(), ssim(a, b).item())
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

SSIM_WINDOW = 11  # side of the Gaussian window: int(3.5 * sigma + 0.5) * 2 + 1 with sigma 1.5
SSIM_SIGMA = 1.5


def _torchmetrics_image():
    try:
        from torchmetrics.functional import image
    except ImportError as error:
        raise ImportError("PSNR and SSIM need torchmetrics: pip install torchmetrics") from error
    return image


def _check_pair(a: torch.Tensor, b: torch.Tensor) -> None:
    for name, image in (("a", a), ("b", b)):
        if not isinstance(image, torch.Tensor) or image.dim() != 4 or not image.is_floating_point():
            kind = (f"{image.dtype} tensor of shape {tuple(image.shape)}" if isinstance(image, torch.Tensor)
                    else type(image).__name__)
            raise ValueError(f"image {name} must be a float tensor [B, C, H, W] with values in [0, 1], got a {kind}")
        if image.shape[1] not in (1, 3):
            raise ValueError(f"image {name} must be channels-first [B, C, H, W] with C 1 or 3, got shape "
                             f"{tuple(image.shape)} (ComfyUI's IMAGE is [B, H, W, C]: use image.permute(0, 3, 1, 2))")
        low, high = image.aminmax()
        if low < 0 or high > 1:
            raise ValueError(f"image {name} must have values in [0, 1], "
                             f"got values in [{low.item():.4g}, {high.item():.4g}]")
    if a.shape != b.shape:
        raise ValueError(f"images a and b must have the same shape, got {tuple(a.shape)} and {tuple(b.shape)}")


def psnr(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Peak signal-to-noise ratio in dB of each image pair, float64 ``[B]`` (``inf`` where identical)."""
    _check_pair(a, b)
    a, b = a.double(), b.double()
    return _torchmetrics_image().peak_signal_noise_ratio(a, b, data_range=1.0, reduction="none", dim=(1, 2, 3))


def ssim(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Structural similarity of each image pair, float64 ``[B]`` (1.0 where identical)."""
    _check_pair(a, b)
    if min(a.shape[-2:]) < SSIM_WINDOW:
        raise ValueError(f"SSIM needs images of at least {SSIM_WINDOW}x{SSIM_WINDOW} pixels, "
                         f"got {a.shape[-2]}x{a.shape[-1]}")
    a, b = a.double(), b.double()
    return _torchmetrics_image().structural_similarity_index_measure(
        a, b, gaussian_kernel=True, sigma=SSIM_SIGMA, data_range=1.0, k1=0.01, k2=0.03, reduction="none")


def read_rgb(path: str | Path):
    """One image file (any format Pillow reads) as a uint8 array ``[H, W, 3]``."""
    import numpy as np
    from PIL import Image

    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"), dtype=np.uint8).copy()


def load_images(paths: Sequence[str | Path]) -> torch.Tensor:
    """Image files (any format Pillow reads) as one float32 tensor ``[B, 3, H, W]`` in [0, 1].
    All files must have the same size."""
    import numpy as np

    arrays = [read_rgb(path) for path in paths]
    sizes = {array.shape for array in arrays}
    if len(sizes) > 1:
        raise ValueError(f"images must all have the same size, got {sorted(s[1::-1] for s in sizes)} (width, height)")
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).float().div(255.0)
