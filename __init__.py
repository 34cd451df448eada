"""ComfyUI-SDTM: Structure-then-Detail Token Merging for SD3 / SD3.5 in ComfyUI."""
from .nodes import comfy_entrypoint

WEB_DIRECTORY = "./web/js"  # the editor extension that shows the SDTM Run Report's summary in the node

__all__ = ["comfy_entrypoint", "WEB_DIRECTORY"]
