"""Module-scoped fixtures shared by the server and browser tests: stand-in model files for the
workflows' checkpoints, and the real ComfyUI server (main.py) serving them with this pack."""
import pytest

from tools import workflow_api as wa
from tools.comfy_server import ComfyServer, stand_in_models


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    folders, tiny = stand_in_models(tmp_path_factory.mktemp("models"), wa.MODEL_FILES)
    return {"dirs": folders, "tiny": tiny}


@pytest.fixture(scope="module")
def server(models):
    with ComfyServer(models["dirs"]) as running:
        yield running
