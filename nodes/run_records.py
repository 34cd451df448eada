"""What a patched model keeps of its sampling runs, all bounded: the reports (and merge maps) of its recent runs
under the fingerprint of the latent each produced, and the read-only state of runs that stopped part-way, for
their continuations (:class:`PatchInfo`); finding the run of a LATENT (:func:`run_of_latent`)."""
from __future__ import annotations

import hashlib
import logging
from collections import OrderedDict
from dataclasses import dataclass

import torch

from ..sdtm_ops import RunCarry, SDTMConfig
from .joint_block import EAGER, BlockFunctions, compile_block_functions, host_compile_settings

log = logging.getLogger("SDTM")

KEY = "sdtm"  # wrapper key and transformer_options key of the patch (where its PatchInfo lives)


@dataclass(frozen=True)
class RunRecord:
    """What is kept of a finished run: its report, and its merge maps ({"grid": (h, w), "groups":
    {(step, block): [N]}}; None when the run kept none because no Merge Map reads this model)."""

    report: dict
    maps: dict | None


class PatchInfo:
    """Stored in the patched clone's transformer_options: the settings and what its recent runs left.

    Deep copies (ModelPatcher.clone deep-copies model_options) share this object, so a MODEL cloned
    after the SDTM node (by a LoRA loader, say) still reports its runs here. What is kept, all bounded:

    * ``runs``: the last RUNS_KEPT runs' :class:`RunRecord`, under the fingerprint of the latent each
      produced (:func:`latent_fingerprint`), so the Run Report and the Merge Map find the run of the LATENT
      they are given; the newest is the last. Fingerprints of runs that dropped out are remembered
      (FORGOTTEN_KEPT strings) only to say so.
    * ``carries``: for the last CARRIES_KEPT runs that stopped part-way (last sigma above 0), the read-only
      state a continuation starts from (:class:`~sdtm_ops.state.RunCarry`, on the CPU), under (last sigma,
      fingerprint of the returned latent). A run ending at sigma 0 leaves none: nothing can continue it.
      The keys of carries dropped by that limit are remembered (FORGOTTEN_KEPT) only to say so when their
      continuation arrives.
    """

    RUNS_KEPT = 8
    CARRIES_KEPT = 2
    FORGOTTEN_KEPT = 256

    def __init__(self, config: SDTMConfig, label: str, record_maps: bool = False) -> None:
        self.config = config
        self.label = label
        self.record_maps = bool(record_maps)  # keep merge maps: only when a Merge Map will read them
        self.runs: OrderedDict[str, RunRecord] = OrderedDict()
        self.forgotten: OrderedDict[str, None] = OrderedDict()
        self.carries: OrderedDict[tuple[float, str], RunCarry] = OrderedDict()
        self.dropped: OrderedDict[tuple[float, str], None] = OrderedDict()  # keys of carries dropped (bounded)
        self.logged: set[str] = set()  # one-time log lines already written
        self._unnamed_runs = 0
        self._compiled: dict[str, BlockFunctions] = {}  # the host's compile settings -> compiled functions

    def block_functions(self, model_options: dict) -> BlockFunctions:
        """The merged block's functions for a run with these model options: compiled, once per compile
        setting and kept with the model as the host keeps its compiled model, when ComfyUI's TorchCompileModel
        compiles it; otherwise eager."""
        settings = host_compile_settings(model_options)
        if settings is None:
            return EAGER
        key = repr(sorted(settings.items()))
        if key not in self._compiled:
            self._compiled[key] = compile_block_functions(settings)
        return self._compiled[key]

    def __deepcopy__(self, memo):
        return self

    def log_once(self, key: str, level: int, message: str, *args) -> None:
        if key not in self.logged:
            self.logged.add(key)
            log.log(level, message, *args)

    def record_run(self, fingerprint: str | None, record: RunRecord) -> None:
        if fingerprint is None:  # no latent to find it by (an interrupted run): kept as the newest run only
            self._unnamed_runs += 1
            fingerprint = f"run {self._unnamed_runs} (no latent)"
        _keep_newest(self.runs, fingerprint, record, self.RUNS_KEPT, self.forgotten, self.FORGOTTEN_KEPT)

    def latest(self) -> RunRecord | None:
        """The newest run of this model (whichever sampler ran it), or None."""
        return next(reversed(self.runs.values()), None)

    def run_of(self, samples: torch.Tensor) -> RunRecord | None:
        """The run that produced the latent ``samples`` [B, C, H, W], or None."""
        return self.runs.get(latent_fingerprint(samples))

    def keep_carry(self, last_sigma: float, fingerprint: str, carry: RunCarry) -> None:
        _keep_newest(self.carries, (last_sigma, fingerprint), carry, self.CARRIES_KEPT, self.dropped,
                     self.FORGOTTEN_KEPT)

    def carry_for(self, first_sigma: float, latent) -> tuple[RunCarry | None, str | None]:
        """The carry of a run that stopped at ``first_sigma`` and returned exactly ``latent`` (the latent is
        read, one transfer, only when some run stopped at that sigma), or (None, why that run's carry is gone)
        when this model dropped it; (None, None) when no run stopped there with that latent."""
        if not any(sigma == first_sigma for sigma, _ in (*self.carries, *self.dropped)):
            return None, None
        key = (first_sigma, latent_fingerprint(latent))
        if key in self.dropped:
            return None, (f"the part it continues stopped at this sigma and returned this latent, but its state was "
                          f"dropped: this model keeps the state of its last {self.CARRIES_KEPT} part-way runs and "
                          f"{self.CARRIES_KEPT} or more stopped after it (other split runs on this model or its "
                          f"clones). Run each part right after the one before it, or queue the prompt again")
        return self.carries.get(key), None

    @property
    def carried_bytes(self) -> int:
        return sum(carry.nbytes for carry in self.carries.values())


def _keep_newest(kept: OrderedDict, key, value, limit: int, forgotten: OrderedDict, forgotten_limit: int) -> None:
    """Put ``value`` under ``key`` as the newest of ``kept``, drop the oldest past ``limit`` and remember the
    dropped keys in ``forgotten`` (itself bounded by ``forgotten_limit``), only to say so later."""
    forgotten.pop(key, None)
    kept[key] = value
    kept.move_to_end(key)
    while len(kept) > limit:
        dropped, _ = kept.popitem(last=False)
        forgotten[dropped] = None
        while len(forgotten) > forgotten_limit:
            forgotten.popitem(last=False)


def latent_fingerprint(samples) -> str | None:
    """Identity of a latent [B, C, H, W]: its shape and a hash of its float32 values (one transfer to the
    CPU, once per run). None for what is not a plain tensor (nested latents)."""
    if not isinstance(samples, torch.Tensor) or samples.is_nested:
        return None
    values = samples.detach().to("cpu", torch.float32).contiguous()
    return f"{tuple(values.shape)}:{hashlib.sha1(values.numpy().tobytes()).hexdigest()}"


def run_of_latent(model, samples, input_name: str) -> RunRecord:
    """The sampling run of ``model`` that produced the LATENT ``samples`` (the model's newest run when
    ``samples`` is None); a clear error when the model carries no SDTM patch or that run is unknown."""
    info = model.model_options.get("transformer_options", {}).get(KEY)
    if info is None:
        raise ValueError("model carries no SDTM patch: connect the MODEL output of an SDTM node")
    if samples is None:
        found = info.latest()
        if found is None:
            raise ValueError("this SDTM-patched model has not been sampled yet, so there is no run to show: connect "
                             f"the sampler's LATENT to {input_name} (the node then runs after the sampler)")
        return found
    latent = samples.get("samples") if isinstance(samples, dict) else None
    fingerprint = latent_fingerprint(latent) if latent is not None else None
    found = info.runs.get(fingerprint) if fingerprint is not None else None
    if found is not None:
        return found
    if fingerprint in info.forgotten:
        raise ValueError(
            f"{input_name}: this LATENT comes from a sampling run of this SDTM-patched model that is no longer kept: "
            f"the model keeps its last {info.RUNS_KEPT} runs, and {info.RUNS_KEPT} or more ran after it. Queue the "
            f"prompt again, or put the report right after the sampler.")
    known = [record.report.get("latent_shape") for record in info.runs.values()]
    raise ValueError(
        f"{input_name}: this LATENT was not produced by a sampling run of this SDTM-patched model, so the "
        f"run it belongs to is unknown (the model's recent runs produced latents of shapes {known or 'none'}). "
        f"Connect the LATENT output of the sampler that used this model, unchanged (not a denoised_output, "
        f"an upscaled or an edited latent).")
