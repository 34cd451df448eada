"""ComfyUI-SDTM: Structure-then-Detail Token Merging for SD3 / SD3.5 in ComfyUI."""
from .nodes import comfy_entrypoint

__all__ = ["comfy_entrypoint"]
