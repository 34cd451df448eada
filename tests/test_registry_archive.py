"""The Comfy Registry archive (commands/registry_archive.py builds it as `comfy node publish` does): it holds
what ComfyUI loads plus README, LICENSE, pyproject.toml, requirements.txt, the icon and the workflows,
nothing of the tests, benchmarks, docs, tooling (commands, harness, photo fixture) or CI, fits in
1.5 MiB, and ComfyUI's own custom-node loader loads the pack from it under the Registry's folder name."""
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import tomllib

from commands import registry_archive

REPO = Path(__file__).resolve().parents[1]
RUNTIME_DIRS = ("nodes/", "sdtm_ops/", "web/", "workflows/")
TOP_FILES = ("__init__.py", "README.md", "LICENSE", "pyproject.toml", "requirements.txt")
LEFT_OUT = ("tests/", "benchmarks/", "docs/", "commands/", "harness/", "photo_fixture/", ".ci/")
MAX_BYTES = int(1.5 * 2**20)


@pytest.fixture(scope="module")
def archive(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("registry") / "node.zip"
    registry_archive.build(path)
    return path


def test_the_archive_holds_what_comfyui_loads_and_nothing_of_the_development_tree(archive):
    with zipfile.ZipFile(archive) as z:
        names = set(z.namelist())
    tracked = registry_archive.tracked_files()
    needed = {p for p in tracked if p.startswith(RUNTIME_DIRS) and "__pycache__" not in p} | set(TOP_FILES)
    assert needed - names == set()
    assert any(n.startswith("workflows/api/") for n in names) and any(n.endswith(".jpg") for n in names)
    assert sorted(n for n in names if n.startswith(LEFT_OUT)) == []
    assert archive.stat().st_size <= MAX_BYTES, f"{archive.stat().st_size:,} bytes"


def test_the_registry_icon_ships_and_the_pyproject_points_at_it(archive):
    icon_url = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["comfy"]["Icon"]
    icon = icon_url.rsplit("/main/", 1)[-1]
    assert icon_url.startswith("https://raw.githubusercontent.com/") and (REPO / icon).is_file()
    with zipfile.ZipFile(archive) as z:
        assert icon in z.namelist()


def test_comfyui_loads_the_pack_from_the_archive_under_its_registry_name(archive, tmp_path):
    """A fresh ComfyUI process loads the unpacked archive as custom_nodes/<Registry id>: nothing it
    imports was left out, and its relative imports do not depend on the folder name."""
    registry_id = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["name"]
    folder = tmp_path / "custom_nodes" / registry_id
    with zipfile.ZipFile(archive) as z:
        z.extractall(folder)
    script = (
        "import asyncio, json, sys\n"
        f"sys.path.append({str(REPO)!r})\n"
        "from harness.comfy_env import import_comfy\n"
        "nodes = import_comfy()\n"
        f"ok = asyncio.run(nodes.load_custom_node({str(folder)!r}))\n"
        "print(json.dumps({'ok': ok, 'nodes': sorted(k for k in nodes.NODE_CLASS_MAPPINGS if k.startswith('SDTM'))}))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    loaded = json.loads(done.stdout.strip().splitlines()[-1])
    assert loaded == {"ok": True, "nodes": ["SDTM_Apply", "SDTM_ApplyAdvanced", "SDTM_MergeMap", "SDTM_RunReport"]}


def test_the_archive_carries_the_node_docs_pages_and_their_pictures_and_nothing_else_new_in_web(archive):
    """The editor's docs panel reads web/js/docs from the installed pack: every page and picture node_docs writes
    is in the archive, and web/ holds nothing else but the Run Report's script."""
    with zipfile.ZipFile(archive) as z:
        names = set(z.namelist())
    written = {p.relative_to(REPO).as_posix() for p in (REPO / "web" / "js" / "docs").rglob("*") if p.is_file()}
    assert written and {n for n in names if n.startswith("web/js/docs/")} == written
    assert {n for n in names if n.startswith("web/") and n not in written} == {"web/js/sdtm_run_report.js"}
