"""The operator as a child process (`python -m chorus.operator`), for integration tests and benchmarks.

kopf's own KopfRunner registers handlers in the calling process and cannot run twice there, and a
real deployment runs the operator as its own process anyway: so tests start exactly that.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from importlib import resources
from pathlib import Path

CRD_FILES = ("voicetenants.chorus.dev.yaml", "kopf-peering.yaml")


def crd_paths() -> list[Path]:
    """The CRD files the operator needs installed (VoiceTenant, kopf's ClusterKopfPeering)."""
    folder = resources.files("chorus.operator").joinpath("crds")
    return [Path(str(folder.joinpath(name))) for name in CRD_FILES]


class OperatorProcess:
    """Start, signal and read the log of one operator process; a context manager that always stops it."""

    def __init__(self, kubeconfig: Path, log_path: Path, settings: dict[str, str] | None = None,
                 python: str = sys.executable) -> None:
        self.kubeconfig = Path(kubeconfig)
        self.log_path = Path(log_path)
        self.settings = {"KUBECONFIG": "", "CHORUS_OPERATOR_KUBECONFIG": str(self.kubeconfig),
                         **{f"CHORUS_OPERATOR_{k.upper()}": str(v) for k, v in (settings or {}).items()}}
        self.python = python
        self.process: subprocess.Popen | None = None
        self._log = None
        self._cwd: str | None = None

    def __enter__(self) -> OperatorProcess:
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def start(self) -> OperatorProcess:
        """Start the operator, appending to log_path; returns as soon as the process runs."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "ab")
        # Run from an empty folder: the repository root holds an `operator/` folder that would
        # shadow the standard library's `operator` module for `python -c` style invocations.
        self._cwd = tempfile.mkdtemp(prefix="chorus-operator-cwd-")
        self.process = subprocess.Popen(
            [self.python, "-m", "chorus.operator"], cwd=self._cwd, env={**os.environ, **self.settings},
            stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        return self

    @property
    def pid(self) -> int:
        """The operator's process id."""
        if self.process is None:
            raise RuntimeError("the operator was not started")
        return self.process.pid

    def running(self) -> bool:
        """True while the process is alive."""
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        """SIGKILL: a crash, with no cleanup at all."""
        if self.running():
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)

    def stop(self, timeout: float = 15.0) -> int | None:
        """SIGTERM, then SIGKILL after timeout; returns the exit code."""
        if self.process is None:
            return None
        if self.running():
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        if self._log:
            self._log.close()
            self._log = None
        if self._cwd:
            shutil.rmtree(self._cwd, ignore_errors=True)
            self._cwd = None
        return self.process.returncode

    def log_text(self) -> str:
        """Everything the operator has logged so far."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def wait_for_log(self, fragment: str, timeout: float = 60.0) -> None:
        """Block until fragment appears in the log; raise with the log tail if the process dies or time runs out."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if fragment in self.log_text():
                return
            if not self.running():
                raise RuntimeError(f"operator exited with {self.process.returncode}:\n{self.log_text()[-3000:]}")
            time.sleep(0.2)
        raise TimeoutError(f"no {fragment!r} in the operator log after {timeout}s:\n{self.log_text()[-3000:]}")

    def rss_bytes(self) -> int:
        """Resident memory of the operator process (from /proc)."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise RuntimeError("VmRSS not found")
