"""The release path: .github/workflows/publish.yml publishes to the Comfy Registry on a push to main that
touches pyproject.toml (or by hand), and only when .github/scripts/version_changed.py, run for real on git
repositories made here, finds a new [project] version (a ruff-only edit publishes nothing); CHANGELOG.md
has an entry for the version being published, newest first. That every workflow node carries that version
is test_workflows' test_every_node_names_its_pack_and_every_loader_its_downloads."""
import re
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib
import yaml

REPO = Path(__file__).resolve().parents[1]
WORKFLOW = REPO / ".github" / "workflows" / "publish.yml"
SCRIPT = REPO / ".github" / "scripts" / "version_changed.py"
PYPROJECT = (REPO / "pyproject.toml").read_text()
VERSION = tomllib.loads(PYPROJECT)["project"]["version"]
ZERO_SHA = "0" * 40  # github.event.before when a push creates the branch


@pytest.fixture(scope="module")
def workflow() -> dict:
    return yaml.safe_load(WORKFLOW.read_text())


def test_publish_runs_on_a_push_to_main_that_touches_pyproject_or_by_hand(workflow):
    triggers = workflow.get("on", workflow.get(True))  # YAML 1.1 reads a bare `on` key as True
    assert set(triggers) == {"push", "workflow_dispatch"}
    assert triggers["push"]["branches"] == ["main"]
    assert triggers["push"]["paths"] == ["pyproject.toml"]


def test_publish_waits_for_the_version_check_and_publishes_only_on_a_change_or_by_hand(workflow):
    jobs = workflow["jobs"]
    assert "comfyui-sdtm" in jobs["version"]["if"] and "repository_owner" in jobs["version"]["if"]
    compare = next(step for step in jobs["version"]["steps"] if step.get("id") == "compare")
    assert ".github/scripts/version_changed.py" in compare["run"] and "$GITHUB_OUTPUT" in compare["run"]
    assert jobs["version"]["outputs"]["changed"] == "${{ steps.compare.outputs.changed }}"
    publish = jobs["publish"]
    assert publish["needs"] in ("version", ["version"])
    condition = publish["if"]
    assert "needs.version.outputs.changed == 'true'" in condition
    assert "github.event_name == 'workflow_dispatch'" in condition


def test_publish_uses_the_registry_action_with_the_repository_token(workflow):
    (step,) = [s for s in workflow["jobs"]["publish"]["steps"] if "publish-node-action" in s.get("uses", "")]
    assert step["uses"].startswith("Comfy-Org/publish-node-action@")
    assert step["with"] == {"personal_access_token": "${{ secrets.REGISTRY_ACCESS_TOKEN }}"}


# -- the version guard, on real git repositories ----------------------------------------------
def git(repo: Path, *args: str) -> str:
    command = ["git", "-c", "user.name=test", "-c", "user.email=test@example.invalid", "-c", "commit.gpgsign=false"]
    return subprocess.run(command + list(args), cwd=repo, check=True, capture_output=True, text=True).stdout


def commit(repo: Path, text: str | None, message: str) -> str:
    """Commit pyproject.toml with ``text`` (None: a commit without it); the new commit's SHA."""
    path = repo / "pyproject.toml"
    if text is None:
        (repo / "README.md").write_text(message)
        git(repo, "add", "README.md")
    else:
        path.write_text(text)
        git(repo, "add", "pyproject.toml")
    git(repo, "commit", "-q", "-m", message)
    return git(repo, "rev-parse", "HEAD").strip()


def guard(repo: Path, before: str, after: str = "HEAD") -> str:
    done = subprocess.run([sys.executable, str(SCRIPT), before, after], cwd=repo, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.fixture
def repo(tmp_path) -> Path:
    git(tmp_path, "init", "-q")
    return tmp_path


def test_a_new_version_publishes(repo):
    first = commit(repo, PYPROJECT, "release")
    commit(repo, PYPROJECT.replace(f'version = "{VERSION}"', 'version = "99.0.0"', 1), "bump")
    assert guard(repo, first) == "changed=true\n"


def test_an_edit_of_ruffs_settings_alone_publishes_nothing(repo):
    assert "line-length = 120" in PYPROJECT
    first = commit(repo, PYPROJECT, "release")
    commit(repo, PYPROJECT.replace("line-length = 120", "line-length = 100", 1), "ruff")
    assert guard(repo, first) == "changed=false\n"


def test_the_whole_push_counts_not_only_its_last_commit(repo):
    first = commit(repo, PYPROJECT, "release")
    bumped = PYPROJECT.replace(f'version = "{VERSION}"', 'version = "99.0.0"', 1)
    commit(repo, bumped, "bump")
    commit(repo, bumped.replace("line-length = 120", "line-length = 100", 1), "ruff")
    assert guard(repo, first) == "changed=true\n"
    assert guard(repo, "HEAD^") == "changed=false\n"


def test_no_previous_pyproject_publishes(repo):
    before = commit(repo, None, "before the pack had a pyproject.toml")
    commit(repo, PYPROJECT, "release")
    assert guard(repo, before) == "changed=true\n"
    assert guard(repo, ZERO_SHA) == "changed=true\n"  # a push that creates main


# -- the changelog ----------------------------------------------------------------------------
def test_the_changelog_has_this_version_and_the_first_newest_first():
    headings = re.findall(r"^## \[(\d+\.\d+\.\d+)\] - (\d{4}-\d{2}-\d{2})$", (REPO / "CHANGELOG.md").read_text(),
                          flags=re.MULTILINE)
    versions = [version for version, _ in headings]
    assert versions[0] == VERSION and "0.1.0" in versions
    keys = [tuple(int(part) for part in version.split(".")) for version in versions]
    assert keys == sorted(keys, reverse=True) and len(set(keys)) == len(keys)
    dates = [date for _, date in headings]
    assert dates == sorted(dates, reverse=True)
