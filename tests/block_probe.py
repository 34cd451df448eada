"""Observe what the MMDiT blocks actually computed, independently of SDTM's own bookkeeping:
ComfyUI's attention override (transformer_options["optimized_attention_override"]) sees every
attention call with its sequence length and sigma; forward pre-hooks on each image MLP see how many
tokens it got."""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field


@dataclass
class BlockCall:
    block: int
    step: int
    batch: int
    chunks: tuple
    attn_seq: list = field(default_factory=list)  # sequence length of each attention call in the block
    mlp_tokens: int | None = None


class BlockProbe:
    def __init__(self, model_patcher, text_tokens: int):
        """``model_patcher``: the MODEL to observe; ``probe.model`` is a clone of it to sample with."""
        self.text_tokens = text_tokens
        self.calls: list[BlockCall] = []
        self._pending: dict[int, dict] = {}
        self.model = model_patcher.clone()
        self.model.model_options["transformer_options"]["optimized_attention_override"] = self._attention
        blocks = model_patcher.get_model_object("diffusion_model").joint_blocks
        self._current = None
        self._handles = [b.x_block.mlp.register_forward_pre_hook(self._mlp_hook(i)) for i, b in enumerate(blocks)]

    def close(self):
        for h in self._handles:
            h.remove()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _attention(self, func, *args, **kwargs):
        q = args[0]
        options = kwargs["transformer_options"]
        sigma = float(options["sigmas"].reshape(-1)[0])
        schedule = [float(s) for s in options["sample_sigmas"]]
        step = min(range(len(schedule)), key=lambda i: abs(schedule[i] - sigma))
        if self._current is None:
            self._current = BlockCall(block=-1, step=step, batch=q.shape[0],
                                      chunks=tuple(options.get("cond_or_uncond", ())))
        self._current.attn_seq.append(q.shape[1])
        return func(*args, **kwargs)

    def _mlp_hook(self, index):
        def hook(module, inputs):
            call = self._current
            call.block, call.mlp_tokens = index, inputs[0].shape[1]
            self.calls.append(call)
            self._current = None
        return hook

    def image_tokens_by_step(self) -> dict[int, set[tuple]]:
        """step -> the set of (image tokens in the joint attention, MLP tokens) over merging blocks."""
        out = defaultdict(set)
        for c in self.calls:
            out[c.step].add((c.attn_seq[0] - self.text_tokens, c.mlp_tokens))
        return dict(out)
