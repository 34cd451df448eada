"""What every SDTM node's schema shares: the category, the search aliases, and a Schema that works on
old and new ComfyUI hosts."""
from __future__ import annotations

import dataclasses

from comfy_api.latest import io

CATEGORY = "model/patch/sdtm"  # where ComfyUI files its own model patches
SEARCH_ALIASES = ["token merging", "tome", "sdtm", "merge tokens", "speed up", "faster", "acceleration",
                  "structure then detail", "sd3", "sd3.5", "mmdit"]
NEWER_HOST_ONLY = ("search_aliases",)  # io.Schema fields that ComfyUI 0.3.75 does not have


def schema(**arguments) -> io.Schema:
    """io.Schema of ``arguments``, leaving out the newer-host-only ones this host's ComfyUI does not
    know (0.3.75 raises TypeError on ``search_aliases``); any other unknown argument still raises."""
    known = {f.name for f in dataclasses.fields(io.Schema)}
    return io.Schema(**{name: value for name, value in arguments.items()
                        if name in known or name not in NEWER_HOST_ONLY})
