"""The archive `comfy node publish` uploads to the Comfy Registry, built the way comfy-cli builds it, with
its size and file list.

comfy-cli (comfy_cli/file_utils.py ``zip_files``) zips, from the repository root, the files ``git
ls-files`` lists, minus those matching the patterns in ``.comfyignore`` (gitignore syntax: pathspec's
"gitwildmatch", one pattern a line, blank lines and lines starting with ``#`` skipped), plus whatever
``[tool.comfy] includes`` in pyproject.toml names (force-included even when ignored), with ZIP_DEFLATED.
It does not read ``.gitignore`` beyond what git already leaves untracked.

    python -m commands.registry_archive                 # build into a temporary folder, print size and files
    python -m commands.registry_archive -o sdtm.zip     # keep the archive
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import pathspec
import tomllib

REPO = Path(__file__).resolve().parents[1]
IGNORE_FILE = ".comfyignore"


def ignore_spec(root: Path = REPO) -> pathspec.PathSpec | None:
    """The .comfyignore patterns as comfy-cli reads them, or None when there are none."""
    path = root / IGNORE_FILE
    if not path.is_file():
        return None
    lines = path.read_text(encoding="utf-8").splitlines()
    patterns = [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
    return pathspec.PathSpec.from_lines("gitwildmatch", patterns) if patterns else None


def includes(root: Path = REPO) -> list[str]:
    """``[tool.comfy] includes`` of pyproject.toml, normalised as comfy-cli does (no leading /)."""
    config = tomllib.loads((root / "pyproject.toml").read_text(encoding="utf-8"))
    return [os.path.normpath(p.lstrip("/")).replace("\\", "/") for p in config.get("tool", {}).get("comfy", {})
            .get("includes", [])]


def tracked_files(root: Path = REPO) -> list[str]:
    """``git ls-files`` in ``root``: paths relative to it, with forward slashes."""
    try:
        out = subprocess.run(["git", "-C", str(root), "ls-files"], check=True, capture_output=True, text=True).stdout
    except (OSError, subprocess.CalledProcessError) as e:
        raise SystemExit(f"registry_archive: {root} must be a git checkout (comfy-cli zips git-tracked files): {e}")
    return [line for line in out.splitlines() if line.strip()]


def archive_members(root: Path = REPO) -> list[str]:
    """The paths the archive holds, in comfy-cli's order: tracked files not ignored, then the includes."""
    spec, forced = ignore_spec(root), includes(root)

    def ignored(path: str) -> bool:
        if any(path == p or path.startswith(p + "/") for p in forced if p):
            return False
        return bool(spec and spec.match_file(path))

    members = [p for p in tracked_files(root) if not ignored(p) and (root / p).exists()]
    seen = set(members)
    for include in forced:
        target = root / include
        found = [include] if target.is_file() else sorted(
            str(f.relative_to(root)).replace(os.sep, "/") for f in target.rglob("*") if f.is_file())
        for path in found:
            if path not in seen and not ignored(path):
                members.append(path)
                seen.add(path)
    return members


def build(zip_path: Path, root: Path = REPO) -> list[str]:
    """Write the archive to ``zip_path``; returns its member paths."""
    members = archive_members(root)
    with zipfile.ZipFile(zip_path, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in members:
            archive.write(root / path, path)
    return members


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m commands.registry_archive", description=__doc__.split("\n\n")[0])
    parser.add_argument("-o", "--output", help="where to write the archive (default: a temporary file, removed)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="sdtm-archive-") as scratch:
        zip_path = Path(args.output) if args.output else Path(scratch) / "node.zip"
        members = build(zip_path)
        with zipfile.ZipFile(zip_path) as archive:
            for info in archive.infolist():
                print(f"{info.file_size:>10,}  {info.filename}")
        size = zip_path.stat().st_size
        print(f"{len(members)} files, archive {size:,} bytes ({size / 2**20:.2f} MiB)"
              + (f": {zip_path}" if args.output else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
