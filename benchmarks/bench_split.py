"""What a split run (KSamplerAdvanced steps 0-4, then 4-8 on the same patched model) differs in from the
single 8-step run, and where the difference comes from.

Both parts get the single run's plan at every step (phase, ratio, protected steps: tests/test_runs.py).
What the second part does not carry over from the first: the priority counters, the blending cache and
the merge RNG's position (each part starts them afresh). To attribute the difference, this script hands
the first part's state over to the second (instrumenting the pack's own RunState: it keeps the three
when the first part releases them and installs the chosen ones when the second part starts) and prints
the mean |latent difference| between split and single for each combination. Carrying all three must
bring the split run down to the unpatched model's split-vs-single difference (float rounding).

    .venv/bin/python -m benchmarks.bench_split            # tiny random SD3 (3 blocks), 16 x 24 tokens, 8 steps
    .venv/bin/python -m benchmarks.bench_split --cut 5    # the first part ends inside the detail phase
"""
from __future__ import annotations

import argparse

import torch

from harness.comfy_env import import_comfy, load_pack
from harness.tiny_sd3 import conditioning, tiny_model

PIECES = ("priority", "cache", "rng")


class Handover:
    """Keeps the state a run releases and gives the chosen pieces to the next run that starts part-way."""

    def __init__(self, state_class) -> None:
        self.state_class, self.carry, self.kept = state_class, (), None
        self.release, self.init = state_class.release, state_class.__init__
        handover = self

        def release(run) -> None:
            if run.first_step == 0:
                handover.kept = {"priority": {k: v.clone() for k, v in run._priority.items()},
                                 "cache": dict(run._cache),
                                 "rng": {k: g.get_state() for k, g in run._generators.items()}}
            handover.release(run)

        def init(run, *args, **kwargs) -> None:
            handover.init(run, *args, **kwargs)
            if run.first_step > 0 and handover.kept is not None:
                if "priority" in handover.carry:
                    run._priority.update(handover.kept["priority"])
                if "cache" in handover.carry:
                    run._cache.update(handover.kept["cache"])
                if "rng" in handover.carry:
                    for key, state in handover.kept["rng"].items():
                        run._generators[key] = torch.Generator(device=key).set_state(state)

        state_class.release, state_class.__init__ = release, init

    def restore(self) -> None:
        self.state_class.release, self.state_class.__init__ = self.release, self.init


def ksampler(model, latent, steps, start=None, last=None, add_noise=True, full_denoise=False):
    """ComfyUI's KSampler / KSamplerAdvanced path (nodes.common_ksampler), euler / sgm_uniform, cfg 3."""
    nodes = import_comfy()
    (out,) = nodes.common_ksampler(model, 0, steps, 3.0, "euler", "sgm_uniform", conditioning(1, seed=11),
                                   conditioning(1, seed=12), {"samples": latent}, disable_noise=not add_noise,
                                   start_step=start, last_step=last, force_full_denoise=full_denoise)
    return out["samples"]


def split_difference(model, latent, steps: int, cut: int) -> float:
    single = ksampler(model, latent, steps)
    first = ksampler(model, latent, steps, start=0, last=cut)
    second = ksampler(model, first, steps, start=cut, last=steps, add_noise=False, full_denoise=True)
    return float((second - single).abs().mean())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--cut", type=int, default=4, help="the first part runs steps 0..cut-1")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    import_comfy()
    import comfy.utils
    comfy.utils.PROGRESS_BAR_ENABLED = False
    pack = load_pack()
    base = tiny_model("sd3-medium", seed=0)
    latent = torch.zeros(1, 16, 32, 48)
    single_base = ksampler(base, latent, args.steps)
    print(f"tiny random SD3, 16 x 24 image tokens, {args.steps} steps euler / sgm_uniform, split at {args.cut}")
    print(f"unpatched: split vs single {split_difference(base, latent, args.steps, args.cut):.3g}")
    defaults = {knob.input: knob.default for knob in pack.ops.knobs.KNOBS}
    settings = {"SDTM Advanced defaults": {},
                "no cache": {"cache": False},
                "no protected steps": {"protect_steps_every": 0},
                "no cache, no protected steps": {"cache": False, "protect_steps_every": 0}}
    handover = Handover(pack.ops.RunState)
    try:
        for label, change in settings.items():
            model = pack.advanced.execute(base, **{**defaults, **change}).args[0]
            single = ksampler(model, latent, args.steps)
            scale = float((single - single_base).abs().mean())
            print(f"{label} {change}: single with vs without SDTM {scale:.3g}")
            for carry in ((), *((piece,) for piece in PIECES), PIECES):
                handover.carry = carry
                diff = split_difference(model, latent, args.steps, args.cut)
                print(f"  carried over: {', '.join(carry) or 'nothing':26s} split vs single {diff:.3g}")
    finally:
        handover.restore()


if __name__ == "__main__":
    main()
