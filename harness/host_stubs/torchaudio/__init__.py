"""A stub of torchaudio for the 0.33.0 test host only (see harness/host_stubs/README.md): importing it and its
submodules works; using anything in them raises AttributeError naming the stub (``from torchaudio.x import y``:
ImportError)."""
from __future__ import annotations

import importlib.machinery
import sys
import types

__version__ = "0.0.0+sdtm-test-stub"
STUB = True


def _missing(module: str, name: str):
    if name.startswith("__"):
        raise AttributeError(name)
    raise AttributeError(f"{module}.{name}: torchaudio is a stub in this test host (harness/host_stubs); "
                      "audio models are not available here")


def __getattr__(name: str):
    return _missing(__name__, name)


class _StubModule(types.ModuleType):
    def __getattr__(self, name: str):
        return _missing(self.__name__, name)


for _sub in ("functional", "transforms", "io", "models", "pipelines", "utils", "compliance", "compliance.kaldi"):
    _full = f"{__name__}.{_sub}"
    _module = _StubModule(_full)
    _module.__spec__ = importlib.machinery.ModuleSpec(_full, None)
    _module.__path__ = []
    sys.modules[_full] = _module
    if "." not in _sub:
        globals()[_sub] = _module
sys.modules[f"{__name__}.compliance"].kaldi = sys.modules[f"{__name__}.compliance.kaldi"]
