"""ComfyUI side of the pack: node classes, presets and the MMDiT block hook."""
from comfy_api.latest import ComfyExtension, io

from .sdtm_nodes import NODES


class SDTMExtension(ComfyExtension):
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        return list(NODES)


async def comfy_entrypoint() -> SDTMExtension:
    return SDTMExtension()
