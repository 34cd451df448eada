"""Session-scoped fixtures shared by the server and browser tests (tests/conftest.py registers this
module as a pytest plugin): one set of stand-in model files for the workflows' checkpoints, written
once, and one real ComfyUI server (main.py) serving them with this pack, started once per test session."""
import pytest

from commands import workflow_api as wa
from harness.comfy_server import ComfyServer, stand_in_models


@pytest.fixture(scope="session")
def models(tmp_path_factory):
    folders, tiny = stand_in_models(tmp_path_factory.mktemp("models"), wa.MODEL_FILES)
    return {"dirs": folders, "tiny": tiny}


@pytest.fixture(scope="session")
def server(models):
    with ComfyServer(models["dirs"]) as running:
        yield running
