"""The real ComfyUI host for the tests, the demo and the benchmarks: import it headless on CPU and
load this pack through ComfyUI's own custom-node loader."""
from __future__ import annotations

import asyncio
import importlib
import logging
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_TREE = REPO / ".cache" / "comfyui"
PACK_NAME = "ComfyUI-SDTM"


def comfy_root() -> Path:
    root = Path(os.environ.get("COMFYUI_PATH", DEFAULT_TREE)).resolve()
    if not (root / "comfy" / "model_patcher.py").is_file():
        raise RuntimeError(
            f"no ComfyUI tree at {root}. Set COMFYUI_PATH to a ComfyUI checkout, or run "
            f"'python commands/get_comfyui.py' to unpack ComfyUI 0.3.75 into {DEFAULT_TREE}.")
    return root


def comfy_version() -> str:
    """The version of the ComfyUI tree the tests use (its comfyui_version.py), read without importing ComfyUI."""
    import re
    text = (comfy_root() / "comfyui_version.py").read_text()
    found = re.search(r'__version__\s*=\s*["\']([^"\']+)["\']', text)
    if not found:
        raise RuntimeError(f"no __version__ in {comfy_root() / 'comfyui_version.py'}")
    return found.group(1)


_STATE: dict = {}


ATTENTION_FLAGS = {"pytorch": "use_pytorch_cross_attention", "split": "use_split_cross_attention",
                   "sub-quad": "use_quad_cross_attention"}


def import_comfy(device: str | None = None, attention: str | None = None):
    """Import ComfyUI's modules once and return ComfyUI's top-level ``nodes`` module.

    device "cpu" (the default) runs ComfyUI with --cpu; "cuda" lets it use the GPU. attention picks
    ComfyUI's attention backend as its command-line flags do (None: ComfyUI's default for the device).
    Called without arguments after ComfyUI is imported, it returns what is there.
    """
    if "nodes" in _STATE:
        if device is not None and _STATE["setup"] != (device, attention):
            raise RuntimeError(f"ComfyUI was already imported with {_STATE['setup']}, not {(device, attention)}")
        return _STATE["nodes"]
    root = str(comfy_root())
    if root not in sys.path:
        sys.path.insert(0, root)  # before the repo, whose own nodes/ package must not shadow ComfyUI's
    import comfy.cli_args
    device = device or "cpu"
    comfy.cli_args.args.cpu = device == "cpu"
    comfy.cli_args.args.disable_api_nodes = True
    if attention is not None:
        setattr(comfy.cli_args.args, ATTENTION_FLAGS[attention], True)
    import comfy.model_management  # noqa: F401  (asserts CUDA unless cpu is set first)
    importlib.import_module("utils.install_util")  # 0.3.75 needs it before server/nodes
    import server  # noqa: F401

    import nodes
    root_logger = logging.getLogger()
    level = root_logger.level
    root_logger.setLevel(logging.ERROR)  # comfy_extras nodes that need absent optional packages (audio, ...)
    try:
        asyncio.run(nodes.init_extra_nodes(init_custom_nodes=False, init_api_nodes=False))
    finally:
        root_logger.setLevel(level)
    _STATE["setup"] = (device, attention)
    for needed in ("KSampler", "EmptySD3LatentImage"):
        if needed not in nodes.NODE_CLASS_MAPPINGS:
            raise RuntimeError(f"ComfyUI did not load its node {needed}")
    _STATE["nodes"] = nodes
    return nodes


@dataclass
class Pack:
    module: object  # the pack's package as ComfyUI loaded it
    hook: object  # <pack>.nodes.hook
    ops: object  # <pack>.sdtm_ops
    presets: object  # <pack>.nodes.presets
    apply: type  # SDTM_Apply node class
    advanced: type  # SDTM_ApplyAdvanced node class


def load_pack() -> Pack:
    """Load this repository as a custom node pack with ComfyUI's own loader."""
    if "pack" in _STATE:
        return _STATE["pack"]
    nodes = import_comfy()
    folder = Path(tempfile.mkdtemp(prefix="sdtm-custom-nodes-")) / PACK_NAME
    folder.symlink_to(REPO, target_is_directory=True)
    ok = asyncio.run(nodes.load_custom_node(str(folder)))
    if not ok:
        raise RuntimeError(f"ComfyUI could not load the pack from {folder}")
    name = str(folder).replace(".", "_x_")
    pack = Pack(module=sys.modules[name], hook=sys.modules[name + ".nodes.hook"],
                ops=sys.modules[name + ".sdtm_ops"], presets=sys.modules[name + ".nodes.presets"],
                apply=nodes.NODE_CLASS_MAPPINGS["SDTM_Apply"], advanced=nodes.NODE_CLASS_MAPPINGS["SDTM_ApplyAdvanced"])
    _STATE["pack"] = pack
    return pack


def register_model_dir(kind: str, path) -> None:
    """Add a folder to ComfyUI's model search paths (folder_paths), e.g. kind "diffusion_models"."""
    import_comfy()
    import folder_paths
    folder_paths.add_model_folder_path(kind, str(path))


def prompt_executor():
    """ComfyUI's PromptExecutor in this process, with a real PromptServer as its message sink and the
    classic output cache (the cache arguments main.py passes; newer versions read more keys)."""
    import_comfy()
    import execution
    import server
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    return execution.PromptExecutor(server.PromptServer(loop), cache_type=execution.CacheType.CLASSIC,
                                    cache_args={"lru": 0, "ram": 0, "ram_inactive": 0})
