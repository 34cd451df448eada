"""Did [project] version in pyproject.toml change between two git revisions?

    python .github/scripts/version_changed.py BEFORE AFTER

Prints ``changed=true`` or ``changed=false`` (the line publish.yml appends to $GITHUB_OUTPUT) and the two
versions on stderr. pyproject.toml also holds ruff's and the Registry's settings, so only the version
counts. A BEFORE that git does not have (the all-zero SHA of a new branch, a force-pushed-away commit) or
that has no pyproject.toml counts as changed. Run it inside the repository (python 3.11+, for tomllib).
"""
from __future__ import annotations

import subprocess
import sys

import tomllib

PYPROJECT = "pyproject.toml"


def project_version(text: str | None) -> str | None:
    """[project] version of a pyproject.toml text; None for no text."""
    return None if text is None else tomllib.loads(text)["project"]["version"]


def pyproject_at(revision: str) -> str | None:
    """pyproject.toml as committed at ``revision``; None if git has no such revision or file."""
    shown = subprocess.run(["git", "show", f"{revision}:{PYPROJECT}"], capture_output=True, text=True)
    return shown.stdout if shown.returncode == 0 else None


def version_changed(before: str | None, after: str) -> bool:
    """True unless both texts carry the same [project] version (no previous text counts as a change)."""
    return before is None or project_version(before) != project_version(after)


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        sys.stderr.write(__doc__)
        return 2
    before, after = (pyproject_at(revision) for revision in argv)
    if after is None:
        sys.stderr.write(f"{argv[1]} has no {PYPROJECT}\n")
        return 2
    changed = version_changed(before, after)
    sys.stderr.write(f"version {project_version(before)} -> {project_version(after)}\n")
    sys.stdout.write(f"changed={str(changed).lower()}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
