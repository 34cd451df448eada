import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# Appended, not prepended: ComfyUI's top-level "nodes" module must win over this repo's nodes/ package.
if str(REPO) not in sys.path:
    sys.path.append(str(REPO))
TESTS = Path(__file__).resolve().parent
if str(TESTS) not in sys.path:
    sys.path.append(str(TESTS))

# The shared server and stand-in models (session-scoped fixtures) for every test module that asks for them.
pytest_plugins = ["server_fixtures"]
