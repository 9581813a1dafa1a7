"""Run the serving application on this machine: a local Ray, Serve's HTTP proxy, the Chorus app."""

from __future__ import annotations

import os
import tempfile

from chorus.serving.app import ServingArgs, build_app

APP_NAME = "chorus"


def start_local(args: ServingArgs, host: str = "127.0.0.1", port: int = 8000, num_cpus: int | None = None) -> str:
    """Start Ray and Serve here and deploy Chorus; returns the base URL once the app is ready."""
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # local only: no token file to manage
    os.environ.setdefault("RAY_TMPDIR", os.path.join(tempfile.gettempdir(), f"chorus-ray-{os.getuid()}"))
    # Ray starts its workers at nice 15; a replica then loses its cores to any other process (measured:
    # 0.78x Piper's throughput beside one busy loop, 0.92x at nice 0). Serving is this machine's job.
    os.environ.setdefault("RAY_worker_niceness", "0")
    # Serve's controller reconciles 10 times a second by default: 0.04 of a core on an idle server (measured:
    # Ray and the app idle at 0.16 cores, 0.12 at 0.5 s), taken from synthesis on a 2-core machine. Chorus
    # changes its deployments rarely; half a second is soon enough.
    os.environ.setdefault("RAY_SERVE_CONTROL_LOOP_INTERVAL_S", "0.5")
    import ray
    from ray import serve

    ray.init(num_cpus=num_cpus or os.cpu_count(), object_store_memory=100 * 2**20, log_to_driver=False,
             include_dashboard=False, logging_level="WARNING")
    serve.start(http_options={"host": host, "port": port})
    serve.run(build_app(args), name=APP_NAME, route_prefix="/")
    return f"http://{host}:{port}"


def stop_local() -> None:
    """Shut Serve and Ray down."""
    import ray
    from ray import serve

    serve.shutdown()
    ray.shutdown()
