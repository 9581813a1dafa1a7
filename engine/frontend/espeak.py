"""Running the espeak-ng program: one long-lived process fed line by line, one-shot processes as fallback."""

from __future__ import annotations

import logging
import os
import select
import subprocess
import threading
import time
from collections.abc import Sequence

_LOGGER = logging.getLogger(__name__)

SENTINEL = "kwyjibo zaxqv"
"""A line sent after each batch to the long-lived process: its output marks the batch's end."""
BATCH_LINES = 16
"""Lines per round trip: small enough that input and output never fill the pipes (no deadlock)."""


class EspeakError(RuntimeError):
    """espeak-ng failed or gave output that cannot be matched to its input."""


class _Desync(Exception):
    """The long-lived process's output did not line up with its input."""


class EspeakRunner:
    """Runs an espeak-ng command over lines of text; returns its raw output, one line per input line."""

    def __init__(self, command: Sequence[str], timeout_s: float, persistent: bool = True):
        """Keep the command; the long-lived process starts on first use."""
        self.command = list(command)
        self.timeout_s = timeout_s
        self.persistent = persistent
        self._lock = threading.Lock()
        self._process: subprocess.Popen[bytes] | None = None
        self._buffer = b""
        self._sentinel_output: str | None = None
        self._owner_pid = os.getpid()

    def __getstate__(self) -> dict:
        """Pickle without the process or lock (a copy starts its own)."""
        state = self.__dict__.copy()
        state.update(_lock=None, _process=None, _buffer=b"")
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def run(self, lines: Sequence[str]) -> list[str]:
        """Output lines for the input lines (espeak-ng reads stdin a line at a time)."""
        with self._lock:
            if self.persistent:
                try:
                    return self._run_persistent(lines)
                except (_Desync, OSError, EspeakError) as exc:
                    _LOGGER.debug("espeak-ng long-lived process restarted: %s", exc)
                    self._stop()
            return self._run_oneshot(list(lines))

    def close(self) -> None:
        """Stop the long-lived process, if any."""
        with self._lock:
            self._stop()

    def __del__(self) -> None:
        try:
            self._stop()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass

    # --- the long-lived process -------------------------------------------------------------

    def _start(self) -> subprocess.Popen[bytes]:
        """Start the process and learn what the sentinel line reads as."""
        self._process = subprocess.Popen(self.command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                         stderr=subprocess.DEVNULL, bufsize=0)
        self._buffer = b""
        self._send([SENTINEL])
        self._sentinel_output = self._readline()
        return self._process

    def _stop(self) -> None:
        process, self._process = getattr(self, "_process", None), None
        if process is not None and getattr(self, "_owner_pid", None) == os.getpid():
            process.kill()
            process.wait()

    def _send(self, lines: Sequence[str]) -> None:
        assert self._process is not None and self._process.stdin is not None
        self._process.stdin.write("".join(f"{line}\n" for line in lines).encode("utf-8"))

    def _readline(self) -> str:
        """One output line, waiting at most timeout_s."""
        assert self._process is not None and self._process.stdout is not None
        deadline = time.monotonic() + self.timeout_s
        while b"\n" not in self._buffer:
            left = deadline - time.monotonic()
            ready, _, _ = select.select([self._process.stdout], [], [], max(0.0, left))
            if not ready:
                raise EspeakError(f"espeak-ng gave no output within {self.timeout_s} s")
            chunk = os.read(self._process.stdout.fileno(), 65536)
            if not chunk:
                raise EspeakError(f"espeak-ng exited (status {self._process.poll()})")
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        return line.decode("utf-8", "replace")

    def _run_persistent(self, lines: Sequence[str]) -> list[str]:
        """Feed batches of lines, each followed by the sentinel; read up to the sentinel's output."""
        if self._owner_pid != os.getpid():
            # A forked child must not share its parent's pipes: leave that process alone, start one.
            self._process, self._buffer, self._owner_pid = None, b"", os.getpid()
        if self._process is None or self._process.poll() is not None:
            self._start()
        out: list[str] = []
        for start in range(0, len(lines), BATCH_LINES):
            batch = lines[start:start + BATCH_LINES]
            self._send([*batch, SENTINEL])
            got: list[str] = []
            while (line := self._readline()) != self._sentinel_output:
                got.append(line)
                if len(got) > 4 * len(batch) + 8:
                    raise _Desync("runaway output")
            if len(got) != len(batch):
                # A line read as several clauses (or the sentinel text itself): redo this batch alone.
                self._stop()
                out.extend(self._run_oneshot(list(batch)))
                self._start()
            else:
                out.extend(got)
        return out

    # --- one process per call -------------------------------------------------------------------

    def _call(self, lines: list[str]) -> list[str]:
        """Run espeak-ng once over lines; its output lines."""
        payload = "".join(f"{line}\n" for line in lines).encode("utf-8")
        try:
            done = subprocess.run(self.command, input=payload, capture_output=True, timeout=self.timeout_s,
                                  check=False)
        except subprocess.TimeoutExpired as exc:
            raise EspeakError(f"espeak-ng took longer than {self.timeout_s} s on {len(lines)} lines") from exc
        if done.returncode != 0:
            detail = done.stderr.decode("utf-8", "replace").strip()
            raise EspeakError(f"espeak-ng exited with status {done.returncode}: {detail}")
        text = done.stdout.decode("utf-8", "replace")
        return text.split("\n")[:-1] if text else []

    def _run_oneshot(self, lines: list[str]) -> list[str]:
        """One output per input line; halve the batch where espeak-ng split a line into several clauses."""
        if not lines:
            return []
        output = self._call(lines)
        if len(output) == len(lines):
            return output
        if len(lines) == 1:
            return [" ".join(o for o in output if o)]
        middle = len(lines) // 2
        return self._run_oneshot(lines[:middle]) + self._run_oneshot(lines[middle:])
