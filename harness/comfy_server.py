"""The real ComfyUI server (its main.py) as a subprocess on 127.0.0.1, with this pack, for the demo and
the end-to-end tests.

Everything it writes goes to its own folders (user, output, temp, input) under one temporary root; the
models it sees come from an extra-model-paths file this module writes; the only custom node pack it
loads is this repository (a symlink named ComfyUI-SDTM). main.py runs from a shadow folder (links to
the tree's entries, a copy of main.py) so it never reads the tree's own extra_model_paths.yaml.
"""
from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from .comfy_env import PACK_NAME, REPO, comfy_root

# No tutorial dialog and no minimap over the editor; node text drawn at any zoom (screenshots); every workflow
# checked against the editor's schema on load, a warning if it fails (1.32.x does it by default, 1.58.x not).
FIRST_VISIT_SETTINGS = {"Comfy.TutorialCompleted": True, "Comfy.Minimap.Visible": False,
                        "LiteGraph.Canvas.MinFontSizeForLOD": 1, "Comfy.Validation.Workflows": True}


class ServerError(RuntimeError):
    """The server did not start, or answered with an error."""


class PromptError(RuntimeError):
    """ComfyUI refused a prompt (HTTP 400) or its execution failed.

    ``status``: the HTTP status (400) or None for an execution error; ``body``: the server's JSON
    answer (``error`` and ``node_errors``) or the history entry of the failed prompt."""

    def __init__(self, message: str, status: int | None, body: dict) -> None:
        super().__init__(message)
        self.status = status
        self.body = body


@dataclass
class PromptRun:
    """One finished prompt: its history entry and timings."""

    prompt_id: str
    history: dict
    seconds: float  # execution_start -> execution_success, by the server's own timestamps
    node_seconds: dict[str, float] = field(default_factory=dict)  # node id -> seconds (websocket events)
    cached_nodes: list[str] = field(default_factory=list)

    def images(self) -> list[dict]:
        """Every image the prompt's output nodes reported: dicts with filename, subfolder, type."""
        return [image for out in self.history.get("outputs", {}).values() for image in out.get("images", [])]

    def texts(self, node_id: str) -> list[str]:
        """The text a node showed in the UI (``ui.PreviewText`` / ``{"text": [...]}``)."""
        return list(self.history.get("outputs", {}).get(node_id, {}).get("text", []))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _shadow_tree(tree: Path, shadow: Path) -> Path:
    """A folder that links every entry of ``tree`` except extra_model_paths.yaml, with a copy of main.py
    (main.py looks for that yaml next to its own real path)."""
    shadow.mkdir(parents=True)
    for entry in tree.iterdir():
        if entry.name in ("main.py", "extra_model_paths.yaml"):
            continue
        (shadow / entry.name).symlink_to(entry, target_is_directory=entry.is_dir())
    shutil.copy2(tree / "main.py", shadow / "main.py")
    return shadow


class ComfyServer:
    """Start with ``start()`` (or ``with ComfyServer(...) as server``), stop with ``stop()``.

    ``model_dirs``: ComfyUI model kind ("checkpoints", "diffusion_models", "text_encoders", "vae_approx",
    ...) -> folder. ``cpu``: pass --cpu. ``python``: the interpreter that runs main.py (ComfyUI's
    environment). ``tree``: the ComfyUI checkout (COMFYUI_PATH or .cache/comfyui).
    """

    def __init__(self, model_dirs: dict[str, Path] | None = None, cpu: bool = True, python: str | None = None,
                 tree: Path | None = None, root: Path | None = None, extra_args: tuple[str, ...] = ()) -> None:
        self.tree = Path(tree) if tree else comfy_root()
        self.model_dirs = {kind: Path(p).resolve() for kind, p in (model_dirs or {}).items()}
        self.cpu = cpu
        self.python = python or sys.executable
        self._own_root = root is None
        self.root = Path(root) if root else Path(tempfile.mkdtemp(prefix="sdtm-comfy-server-"))
        self.extra_args = tuple(extra_args)
        self.port = 0
        self.started_at = 0.0
        self.process: subprocess.Popen | None = None
        self.dirs = {name: self.root / name for name in ("user", "output", "temp", "input", "custom_nodes")}
        self.log_path = self.root / "server.log"

    # -- lifecycle ------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _write_config(self) -> Path:
        for folder in self.dirs.values():
            folder.mkdir(parents=True, exist_ok=True)
        link = self.dirs["custom_nodes"] / PACK_NAME
        if not link.exists():
            link.symlink_to(REPO, target_is_directory=True)
        settings = self.dirs["user"] / "default" / "comfy.settings.json"
        settings.parent.mkdir(parents=True, exist_ok=True)
        settings.write_text(json.dumps(FIRST_VISIT_SETTINGS))
        # extra_model_paths format: a named section, a base_path and kind: folder entries.
        lines = ["sdtm_server:", f"  base_path: {json.dumps(str(self.root))}",
                 f"  custom_nodes: {json.dumps(str(self.dirs['custom_nodes']))}"]
        lines += [f"  {kind}: {json.dumps(str(path))}" for kind, path in self.model_dirs.items()]
        config = self.root / "extra_model_paths.yaml"
        config.write_text("\n".join(lines) + "\n")
        return config

    def command(self) -> list[str]:
        config = self._write_config()
        d = self.dirs
        cmd = [self.python, "main.py", "--listen", "127.0.0.1", "--port", str(self.port),
               "--extra-model-paths-config", str(config),
               "--user-directory", str(d["user"]), "--output-directory", str(d["output"]),
               "--temp-directory", str(d["temp"]), "--input-directory", str(d["input"]),
               "--database-url", "sqlite:///:memory:", "--disable-api-nodes",
               "--disable-all-custom-nodes", "--whitelist-custom-nodes", PACK_NAME]
        if self.cpu:
            cmd.append("--cpu")
        return cmd + list(self.extra_args)

    def start(self, timeout: float = 180.0) -> "ComfyServer":
        """Start main.py and wait until it answers GET /system_stats; raises ServerError with the log's
        end if it exits or does not answer in ``timeout`` seconds."""
        if self.process is not None:
            raise ServerError("server already started")
        self.port = free_port()
        self.started_at = time.time()
        shadow = _shadow_tree(self.tree, self.root / f"comfyui-{uuid.uuid4().hex[:8]}")
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self._log = open(self.log_path, "wb")
        self.process = subprocess.Popen(self.command(), cwd=shadow, stdout=self._log, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                self.stop()
                raise ServerError(f"ComfyUI exited with code {self.process.returncode} while starting:\n"
                                  f"{self.log_tail()}")
            try:
                self.get("/system_stats", timeout=2)
                return self
            except (OSError, ServerError):
                time.sleep(0.5)
        self.stop()
        raise ServerError(f"ComfyUI did not answer within {timeout:.0f} s:\n{self.log_tail()}")

    def stop(self) -> None:
        """Stop the server process (SIGTERM, then SIGKILL) and remove its temporary root."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=20)
        if getattr(self, "_log", None) is not None:
            self._log.close()
            self._log = None

    def cleanup(self) -> None:
        self.stop()
        if self._own_root:
            shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> "ComfyServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.cleanup()

    def log_tail(self, chars: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    # -- HTTP -----------------------------------------------------------------------------------
    def request(self, method: str, path: str, body=None, timeout: float = 30.0) -> tuple[int, object]:
        """(HTTP status, decoded JSON or text) of one request to the server; never raises on 4xx/5xx."""
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"} if data else {})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                status, raw = resp.status, resp.read()
        except urllib.error.HTTPError as e:
            status, raw = e.code, e.read()
        try:
            return status, json.loads(raw)
        except ValueError:
            return status, raw.decode(errors="replace")

    def get(self, path: str, timeout: float = 30.0):
        status, body = self.request("GET", path, timeout=timeout)
        if status != 200:
            raise ServerError(f"GET {path}: HTTP {status}: {body}")
        return body

    def queue_prompt(self, prompt: dict, client_id: str | None = None) -> str:
        """POST /prompt; returns the prompt id or raises PromptError with the server's node_errors."""
        payload = {"prompt": prompt, **({"client_id": client_id} if client_id else {})}
        status, body = self.request("POST", "/prompt", payload)
        if status != 200:
            raise PromptError(f"ComfyUI refused the prompt (HTTP {status}): {describe_refusal(body)}", status,
                              body if isinstance(body, dict) else {"error": body})
        return body["prompt_id"]

    def wait(self, prompt_id: str, timeout: float = 600.0) -> dict:
        """Poll GET /history/<id> until the prompt has finished; its history entry."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            entry = self.get(f"/history/{prompt_id}").get(prompt_id)
            if entry and entry.get("status", {}).get("completed") is not None and \
                    entry["status"].get("status_str") in ("success", "error"):
                return entry
            if self.process is not None and self.process.poll() is not None:
                raise ServerError(f"ComfyUI exited while running {prompt_id}:\n{self.log_tail()}")
            time.sleep(0.25)
        raise ServerError(f"prompt {prompt_id} did not finish within {timeout:.0f} s")

    def run_prompt(self, prompt: dict, timeout: float = 600.0, node_timings: bool = False) -> PromptRun:
        """Queue a prompt, wait for it, and return its run; raises PromptError if it fails.
        ``node_timings``: also listen on the websocket and time each node (needs aiohttp)."""
        if node_timings:
            prompt_id, events = asyncio.run(self._run_with_events(prompt, timeout))
        else:
            prompt_id, events = self.queue_prompt(prompt), []
        entry = self.wait(prompt_id, timeout)
        status = entry.get("status", {})
        messages = {name: data for name, data in status.get("messages", [])}
        if status.get("status_str") != "success":
            error = messages.get("execution_error", {})
            raise PromptError(f"prompt {prompt_id} failed in node {error.get('node_id')} ({error.get('node_type')}): "
                              f"{error.get('exception_message', '').strip()}", None, entry)
        started = messages.get("execution_start", {}).get("timestamp")
        finished = messages.get("execution_success", {}).get("timestamp")
        seconds = (finished - started) / 1000.0 if started and finished else float("nan")
        cached = list(messages.get("execution_cached", {}).get("nodes", []))
        return PromptRun(prompt_id, entry, seconds, _node_seconds(events), cached)

    async def _run_with_events(self, prompt: dict, timeout: float) -> tuple[str, list]:
        """Queue the prompt while listening on /ws; (prompt id, [(time, type, data)]) until it ends."""
        import aiohttp
        client_id = uuid.uuid4().hex
        events: list = []
        async with aiohttp.ClientSession() as session:
            async with session.ws_connect(f"{self.url.replace('http', 'ws')}/ws?clientId={client_id}") as ws:
                prompt_id = await asyncio.to_thread(self.queue_prompt, prompt, client_id)
                deadline = time.monotonic() + timeout
                while time.monotonic() < deadline:
                    msg = await ws.receive(timeout=max(1.0, deadline - time.monotonic()))
                    if msg.type != aiohttp.WSMsgType.TEXT:
                        if msg.type in (aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR):
                            break
                        continue  # binary previews
                    message = json.loads(msg.data)
                    data = message.get("data", {})
                    if data.get("prompt_id") != prompt_id:
                        continue
                    events.append((time.perf_counter(), message["type"], data))
                    if message["type"] in ("execution_error", "execution_interrupted") or \
                            (message["type"] == "executing" and data.get("node") is None):
                        break
        return prompt_id, events

    def output_path(self, image: dict) -> Path:
        """Where an image that a history entry names lies on disk."""
        # main.py puts its temp folder under --temp-directory ("<that>/temp"), unlike the output and input ones
        base = {"output": self.dirs["output"], "temp": self.dirs["temp"] / "temp",
                "input": self.dirs["input"]}[image["type"]]
        return base / image.get("subfolder", "") / image["filename"]


def _node_seconds(events: list) -> dict[str, float]:
    """Seconds per node from the websocket's "executing" events: a node runs from its event to the next."""
    marks = [(t, data.get("node")) for t, kind, data in events if kind == "executing"]
    return {str(node): round(later - t, 4) for (t, node), (later, _) in zip(marks, marks[1:]) if node is not None}


def describe_refusal(body) -> str:
    """One line per problem from a POST /prompt refusal: the error, then each node's errors with the
    input name (ComfyUI's extra_info.input_name)."""
    if not isinstance(body, dict):
        return str(body)
    error = body.get("error", {})
    lines = ([f"{error.get('message', '')} {error.get('details', '')}".strip()] if isinstance(error, dict)
             else [str(error)])
    for node_id, info in body.get("node_errors", {}).items():
        for e in info.get("errors", []):
            name = e.get("extra_info", {}).get("input_name")
            lines.append(f"node {node_id} ({info.get('class_type')})" + (f" input {name}" if name else "")
                         + f": {e.get('message')}: {e.get('details')}")
    return "; ".join(line for line in lines if line)


# ---------------------------------------------------------------------------------------------
# Tiny stand-ins for the official model files
# ---------------------------------------------------------------------------------------------
# The tiny model family (harness.tiny_sd3 variant) that stands in for each official checkpoint.
STAND_INS = {"sd3_medium_incl_clips_t5xxlfp8.safetensors": "sd3-medium",
             "sd3.5_large_fp8_scaled.safetensors": "sd3.5-large",
             "sd3.5_large_turbo.safetensors": "sd3.5-large",
             "sd3.5_medium_incl_clips_t5xxlfp8scaled.safetensors": "sd3.5-medium"}


def stand_in_models(root: Path, model_files: dict[str, list[str]]) -> tuple[dict[str, Path], dict[str, str]]:
    """Model folders for a server that runs the workflows without the real models: checkpoints/ links
    to tiny random checkpoints (TAESD3 as their VAE) and text_encoders/ holds a random CLIP-L, beside
    empty files with the official names (``model_files``: kind -> names), so the server's node
    definitions offer them. Returns (kind -> folder, variant -> tiny checkpoint name)."""
    from .comfy_env import import_comfy
    from .tiny_sd3 import TINY_CLIP, cached_tiny_checkpoint, clip_l_state_dict, save_safetensors, tiny_cache_dir
    import_comfy()  # ComfyUI's classes build the random weights
    folders = {kind: Path(root) / kind for kind in ("checkpoints", "text_encoders")}
    for kind, folder in folders.items():
        folder.mkdir(parents=True, exist_ok=True)
        for name in model_files.get(kind, []):
            (folder / name).touch()
    tiny = {}
    for variant in sorted(set(STAND_INS.values())):
        path = cached_tiny_checkpoint(tiny_cache_dir(), variant, vae="taesd")
        (folders["checkpoints"] / path.name).symlink_to(path)
        tiny[variant] = path.name
    save_safetensors(clip_l_state_dict(), folders["text_encoders"] / TINY_CLIP)
    return folders, tiny


def with_stand_ins(prompt: dict, tiny: dict[str, str], size: int, max_steps: int, tag: str = "") -> dict:
    """An API prompt run on the stand-ins: each official checkpoint becomes the tiny one of its family, a
    TripleCLIPLoader (real CLIP-G and T5-XXL cannot be made tiny) a CLIPLoader of the random CLIP-L with
    type sd3; images ``size`` x ``size``, at most ``max_steps`` steps; ``tag`` appended to the prompt
    texts (a different tag keeps ComfyUI from reusing cached outputs of an earlier prompt)."""
    from .tiny_sd3 import TINY_CLIP
    prompt = json.loads(json.dumps(prompt))
    for node_id, node in prompt.items():
        inputs = node["inputs"]
        if node["class_type"] == "CheckpointLoaderSimple":
            inputs["ckpt_name"] = tiny[STAND_INS[inputs["ckpt_name"]]]
        elif node["class_type"] == "TripleCLIPLoader":
            prompt[node_id] = {"class_type": "CLIPLoader", "inputs": {"clip_name": TINY_CLIP, "type": "sd3"}}
        elif node["class_type"] == "EmptySD3LatentImage":
            inputs.update(width=size, height=size)
        elif node["class_type"] == "KSampler":
            inputs["steps"] = min(inputs["steps"], max_steps)
        elif node["class_type"] == "CLIPTextEncode" and tag:
            inputs["text"] += f" ({tag})"
    return prompt
