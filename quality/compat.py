"""Import third-party modules that still do `import pkg_resources` (gone from setuptools >= 81).

PyPI `pyworld` 0.3.5 and `webrtcvad` 2.0.10 (Resemblyzer's VAD) are their latest releases and both
run `pkg_resources.get_distribution(name).version` at import time, only to set `__version__`.
Where `pkg_resources` is missing, `import_legacy` provides a stub with just that function (answered
by importlib.metadata) for the duration of the import, then removes it again so nothing else
mistakes it for setuptools.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import threading
import types
from collections.abc import Iterator
from contextlib import contextmanager

_lock = threading.Lock()


def _dist_version(name: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return "unknown"


@contextmanager
def _pkg_resources_stub() -> Iterator[None]:
    if "pkg_resources" in sys.modules or importlib.util.find_spec("pkg_resources") is not None:
        yield
        return
    stub = types.ModuleType("pkg_resources")
    stub.get_distribution = lambda name: types.SimpleNamespace(version=_dist_version(name))
    sys.modules["pkg_resources"] = stub
    try:
        yield
    finally:
        if sys.modules.get("pkg_resources") is stub:
            del sys.modules["pkg_resources"]


def import_legacy(name: str) -> types.ModuleType:
    """Import a module, supplying a temporary `pkg_resources.get_distribution` if setuptools lacks it."""
    with _lock, _pkg_resources_stub():
        return importlib.import_module(name)
