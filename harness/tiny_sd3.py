"""Tiny SD3-family models with random weights, made on the fly with ComfyUI's own classes and
loaded through ComfyUI's own loaders (no download)."""
from __future__ import annotations

import torch

from .comfy_env import comfy_version, import_comfy

VARIANTS = {
    # name: (depth, qk_norm, dual-attention blocks)  hidden = 64 * depth, heads = depth, as in SD3
    "sd3-medium": (3, None, ()),
    "sd3.5-large": (3, "rms", ()),
    "sd3.5-medium": (3, "rms", (0, 1)),
}
CONTEXT_DIM = 4096  # T5-XXL width, what SD3's text encoders produce
POOLED_DIM = 2048  # CLIP-L + CLIP-G pooled
POS_EMBED_MAX = 96  # token grids up to 96 x 96 (1536 x 1536 px)


def tiny_state_dict(variant: str = "sd3-medium", seed: int = 0, dtype=torch.float32) -> dict:
    """Random weights of a small MMDiT with SD3's key layout, made with ComfyUI's own MMDiT class."""
    import comfy.ops
    from comfy.ldm.modules.diffusionmodules.mmdit import MMDiT
    depth, qk_norm, dual = VARIANTS[variant]
    model = MMDiT(input_size=None, patch_size=2, in_channels=16, out_channels=16, depth=depth,
                  adm_in_channels=POOLED_DIM, pos_embed_max_size=POS_EMBED_MAX,
                  num_patches=POS_EMBED_MAX * POS_EMBED_MAX,
                  context_embedder_config={"target": "torch.nn.Linear",
                                           "params": {"in_features": CONTEXT_DIM, "out_features": 64 * depth}},
                  qk_norm=qk_norm, x_block_self_attn_layers=list(dual), dtype=dtype,
                  operations=comfy.ops.disable_weight_init)
    fill_random_weights(model, seed)
    return {k: v.contiguous() for k, v in model.state_dict().items()}


def fill_random_weights(model: torch.nn.Module, seed: int = 0) -> None:
    """Fill every parameter and buffer of an MMDiT in place with seeded random values (ComfyUI's ops
    leave them uninitialised): matrices ~ N(0, 1 / fan_in), q/k RMSNorm scales around 1, other vectors
    small, buffers (the position table) ~ N(0, 0.25)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 1:
                value = (1.0 + 0.1 * torch.randn(p.shape, generator=g) if name.endswith(("ln_q.weight", "ln_k.weight"))
                         else 0.02 * torch.randn(p.shape, generator=g))
            else:
                value = torch.randn(p.shape, generator=g) / p[0].numel() ** 0.5
            p.copy_(value.to(p.dtype))
        for b in model.buffers():
            b.copy_((0.5 * torch.randn(b.shape, generator=g)).to(b.dtype))


def tiny_model(variant: str = "sd3-medium", seed: int = 0):
    """A ModelPatcher from ComfyUI's diffusion-model loader (what UNETLoader calls)."""
    import_comfy()
    import comfy.sd
    return comfy.sd.load_diffusion_model_state_dict(tiny_state_dict(variant, seed))


def conditioning(batch: int = 1, tokens: int = 154, seed: int = 1) -> list:
    g = torch.Generator().manual_seed(seed)
    return [[torch.randn(batch, tokens, CONTEXT_DIM, generator=g),
             {"pooled_output": torch.randn(batch, POOLED_DIM, generator=g)}]]


def sample(model, latent_hw=(32, 32), batch=1, steps=4, cfg=4.5, seed=0, denoise=1.0, latent=None,
           sampler="euler", scheduler="sgm_uniform", positive=None, negative=None) -> torch.Tensor:
    """Sample through ComfyUI's KSampler path (nodes.common_ksampler)."""
    nodes = import_comfy()
    if latent is None:
        latent = torch.zeros(batch, 16, *latent_hw)
    positive = positive if positive is not None else conditioning(1, seed=11)
    negative = negative if negative is not None else conditioning(1, seed=12)
    (out,) = nodes.common_ksampler(model, seed, steps, cfg, sampler, scheduler, positive, negative,
                                   {"samples": latent}, denoise=denoise)
    return out["samples"]


def clip_l_state_dict(seed: int = 0, dtype=torch.float16) -> dict:
    """Random weights for ComfyUI's CLIP-L text encoder (the real 12-layer size: its config is
    fixed, and CLIPLoader with type "sd3" accepts CLIP-L alone, padding the rest of SD3's context)."""
    import json
    import os

    import comfy.clip_model
    import comfy.ops
    import comfy.sd1_clip
    config_path = os.path.join(os.path.dirname(comfy.sd1_clip.__file__), "sd1_clip_config.json")
    with open(config_path) as f:
        config = json.load(f)
    model = comfy.clip_model.CLIPTextModel(config, torch.float32, "cpu", comfy.ops.disable_weight_init)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "layer_norm" in name or "final_layer_norm" in name:
                p.copy_(torch.ones_like(p) if name.endswith("weight") else torch.zeros_like(p))
            else:
                p.copy_(0.02 * torch.randn(p.shape, generator=g))
    return {k: v.to(dtype).contiguous() for k, v in model.state_dict().items()}


def save_safetensors(state_dict: dict, path) -> None:
    from safetensors.torch import save_file
    save_file(state_dict, str(path))


def taesd3_state_dicts(seed: int = 0) -> tuple[dict, dict]:
    """Random weights for ComfyUI's TAESD with SD3's 16 latent channels: (encoder, decoder)."""
    import comfy.taesd.taesd as taesd
    model = taesd.TAESD(latent_channels=16)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) / max(1, p[0].numel()) ** 0.5 if p.dim() > 1
                    else 0.01 * torch.randn(p.shape, generator=g))
    enc = {k: v.contiguous() for k, v in model.taesd_encoder.state_dict().items()}
    dec = {k: v.contiguous() for k, v in model.taesd_decoder.state_dict().items()}
    return enc, dec


TINY_UNET = "sdtm_tiny_sd3.safetensors"
TINY_CLIP = "sdtm_tiny_clip_l.safetensors"


def write_tiny_bundle(models_dir, variant: str = "sd3-medium", seed: int = 0) -> dict:
    """Write a tiny SD3-family set into a ComfyUI models folder layout and return the file names:
    diffusion_models/<unet> (UNETLoader), text_encoders/<clip> (CLIPLoader, type "sd3") and
    vae_approx/taesd3_{encoder,decoder} (VAELoader "taesd3"). Existing files are kept."""
    from pathlib import Path
    root = Path(models_dir)
    files = {
        root / "diffusion_models" / TINY_UNET: lambda: tiny_state_dict(variant, seed),
        root / "text_encoders" / TINY_CLIP: lambda: clip_l_state_dict(seed),
    }
    enc_path = root / "vae_approx" / "taesd3_encoder.safetensors"
    dec_path = root / "vae_approx" / "taesd3_decoder.safetensors"
    import_comfy()
    for path, make in files.items():
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            save_safetensors(make(), path)
    if not (enc_path.exists() and dec_path.exists()):
        enc_path.parent.mkdir(parents=True, exist_ok=True)
        enc, dec = taesd3_state_dicts(seed)
        save_safetensors(enc, enc_path)
        save_safetensors(dec, dec_path)
    return {"unet": TINY_UNET, "clip": TINY_CLIP, "vae": "taesd3"}


# The SD3 VAE's architecture (what ComfyUI's VAE class builds for a 16-channel KL autoencoder state dict).
SD3_VAE_CONFIG = {"double_z": True, "z_channels": 16, "resolution": 256, "in_channels": 3, "out_ch": 3, "ch": 128,
                  "ch_mult": [1, 2, 4, 4], "num_res_blocks": 2, "attn_resolutions": [], "dropout": 0.0}


def sd3_vae_state_dict(seed: int = 0) -> dict:
    """Random weights for the full-size SD3 VAE (16 latent channels, 8x down), built from ComfyUI's own
    encoder and decoder classes: keys ``encoder.*`` and ``decoder.*`` as in the real VAE file."""
    from comfy.ldm.modules.diffusionmodules.model import Decoder, Encoder
    g = torch.Generator().manual_seed(seed)
    state = {}
    for prefix, cls in (("encoder.", Encoder), ("decoder.", Decoder)):
        part = cls(**SD3_VAE_CONFIG)
        with torch.no_grad():
            for name, p in part.named_parameters():
                if p.dim() > 1:
                    p.copy_(torch.randn(p.shape, generator=g) / p[0].numel() ** 0.5)
                elif name.endswith("weight"):  # norms
                    p.fill_(1.0)
                else:
                    p.zero_()
        state.update({prefix + k: v.contiguous() for k, v in part.state_dict().items()})
    return state


def taesd3_vae_state_dict(seed: int = 0) -> dict:
    """Random TAESD weights for SD3's latents in the layout of ComfyUI's VAELoader("taesd3") VAE
    (``taesd_encoder.*``, ``taesd_decoder.*`` and SD3's latent scale and shift): a VAE about 50x cheaper
    to run than the full-size one."""
    import comfy.latent_formats
    enc, dec = taesd3_state_dicts(seed)
    fmt = comfy.latent_formats.SD3()
    return {**{"taesd_encoder." + k: v for k, v in enc.items()}, **{"taesd_decoder." + k: v for k, v in dec.items()},
            "vae_scale": torch.tensor(fmt.scale_factor), "vae_shift": torch.tensor(fmt.shift_factor)}


CHECKPOINT_VAES = {"full": sd3_vae_state_dict, "taesd": taesd3_vae_state_dict}


def write_tiny_checkpoint(path, variant: str = "sd3-medium", seed: int = 0, vae: str = "full") -> None:
    """Write one SD3-family checkpoint file for CheckpointLoaderSimple: the tiny MMDiT, a random CLIP-L
    and a random VAE (``vae``: "full" = the full-size SD3 VAE, "taesd" = TAESD3), under the key prefixes
    ComfyUI's own checkpoint saver uses (``model.diffusion_model.``, ``text_encoders.clip_l.``,
    ``first_stage_model.``), stored in fp16."""
    if vae not in CHECKPOINT_VAES:
        raise ValueError(f"vae must be one of {', '.join(CHECKPOINT_VAES)}, got {vae!r}")
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {', '.join(VARIANTS)}, got {variant!r}")
    import_comfy()
    import comfy.sd
    model = tiny_model(variant, seed)
    clip = comfy.sd.load_text_encoder_state_dicts([clip_l_state_dict(seed)], clip_type=comfy.sd.CLIPType.SD3)
    vae_model = comfy.sd.VAE(sd=CHECKPOINT_VAES[vae](seed))
    state = checkpoint_state_dict(model, clip.get_sd(), vae_model.get_sd())
    save_safetensors({k: (v.half() if v.is_floating_point() else v).contiguous() for k, v in state.items()}, path)


def checkpoint_state_dict(model, clip_sd: dict, vae_sd: dict) -> dict:
    """The checkpoint's state dict as ComfyUI's own saver builds it, from a ModelPatcher and the CLIP and VAE
    state dicts. Newer ComfyUI (0.33.0) has ``ModelPatcher.state_dict_for_saving(clip, vae)``, and its
    ``BaseModel.state_dict_for_saving`` takes the diffusion model's weights first; older ones (0.3.75) have
    only ``BaseModel.state_dict_for_saving(clip, vae)``. Picked by what the running ComfyUI offers."""
    if callable(getattr(model, "state_dict_for_saving", None)):
        return model.state_dict_for_saving(clip_sd, vae_sd)
    return model.model.state_dict_for_saving(clip_sd, vae_sd)


def tiny_checkpoint_name(variant: str = "sd3-medium", vae: str = "full", seed: int = 0) -> str:
    return f"sdtm_tiny_{variant}_{vae}_vae_s{seed}.safetensors"


def cached_tiny_checkpoint(folder, variant: str = "sd3-medium", vae: str = "full", seed: int = 0):
    """The path of a tiny checkpoint in ``folder``, written there first if it is missing and checked by loading
    it back (:func:`check_tiny_checkpoint`: a wrong file fails here, and never enters the folder). The folder
    name should change when this module or ComfyUI changes (see :func:`tiny_cache_dir`); writes are atomic,
    so processes may share it."""
    import os
    from pathlib import Path
    path = Path(folder) / tiny_checkpoint_name(variant, vae, seed)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f".{os.getpid()}.partial.{path.name}")  # ComfyUI reads .safetensors by name
        write_tiny_checkpoint(partial, variant, seed, vae)
        try:
            check_tiny_checkpoint(partial, variant)
        except Exception:
            partial.unlink(missing_ok=True)
            raise
        os.replace(partial, path)
    return path


def check_tiny_checkpoint(path, variant: str = "sd3-medium") -> None:
    """Load a checkpoint file back through ComfyUI's checkpoint loader and raise ValueError unless ComfyUI
    detects SD3 with ``variant``'s MMDiT (depth, q/k norm, dual-attention blocks) and a 16-channel VAE
    (ComfyUI itself raises "Could not detect model type" for a file without a diffusion model it knows)."""
    import_comfy()
    import comfy.sd
    import comfy.supported_models
    model, _, vae = comfy.sd.load_checkpoint_guess_config(str(path), output_vae=True, output_clip=False)[:3]
    config = model.model.model_config
    depth, qk_norm, dual = VARIANTS[variant]
    want = {"model": "SD3", "depth": depth, "qk_norm": qk_norm, "x_block_self_attn_layers": list(dual), "vae": 16}
    got = {"model": type(config).__name__, **{k: config.unet_config.get(k) for k in list(want)[1:4]},
           "vae": vae.latent_channels}
    if type(config) is not comfy.supported_models.SD3 or got != want:
        raise ValueError(f"{path}: ComfyUI detects {got}, not the tiny {variant}: {want}")


def tiny_cache_dir():
    """.cache/tiny-models/<digest>: tiny model files made by this version of this module with this ComfyUI.
    The digest covers what determines the files: this module's code and the ComfyUI tree's version (its
    classes build and save the weights; a file written under one version is not reused under another)."""
    import hashlib
    from pathlib import Path
    here = Path(__file__).resolve()
    digest = hashlib.sha256(here.read_bytes() + comfy_version().encode()).hexdigest()[:12]
    return here.parents[1] / ".cache" / "tiny-models" / digest
