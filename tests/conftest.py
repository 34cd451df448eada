import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# Appended, not prepended: ComfyUI's top-level "nodes" module must win over this repo's nodes/ package.
if str(REPO) not in sys.path:
    sys.path.append(str(REPO))
TESTS = Path(__file__).resolve().parent
if str(TESTS) not in sys.path:
    sys.path.append(str(TESTS))

# The shared server and stand-in models (session-scoped fixtures) for every test module that asks for them.
pytest_plugins = ["server_fixtures"]


@pytest.fixture(scope="session")
def photo_fixture_setup():
    """(pack, MODEL, CLIP) of the photo fixture through ComfyUI's loaders, with the progress bar off."""
    from harness.comfy_env import import_comfy, load_pack
    from photo_fixture import photo_codec
    import_comfy()
    import comfy.utils
    progress_bar = comfy.utils.PROGRESS_BAR_ENABLED
    comfy.utils.PROGRESS_BAR_ENABLED = False
    pack = load_pack()
    model, clip = photo_codec.load_fixture()
    yield pack, model, clip
    comfy.utils.PROGRESS_BAR_ENABLED = progress_bar
