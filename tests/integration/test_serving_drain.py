"""`chorus serve` stops without breaking a request: SIGTERM drains the requests in flight first.

A rolling update (helm upgrade) sends SIGTERM to a serving pod while clients still hold kept-alive
connections to it through the Service's NAT. The real CLI runs here as its own process with its own
Ray; three clients with kept-alive connections stream speech from it; SIGTERM arrives mid-traffic.
Every request must come back whole, each client must be told `Connection: close` (so its next
request would reconnect to a pod that stays), and the process must exit 0 once nothing is in flight.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import pytest
import yaml

pytestmark = [pytest.mark.integration]

TEXT = "A rolling update must not cut this sentence off in the middle, however long it takes to say."


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_sigterm_finishes_requests_in_flight_tells_clients_to_reconnect_and_exits(tmp_path: Path):
    key = "sk-drain-" + "k" * 32
    tenants = tmp_path / "tenants.yaml"
    tenants.write_text(yaml.safe_dump({"tenants": [
        {"name": "drain", "apiKeySha256": hashlib.sha256(key.encode()).hexdigest(),
         "limits": {"requestsPerMinute": 10_000, "maxConcurrent": 8}}]}))
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    log = tmp_path / "serve.log"
    ray_tmp = tempfile.mkdtemp(prefix="chorus-drain-", dir="/tmp")  # Ray's socket paths must stay short
    env = {**os.environ, "RAY_TMPDIR": ray_tmp, "PYTHONSAFEPATH": "1"}
    with log.open("w") as out:
        proc = subprocess.Popen([str(Path(sys.executable).parent / "chorus"), "serve", "--tenants", str(tenants),
                                 "--port", str(port), "--threads", "1", "--drain-seconds", "30"],
                                stdout=out, stderr=subprocess.STDOUT, env=env)
    try:
        deadline = time.monotonic() + 240
        while True:
            assert proc.poll() is None, f"chorus serve exited ({proc.returncode}):\n{log.read_text()[-3000:]}"
            try:
                if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, f"not ready in 240 s:\n{log.read_text()[-3000:]}"
            time.sleep(1)

        outcomes: list[tuple[int, str, int, str]] = []  # (client, outcome, bytes, connection header)
        lock = threading.Lock()
        done = threading.Event()

        def client(n: int) -> None:
            body = {"model": "chorus", "input": TEXT, "voice": "default", "response_format": "wav"}
            with httpx.Client(timeout=60, headers={"Authorization": f"Bearer {key}"}) as c:
                for _ in range(40):  # bounded
                    try:
                        with c.stream("POST", f"{url}/v1/audio/speech", json=body) as r:
                            data = r.read()
                            outcome = "ok" if r.status_code == 200 else f"HTTP {r.status_code}"
                            connection = r.headers.get("connection", "")
                    except httpx.HTTPError as exc:
                        outcome, data, connection = f"{type(exc).__name__}: {exc}", b"", ""
                    with lock:
                        outcomes.append((n, outcome, len(data), connection))
                    if connection.lower() == "close" or outcome != "ok":
                        return  # told to go elsewhere (or failed): a Service would send the next one to another pod
                    if done.is_set():
                        return

        threads = [threading.Thread(target=client, args=(n,), daemon=True) for n in range(3)]
        for t in threads:
            t.start()
        while sum(o[1] == "ok" for o in outcomes) < 4:
            assert time.monotonic() < deadline + 120, f"no traffic: {outcomes}"
            time.sleep(0.05)
        sigterm_at = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        for t in threads:
            t.join(timeout=90)
        done.set()
        rc = proc.wait(timeout=90)
        stopped_s = time.monotonic() - sigterm_at
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        shutil.rmtree(ray_tmp, ignore_errors=True)
    text = log.read_text()
    print(f"{len(outcomes)} requests; stopped {stopped_s:.1f} s after SIGTERM; log tail:\n{text[-600:]}")
    failed = [o for o in outcomes if o[1] != "ok" or o[2] <= 44]
    assert not failed, f"requests broken by the stop: {failed}\n{text[-2000:]}"
    last = {o[0]: o for o in outcomes}  # each client's final answer
    assert all(o[3].lower() == "close" for o in last.values()), f"a client was not told to reconnect: {last}"
    assert rc == 0, f"chorus serve exited {rc}:\n{text[-2000:]}"
    assert "drained: no request in flight" in text, text[-2000:]
