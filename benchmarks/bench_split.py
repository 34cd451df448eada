"""How far a split run (KSamplerAdvanced steps 0-k, then k-S on the returned latent, the same patched model)
lands from the single S-step run, on the photo fixture through ComfyUI's sampler, in float32.

Three ways of running the second part, each against the single run (mean |latent difference|):

* ``continued``: the same patched model, as a workflow does. The pack recognises the second part as the
  first part's continuation (it starts at the sigma where the first stopped, from the latent it returned)
  and continues its priority counters, blending cache and merge RNG (docs/METHOD.md, "Split runs").
* ``re-queued``: the second part again from the same first-part latent, as when ComfyUI serves the first
  sampler from its cache and runs only the second: the kept state is read-only, so it must give the same.
* ``afresh``: the second part on a separately patched clone of the same settings, which has no record of
  the first part: what every split run got before the pack carried the state (the plan is the same, but
  counters, cache and RNG start anew).

The unpatched model's split-vs-single difference is the sampler's own float rounding.

    .venv/bin/python -m benchmarks.bench_split                 # cuts 4 and 5 of 8 steps, the Advanced defaults
    .venv/bin/python -m benchmarks.bench_split --cuts 3,6 --steps 10
"""
from __future__ import annotations

import argparse

import torch

from benchmarks.bench_fidelity import SIZE_PX
from harness.comfy_env import import_comfy, load_pack
from photo_fixture import photo_codec
from photo_fixture.sample import CFG, SAMPLER, SCHEDULER, sample_fixture

SETTINGS = {"SDTM Advanced defaults": {}, "no cache": {"cache": False},
            "ratio 0.5, structure to 0.3": {"ratio": 0.5, "switch_percent": 0.3}}


def split_differences(make_model, latent, prompt, steps: int, cut: int,
                      ways=("continued", "re-queued", "afresh")) -> dict[str, float]:
    """Mean |split - single| with the second part continued, re-queued and / or started afresh."""
    positive, negative = prompt
    model = make_model()
    single = sample_fixture(model, 0, positive, negative, steps, latent=latent)
    first = sample_fixture(model, 0, positive, negative, steps, latent=latent, start=0, last=cut)
    on = {"continued": model, "re-queued": model}
    out = {way: sample_fixture(on[way] if way in on else make_model(), 0, positive, negative, steps, latent=first,
                               start=cut, last=steps, add_noise=False, full_denoise=True) for way in ways}
    return {k: float((v - single).abs().mean()) for k, v in out.items()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--cuts", default="4,5", help="the first part runs steps 0..cut-1 (comma separated)")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    cuts = [int(c) for c in args.cuts.split(",")]
    if any(not 0 < c < args.steps for c in cuts):
        parser.error(f"--cuts: each cut must lie in 1..{args.steps - 1}, got {args.cuts}")
    torch.set_num_threads(args.threads)
    import_comfy()
    import comfy.utils
    comfy.utils.PROGRESS_BAR_ENABLED = False
    pack = load_pack()
    base, clip = photo_codec.load_fixture()
    prompt = (photo_codec.prompt_conditioning(clip, photo_codec.PHOTOS[1].caption),
              photo_codec.prompt_conditioning(clip, photo_codec.UNCONDITIONAL_PROMPT))
    side = SIZE_PX // photo_codec.PIXELS_PER_LATENT  # the fixture's own size
    latent = torch.zeros(1, photo_codec.LATENT_CHANNELS, side, side)
    dtype = base.model.diffusion_model.x_embedder.proj.weight.dtype
    print(f"photo fixture ({photo_codec.FIXTURE.name}, {dtype}), {side // 2} x {side // 2} image tokens, "
          f"{args.steps} steps {SAMPLER} / {SCHEDULER}, cfg {CFG}")
    defaults = {knob.input: knob.default for knob in pack.ops.knobs.KNOBS}
    for cut in cuts:
        unpatched = split_differences(lambda: base, latent, prompt, args.steps, cut, ways=("continued",))["continued"]
        print(f"split at {cut}: unpatched split vs single {unpatched:.3g}")
        for label, change in SETTINGS.items():
            def make_model(change=change):
                return pack.advanced.execute(base, **{**defaults, **change}).args[0]
            diffs = split_differences(make_model, latent, prompt, args.steps, cut)
            print(f"  {label} {change}: " + ", ".join(f"{k} {v:.3g}" for k, v in diffs.items()), flush=True)


if __name__ == "__main__":
    main()
