"""`chorus serve`: run the serving tier locally (Ray Serve on this machine) over a tenants file or Kubernetes."""

from __future__ import annotations

import argparse
import json
import os
import signal
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path


def register(subparsers) -> None:
    """Add `chorus serve` and `chorus demo`."""
    p = subparsers.add_parser("serve", help="serve the speech API on this machine (Ray Serve)",
                              description="Start a local Ray, Serve's HTTP proxy and the Chorus application.")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--tenants", type=Path, help="YAML file of tenants, key hashes and voices (watched)")
    source.add_argument("--kubernetes-namespace", help="read tenants from the operator's records in this namespace")
    p.add_argument("--kubeconfig", type=Path, help="kubeconfig (default: KUBECONFIG, then in-cluster)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    p.add_argument("--replicas", type=int, default=1, help="synthesis replicas")
    p.add_argument("--threads", type=int, default=2, help="ONNX Runtime threads per synthesis")
    p.add_argument("--voice-cache-mb", type=float, default=256.0, help="merged voices kept per replica (MB)")
    p.add_argument("--drain-seconds", type=float, default=30.0,
                   help="on SIGTERM, wait up to this long for requests in flight before stopping (default 30)")
    p.set_defaults(func=run)
    d = subparsers.add_parser("demo", help="the local platform with a demo tenant (what `make run` does)",
                              description="Train (once) a demo voice, serve it with the base voice, synthesise "
                                          "a sentence in each over HTTP into out/, score them, keep serving.")
    d.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    d.add_argument("--out", type=Path, default=Path("out"), help="where the demo audio goes")
    d.add_argument("--text", default=None, help="the demo sentence")
    d.add_argument("--no-wait", action="store_true", help="stop after the demo instead of serving until Ctrl-C")
    d.set_defaults(func=run_demo)


def wait_for_interrupt() -> None:
    """Block until Ctrl-C or SIGTERM."""
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()


def drain(url: str, drain_file: Path, timeout_s: float, quiet_s: float = 1.0) -> None:
    """Create the drain file, then wait until no request has been in flight for `quiet_s` (at most `timeout_s`).

    From the moment the file exists the ingress answers every request with `Connection: close` and
    `/readyz` with 503 and its count of requests in flight (chorus.serving.api.Drain).
    """
    drain_file.touch()
    deadline = time.monotonic() + timeout_s
    shown = None
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/readyz", timeout=2) as r:  # 200: the ingress has not seen it yet
                report = {"inFlight": None}
        except urllib.error.HTTPError as exc:
            report = json.loads(exc.read() or b"{}")
        except OSError:
            return  # nothing answers: nothing to wait for
        in_flight = report.get("inFlight")
        if in_flight == 0 and report.get("idleSeconds", 0) >= quiet_s:
            print("drained: no request in flight", flush=True)
            return
        if in_flight != shown and in_flight is not None:
            print(f"draining: {in_flight} request(s) in flight", flush=True)
            shown = in_flight
        time.sleep(0.2)
    print(f"drain: requests still in flight after {timeout_s:g} s; stopping anyway", flush=True)


def run(args: argparse.Namespace) -> int:
    """`chorus serve`."""
    from chorus.serving.api import DRAIN_FILE_ENV
    from chorus.serving.app import ServingArgs
    from chorus.serving.local import start_local, stop_local

    serving = ServingArgs(tenants_file=args.tenants, kubernetes_namespace=args.kubernetes_namespace,
                          kubeconfig=args.kubeconfig, synthesis_replicas=args.replicas, threads=args.threads,
                          voice_cache_mb=args.voice_cache_mb)
    # The ingress replicas (Ray workers, children of this process) inherit the variable.
    drain_file = Path(tempfile.gettempdir()) / f"chorus-drain-{os.getpid()}"
    drain_file.unlink(missing_ok=True)
    os.environ[DRAIN_FILE_ENV] = str(drain_file)
    url = start_local(serving, args.host, args.port)
    print(f"Chorus is serving at {url} (playground: {url}/, API docs: {url}/docs); Ctrl-C stops it", flush=True)
    local = f"http://127.0.0.1:{args.port}" if args.host in ("0.0.0.0", "::", "") else url
    try:
        wait_for_interrupt()
        print("stopping: finishing the requests in flight", flush=True)
        drain(local, drain_file, args.drain_seconds)
    finally:
        stop_local()
        drain_file.unlink(missing_ok=True)
    return 0


def run_demo(args: argparse.Namespace) -> int:
    """`chorus demo`."""
    from chorus.serving.demo import run_demo as demo

    return demo(args.out, args.port, args.text, wait=not args.no_wait)
