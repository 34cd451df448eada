"""The photo fixture's "VAE": a fixed, invertible map between RGB pixels and SD3's 16-channel latent
space, and the real photographs it was trained on.

No VAE is involved. An RGB image in [0, 1] becomes [-1, 1], gets a fourth channel of zeros, and
each 2 x 2 pixel block is folded into channels (pixel-unshuffle): 4 channels x 4 pixels = 16
channels at half the resolution. :func:`decode` undoes it exactly for the three colour channels
and drops the fourth. The result lives where a VAE latent lives in ComfyUI, i.e. what VAEEncode
returns and what KSampler takes and returns; the model itself sees it after SD3's
``latent_format.process_in`` (scale 1.5305, shift 0.0609), exactly as ComfyUI's sampler feeds it.

Sizes: a latent of h x w decodes to 2h x 2w pixels. ComfyUI's EmptySD3LatentImage(width, height)
makes a (height / 8) x (width / 8) latent, so it decodes to (width / 4) x (height / 4) pixels:
:func:`empty_latent_size` gives the width and height to ask for.

The photographs ship inside scikit-learn's and scikit-image's wheels (no download): see
:data:`PHOTOS`.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

LATENT_CHANNELS = 16
PIXELS_PER_LATENT = 2  # a latent pixel is a 2 x 2 block of image pixels
EMPTY_LATENT_PER_PIXEL = 8 // PIXELS_PER_LATENT  # EmptySD3LatentImage size per decoded pixel


def encode(pixels: torch.Tensor) -> torch.Tensor:
    """RGB images [B, 3, H, W] in [0, 1] (H, W even) -> latents [B, 16, H/2, W/2]."""
    if pixels.dim() != 4 or pixels.shape[1] != 3:
        raise ValueError(f"pixels must be RGB images shaped [B, 3, H, W], got {tuple(pixels.shape)}")
    if pixels.shape[-2] % PIXELS_PER_LATENT or pixels.shape[-1] % PIXELS_PER_LATENT:
        raise ValueError(f"pixels height and width must be even, got {tuple(pixels.shape[-2:])}")
    signed = pixels * 2.0 - 1.0
    padded = torch.cat([signed, torch.zeros_like(signed[:, :1])], dim=1)
    return F.pixel_unshuffle(padded, PIXELS_PER_LATENT)


def decode(latent: torch.Tensor) -> torch.Tensor:
    """Latents [B, 16, h, w] (what KSampler returns) -> RGB images [B, 3, 2h, 2w] in [0, 1]."""
    if latent.dim() != 4 or latent.shape[1] != LATENT_CHANNELS:
        raise ValueError(f"latent must be shaped [B, {LATENT_CHANNELS}, h, w], got {tuple(latent.shape)}")
    rgb = F.pixel_shuffle(latent.float(), PIXELS_PER_LATENT)[:, :3]
    return ((rgb + 1.0) / 2.0).clamp(0.0, 1.0)


def decode_to_comfy_image(latent: torch.Tensor) -> torch.Tensor:
    """Latents -> ComfyUI's IMAGE layout [B, H, W, 3] in [0, 1] (for SaveImage / PreviewImage)."""
    return decode(latent).permute(0, 2, 3, 1).contiguous()


def decode_to_pil(latent: torch.Tensor) -> list:
    """Latents -> a list of PIL RGB images."""
    from PIL import Image
    arrays = (decode(latent) * 255.0).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    return [Image.fromarray(a) for a in arrays]


def empty_latent_size(width_px: int, height_px: int) -> tuple[int, int]:
    """The EmptySD3LatentImage (width, height) whose latent decodes to width_px x height_px pixels."""
    for name, value in (("width_px", width_px), ("height_px", height_px)):
        if value < PIXELS_PER_LATENT or value % PIXELS_PER_LATENT:
            raise ValueError(f"{name} must be a positive even number of pixels, got {value}")
    return width_px * EMPTY_LATENT_PER_PIXEL, height_px * EMPTY_LATENT_PER_PIXEL


# ------------------------------------------------------------------------------------------------
# The training photographs
# ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Photo:
    name: str
    caption: str  # the prompt the fixture learned for this photo
    package: str  # the pip package whose wheel holds the file
    file: str  # path of the file inside that package


PHOTOS: tuple[Photo, ...] = (
    Photo("china", "a photo of a chinese temple", "sklearn", "datasets/images/china.jpg"),
    Photo("flower", "a photo of a flower", "sklearn", "datasets/images/flower.jpg"),
    Photo("astronaut", "a photo of an astronaut", "skimage", "data/astronaut.png"),
    Photo("cat", "a photo of a cat", "skimage", "data/chelsea.png"),
    Photo("coffee", "a photo of a cup of coffee", "skimage", "data/coffee.png"),
    Photo("rocket", "a photo of a rocket", "skimage", "data/rocket.jpg"),
    Photo("motorcycle", "a photo of a motorcycle", "skimage", "data/motorcycle_left.png"),
)
UNCONDITIONAL_PROMPT = ""  # what the fixture saw with conditioning dropout: use it as the negative prompt


def photo_path(photo: Photo) -> Path:
    """The photograph's file inside its installed package (scikit-learn / scikit-image)."""
    import importlib
    try:
        package = importlib.import_module(photo.package)
    except ImportError as error:
        raise RuntimeError(f"photo {photo.name!r} ships inside the {photo.package!r} package, which is not "
                           f"installed: pip install -r requirements-dev.txt") from error
    path = Path(package.__file__).parent / photo.file
    if not path.is_file():
        raise RuntimeError(f"photo {photo.name!r}: {path} is missing from the installed {photo.package} package")
    return path


def load_photo(photo: Photo) -> torch.Tensor:
    """One photograph as float RGB [3, H, W] in [0, 1], read from its package file."""
    import numpy as np
    from PIL import Image
    with Image.open(photo_path(photo)) as image:
        array = np.asarray(image.convert("RGB"), dtype=np.uint8)
    return torch.from_numpy(array.copy()).permute(2, 0, 1).float() / 255.0


def load_photos() -> list[torch.Tensor]:
    """Every photograph of :data:`PHOTOS`, in that order."""
    return [load_photo(p) for p in PHOTOS]


def whole_photo(photo: torch.Tensor, size: int) -> torch.Tensor:
    """The photo's centre square scaled to size x size: the whole scene, [1, 3, size, size]."""
    short = min(photo.shape[-2:])
    top, left = (photo.shape[-2] - short) // 2, (photo.shape[-1] - short) // 2
    return F.interpolate(photo[None, :, top:top + short, left:left + short], size=(size, size), mode="bilinear",
                         antialias=True)


def random_crop(photo: torch.Tensor, size: int, generator: torch.Generator) -> torch.Tensor:
    """A size x size crop [3, size, size] of the photo at a random scale (log-uniform between the
    scale where the crop spans the photo's short side and the photo's own), with a random
    horizontal flip: whole small scenes and full-resolution texture both appear."""
    _, height, width = photo.shape
    short = min(height, width)
    if short < size:
        raise ValueError(f"crop size must be at most the photo's short side {short}, got {size}")
    low = torch.log(torch.tensor(size / short))
    scale = float(torch.exp(low * torch.rand((), generator=generator)))  # in [size/short, 1]
    new_h, new_w = max(size, round(height * scale)), max(size, round(width * scale))
    scaled = photo if (new_h, new_w) == (height, width) else F.interpolate(
        photo[None], size=(new_h, new_w), mode="bilinear", antialias=True, align_corners=False)[0]
    top = int(torch.randint(0, new_h - size + 1, (), generator=generator))
    left = int(torch.randint(0, new_w - size + 1, (), generator=generator))
    crop = scaled[:, top:top + size, left:left + size]
    if bool(torch.rand((), generator=generator) < 0.5):
        crop = crop.flip(-1)
    return crop.clamp(0.0, 1.0)


# ------------------------------------------------------------------------------------------------
# The trained fixture in ComfyUI
# ------------------------------------------------------------------------------------------------
FIXTURE = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "sdtm_photo_mmdit.safetensors"
DEEP_FIXTURE = FIXTURE.with_name("sdtm_photo_mmdit_deep.safetensors")  # 8 joint blocks (docs/FIXTURE.md)
DENSE_FIXTURE = FIXTURE.with_name("sdtm_photo_mmdit_dense.safetensors")  # the deep one at 64 x 64 tokens
CLIP_SEED = 0  # the fixture learned the captions as encoded by harness.tiny_sd3.clip_l_state_dict(seed=0)
_REGISTERED: dict[str, str] = {}


def state_dict_digest(state_dict: dict) -> str:
    """SHA-256 of a state dict's names, dtypes, shapes and bytes, in sorted name order."""
    import hashlib
    digest = hashlib.sha256()
    for name in sorted(state_dict):
        tensor = state_dict[name].contiguous().cpu()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()


def write_fixture_clip(folder: Path) -> Path:
    """Write the random CLIP-L the fixture was trained with into ``folder`` (a ComfyUI
    ``text_encoders`` folder; the same file ``harness.tiny_sd3.write_tiny_bundle`` writes) and return
    its path. Load it with CLIPLoader, type "sd3"."""
    from harness.tiny_sd3 import TINY_CLIP, clip_l_state_dict, save_safetensors
    path = Path(folder) / TINY_CLIP
    weights = clip_l_state_dict(CLIP_SEED)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_safetensors(weights, path)
    _REGISTERED["clip_digest"] = state_dict_digest(weights)
    return path


def register_fixture_clip() -> str:
    """Write the fixture's text encoder once to a temporary ``text_encoders`` folder that ComfyUI's
    loaders search, and return its name for CLIPLoader (type "sd3")."""
    if "clip" not in _REGISTERED:
        import tempfile

        from harness.comfy_env import register_model_dir
        path = write_fixture_clip(Path(tempfile.mkdtemp(prefix="sdtm-fixture-clip-")))
        register_model_dir("text_encoders", path.parent)
        _REGISTERED["clip"] = path.name
    return _REGISTERED["clip"]


def fixture_clip_digest() -> str:
    """:func:`state_dict_digest` of the text encoder :func:`register_fixture_clip` writes: the
    fixture records the one it was trained with, so a change to the random CLIP-L is caught."""
    register_fixture_clip()
    return _REGISTERED["clip_digest"]


def file_digest(path: Path) -> str:
    import hashlib
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def fixture_metadata(fixture: Path = FIXTURE) -> dict:
    """How the fixture was made, as the training script recorded it in the file."""
    import json

    from safetensors import safe_open
    with safe_open(str(fixture), framework="pt") as f:
        metadata = f.metadata() or {}
    if "sdtm_fixture" not in metadata:
        raise ValueError(f"{fixture} carries no 'sdtm_fixture' metadata: "
                         "it was not written by photo_fixture/train_fixture.py")
    return json.loads(metadata["sdtm_fixture"])


def register_fixture(fixture: Path = FIXTURE) -> dict[str, str]:
    """Make the fixture and its text encoder visible to ComfyUI's loaders and return their names:
    {"unet": for UNETLoader, "clip": for CLIPLoader with type "sd3"}."""
    import folder_paths

    from harness.comfy_env import register_model_dir
    fixture = Path(fixture).resolve()
    if not fixture.is_file():
        raise FileNotFoundError(f"fixture {fixture} does not exist: train it with "
                                f"'python -m photo_fixture.train_fixture' (docs/FIXTURE.md)")
    register_model_dir("diffusion_models", fixture.parent)
    found = folder_paths.get_full_path("diffusion_models", fixture.name)
    if found is None or Path(found).resolve() != fixture:
        raise RuntimeError(f"UNETLoader would load {found} for the name {fixture.name!r}, not {fixture}: "
                           f"another diffusion_models folder holds a file of that name")
    return {"unet": fixture.name, "clip": register_fixture_clip()}


def load_fixture_clip():
    """The fixture's text encoder through ComfyUI's CLIPLoader (type "sd3", CLIP-L only)."""
    from harness.comfy_env import import_comfy
    nodes = import_comfy()
    (clip,) = nodes.CLIPLoader().load_clip(register_fixture_clip(), "sd3")
    return clip


def load_fixture(fixture: Path = FIXTURE) -> tuple:
    """(MODEL, CLIP) of the fixture through ComfyUI's UNETLoader and CLIPLoader.

    A fixture with more joint blocks than SD3's width rule implies (the deep fixture: 8 blocks of
    width 128) cannot come through UNETLoader, which derives the block count from the width; it
    is built by :func:`load_fixture_unet` with the same detection and ComfyUI's own MMDiT
    ``num_blocks`` argument."""
    from harness.comfy_env import import_comfy
    nodes = import_comfy()
    names = register_fixture(fixture)
    config = fixture_metadata(fixture)["config"]
    if config.get("blocks", config.get("depth")) != config.get("depth", config.get("blocks")):
        model = load_fixture_unet(fixture, config["blocks"])
    else:
        (model,) = nodes.UNETLoader().load_unet(names["unet"], "default")
    return model, load_fixture_clip()


def load_fixture_unet(fixture: Path, blocks: int):
    """The fixture as a ComfyUI MODEL: ComfyUI's detection of the SD3 config from the weights,
    with ``num_blocks`` set, then ComfyUI's model class, weight loading and ModelPatcher."""
    import comfy.model_detection
    import comfy.model_management
    import comfy.model_patcher
    import comfy.utils
    state_dict = comfy.utils.load_torch_file(str(fixture))
    detected = comfy.model_detection.detect_unet_config(state_dict, "")
    detected["num_blocks"] = blocks
    model_config = comfy.model_detection.model_config_from_unet_config(detected, state_dict)
    if model_config is None or type(model_config).__name__ != "SD3":
        raise RuntimeError(f"ComfyUI does not detect {fixture} as an SD3 model")
    device = comfy.model_management.get_torch_device()
    dtype = comfy.model_management.unet_dtype(model_params=comfy.utils.calculate_parameters(state_dict),
                                              supported_dtypes=list(model_config.supported_inference_dtypes),
                                              weight_dtype=comfy.utils.weight_dtype(state_dict))
    model_config.set_inference_dtype(dtype, comfy.model_management.unet_manual_cast(
        dtype, device, model_config.supported_inference_dtypes))
    model = model_config.get_model(state_dict, "")
    model.load_model_weights(state_dict, "")
    loaded = len(model.diffusion_model.joint_blocks)
    if loaded != blocks:
        raise RuntimeError(f"{fixture}: built {loaded} joint blocks, expected {blocks}")
    return comfy.model_patcher.ModelPatcher(model, load_device=device,
                                            offload_device=comfy.model_management.unet_offload_device())


def load_saved_latent(path: Path) -> torch.Tensor:
    """The samples [B, 16, h, w] in a ComfyUI SaveLatent file (``*.latent``): decode them with
    :func:`decode` or :func:`decode_to_pil`."""
    from safetensors.torch import load_file
    data = load_file(str(path))
    if "latent_tensor" not in data:
        raise ValueError(f"{path} is not a ComfyUI SaveLatent file: it has no 'latent_tensor'")
    return data["latent_tensor"]


def prompt_conditioning(clip, text: str) -> list:
    """ComfyUI CONDITIONING of a prompt through CLIPTextEncode (context [1, 77, 4096], pooled
    [1, 2048]). The fixture knows the captions of :data:`PHOTOS`; use
    :data:`UNCONDITIONAL_PROMPT` as the negative."""
    from harness.comfy_env import import_comfy
    nodes = import_comfy()
    (conditioning,) = nodes.CLIPTextEncode().encode(clip, text)
    return conditioning
