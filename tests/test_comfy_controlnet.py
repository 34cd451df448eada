"""A real SD3 ControlNet (ComfyUI's own classes and ControlNetApplyAdvanced) still steers a run that
SDTM merges: its residuals are added to the full-length image stream after each block."""
import gc

import torch

from harness.comfy_env import import_comfy, load_pack, register_model_dir
from harness.tiny_sd3 import conditioning, sample, tiny_model, write_tiny_bundle


def tiny_sd3_controlnet(depth: int = 3, blocks: int = 2, seed: int = 3):
    """A real SD3 ControlNet (ComfyUI's comfy.cldm.mmdit.ControlNet wrapped in comfy.controlnet.ControlNet,
    as load_controlnet_mmdit builds it) with random weights, sized like the tiny models."""
    import comfy.cldm.mmdit
    import comfy.controlnet
    import comfy.latent_formats
    import comfy.ops

    from harness.tiny_sd3 import CONTEXT_DIM, POOLED_DIM, POS_EMBED_MAX
    control = comfy.cldm.mmdit.ControlNet(
        num_blocks=blocks, control_latent_channels=16, operations=comfy.ops.disable_weight_init, device="cpu",
        dtype=torch.float32, in_channels=16, out_channels=16, patch_size=2, depth=depth, input_size=None,
        adm_in_channels=POOLED_DIM, pos_embed_max_size=POS_EMBED_MAX, num_patches=POS_EMBED_MAX ** 2,
        context_embedder_config={"target": "torch.nn.Linear",
                                 "params": {"in_features": CONTEXT_DIM, "out_features": 64 * depth}})
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in control.parameters():
            p.copy_(torch.randn(p.shape, generator=g) / p[0].numel() ** 0.5 if p.dim() > 1
                    else 0.02 * torch.randn(p.shape, generator=g))
        for b in control.buffers():
            b.copy_(0.5 * torch.randn(b.shape, generator=g))
    latent_format = comfy.latent_formats.SD3()
    latent_format.shift_factor = 0  # as load_controlnet_mmdit does
    return comfy.controlnet.ControlNet(control, compression_ratio=1, latent_format=latent_format,
                                       load_device=torch.device("cpu"), manual_cast_dtype=None)


def test_controlnet_residuals_still_apply(tmp_path):
    nodes = import_comfy()
    import comfy.model_management
    # ControlNet's VAE encode reloads ComfyUI's "currently used" models through weak references, and
    # ComfyUI 0.3.75 keeps entries of MODELs that were dropped while their weights live on. The other
    # test modules drop many patched clones, so start from their models' release, with a fresh model,
    # and keep every MODEL of this test referenced.
    gc.collect()
    comfy.model_management.cleanup_models()
    pack = load_pack()
    model = tiny_model("sd3-medium", seed=21)
    write_tiny_bundle(tmp_path)
    register_model_dir("vae_approx", tmp_path / "vae_approx")
    vae = nodes.VAELoader().load_vae("taesd3")[0]
    pos, neg = conditioning(1, seed=11), conditioning(1, seed=12)
    hint = torch.rand(1, 256, 256, 3, generator=torch.Generator().manual_seed(0))
    cpos, cneg = nodes.ControlNetApplyAdvanced().apply_controlnet(pos, neg, tiny_sd3_controlnet(), hint, 1.0, 0.0, 1.0,
                                                                  vae=vae)

    def run(m, p, n):
        return sample(m, (32, 32), steps=6, positive=p, negative=n)

    # kept alive (see above)
    off = pack.apply.execute(model, "fast", 0.0, 0.0, 1.0, -1.0).args[0]
    fast = pack.apply.execute(model, "fast", -1.0, 0.0, 1.0, -1.0).args[0]
    base, base_cn = run(model, pos, neg), run(model, cpos, cneg)
    assert torch.equal(run(off, cpos, cneg), base_cn)
    merged, merged_cn = run(fast, pos, neg), run(fast, cpos, cneg)
    effect, merged_effect = (base_cn - base).flatten(), (merged_cn - merged).flatten()
    # the ControlNet changes the merged run as it changes the unmerged one
    assert torch.nn.functional.cosine_similarity(effect, merged_effect, dim=0) > 0.9
    assert 0.8 < merged_effect.norm() / effect.norm() < 1.25
