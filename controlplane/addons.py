"""Cluster add-ons for the real test node, run on the host: metrics-server and KubeRay's operator.

Both are built from their Go modules by controlplane/build-addons.sh (cached beside the control
plane's binaries; `ensure_addons()` runs it, a few milliseconds when up to date).

- `MetricsServer(control_plane, node)`: the resource metrics API (metrics.k8s.io) the HPA reads.
  metrics-server listens on the node's IP (a host address the API server can reach); the
  aggregation layer (kube-apiserver --requestheader-*/--proxy-client-*, --enable-aggregator-routing,
  see chorus.controlplane.cluster) proxies /apis/metrics.k8s.io to it through an APIService, a
  Service without selector and an Endpoints object naming that address. It scrapes the kubelet's
  /metrics/resource at the node's InternalIP (the kubelet's serving cert is self-signed, hence
  --kubelet-insecure-tls). `stop()` deletes the APIService first: an unavailable aggregated API
  would break discovery (and namespace deletion) for everything else in the session.
- `KubeRayOperator(control_plane)`: KubeRay's CRDs (server-side apply: they are too big for the
  last-applied annotation) and its operator, with the admin kubeconfig, reaching Ray heads through
  the API server's service proxy (--use-kubernetes-proxy: the host has no cluster DNS).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
from pathlib import Path

from chorus.controlplane.binaries import require_binaries
from chorus.controlplane.cluster import ControlPlane, ControlPlaneError, _Component, wait_crds_established

BUILD_SCRIPT = Path(__file__).with_name("build-addons.sh")
METRICS_SERVER_VERSION = "v0.9.0"
KUBERAY_VERSION = "v1.5.0"
METRICS_NAMESPACE = "kube-system"
METRICS_SERVICE = "chorus-metrics-server"
METRICS_APISERVICE = "v1beta1.metrics.k8s.io"
LOG_TAIL_LINES = 40


class AddonError(RuntimeError):
    """An add-on failed to build, start or become available; the message carries its log tail."""


def _log(msg: str) -> None:
    print(f"[chorus.controlplane.addons] {msg}", flush=True)


def ensure_addons(*names: str, bin_dir: Path | None = None) -> tuple[Path, float]:
    """Build (or find cached) the named add-ons; returns (bin dir, seconds it took).

    Runs build-addons.sh, whose progress lines go to this process's stderr. A cold build takes
    minutes (see charts/chorus/README.md), an up-to-date check milliseconds.
    """
    started = time.monotonic()
    env = dict(os.environ)
    if bin_dir is not None and bin_dir.parent.parent.name == "controlplane":
        env.setdefault("CHORUS_CACHE", str(bin_dir.parent.parent.parent))
    result = subprocess.run(["bash", str(BUILD_SCRIPT), *names], stdout=subprocess.PIPE, text=True, env=env)
    if result.returncode != 0:
        raise AddonError(f"controlplane/build-addons.sh {' '.join(names)} failed (exit {result.returncode}); "
                         "its progress lines above say where")
    return Path(result.stdout.strip().splitlines()[-1]), time.monotonic() - started


def _free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class _HostProcess:
    """One add-on process on the host, its log in a file, killed with the test process."""

    name = ""

    def __init__(self, cp: ControlPlane, workdir: Path) -> None:
        self.cp = cp
        self.workdir = workdir
        self.component: _Component | None = None
        self.startup_s = 0.0

    def _spawn(self, binary: Path, args: list[str], env: dict[str, str] | None = None) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.component = _Component.spawn(self.name, [str(binary), *args], self.workdir / f"{self.name}.log",
                                          self.workdir, env=env)

    def tail(self, lines: int = LOG_TAIL_LINES) -> str:
        """The last lines of the add-on's log."""
        return self.component.tail(lines) if self.component else "(not started)"

    def _check_alive(self) -> None:
        c = self.component
        if c is not None and c.process.poll() is not None:
            raise AddonError(f"{self.name} exited with code {c.process.returncode}; log {c.log_path}:\n{self.tail()}")

    @property
    def running(self) -> bool:
        """True while the process is alive."""
        return self.component is not None and self.component.process.poll() is None

    def _terminate(self, timeout: float = 5.0) -> None:
        c = self.component
        if c is None:
            return
        if c.process.poll() is None:
            c.process.terminate()
            try:
                c.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                c.process.kill()
                c.process.wait()
        c.log_file.close()
        self.component = None


class MetricsServer(_HostProcess):
    """metrics-server on the host, registered as the cluster's metrics.k8s.io API; a context manager."""

    name = "metrics-server"

    def __init__(self, cp: ControlPlane, node_ip: str, workdir: Path, resolution_s: int = 10,
                 bin_dir: Path | None = None) -> None:
        super().__init__(cp, workdir)
        self.binary = require_binaries(bin_dir or cp.bin_dir, ("metrics-server",))["metrics-server"]
        self.node_ip = node_ip
        self.resolution_s = resolution_s
        self.port = 0

    def __enter__(self) -> MetricsServer:
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def start(self, timeout: float = 120.0) -> MetricsServer:
        """Start it, register the APIService and wait until the node's metrics are served."""
        started = time.monotonic()
        self.port = _free_port(self.node_ip)
        kubeconfig = str(self.cp.kubeconfig)
        self._spawn(self.binary, [
            f"--kubeconfig={kubeconfig}",
            f"--authentication-kubeconfig={kubeconfig}",
            f"--authorization-kubeconfig={kubeconfig}",
            f"--bind-address={self.node_ip}",
            f"--secure-port={self.port}",
            f"--cert-dir={self.workdir / 'certs'}",  # a self-signed serving cert, made at start
            f"--metric-resolution={self.resolution_s}s",
            f"--kubelet-request-timeout={max(1, self.resolution_s // 2)}s",  # must be below the resolution
            "--kubelet-insecure-tls",
            "--kubelet-preferred-address-types=InternalIP",
            "--kubelet-use-node-status-port",
            "--v=1",
        ])
        try:
            r = self.cp.kubectl("apply", "-f", "-", input=self._registration())
            if r.returncode != 0:
                raise AddonError(f"registering metrics-server as {METRICS_APISERVICE} failed: {r.stderr.strip()}")
            self.wait_available(timeout)
        except BaseException:
            self.stop()
            raise
        self.startup_s = time.monotonic() - started
        return self

    def stop(self) -> None:
        """Unregister the APIService (first: it must not outlive its server), then stop the process."""
        if self.cp.running:
            self.cp.kubectl("delete", "apiservice", METRICS_APISERVICE, "--ignore-not-found", "--wait=false",
                            timeout=20)
            self.cp.kubectl("delete", "-n", METRICS_NAMESPACE, "service,endpoints", METRICS_SERVICE,
                            "--ignore-not-found", "--wait=false", timeout=20)
        self._terminate()

    def node_metrics(self) -> list[dict]:
        """The items of /apis/metrics.k8s.io/v1beta1/nodes ([] while none are collected)."""
        status, body = self.cp.get("/apis/metrics.k8s.io/v1beta1/nodes")
        return json.loads(body).get("items", []) if status == 200 else []

    def pod_metrics(self, namespace: str, selector: str = "") -> list[dict]:
        """The items of /apis/metrics.k8s.io/v1beta1/namespaces/<ns>/pods (with an optional label selector)."""
        query = f"?labelSelector={selector}" if selector else ""
        status, body = self.cp.get(f"/apis/metrics.k8s.io/v1beta1/namespaces/{namespace}/pods{query}")
        return json.loads(body).get("items", []) if status == 200 else []

    def wait_available(self, timeout: float = 120.0) -> None:
        """Wait until the APIService is Available and node metrics are served; AddonError otherwise."""
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            self._check_alive()
            r = self.cp.kubectl("get", "apiservice", METRICS_APISERVICE, "-o", "json", timeout=20)
            if r.returncode == 0:
                conditions = json.loads(r.stdout).get("status", {}).get("conditions", [])
                available = next((c for c in conditions if c["type"] == "Available"), {})
                last = f"APIService Available={available.get('status')}: {available.get('message', '')}"
                if available.get("status") == "True" and self.node_metrics():
                    return
                if available.get("status") == "True":
                    last = "APIService Available, no node metrics yet"
            time.sleep(1.0)
        raise AddonError(f"metrics-server not serving node metrics after {timeout:.0f}s ({last}); "
                         f"log {self.workdir / 'metrics-server.log'}:\n{self.tail()}")

    def _registration(self) -> str:
        labels = {"app.kubernetes.io/name": "metrics-server", "app.kubernetes.io/managed-by": "chorus-tests"}
        objects = [
            # No selector: the Endpoints below are ours (the server is a host process, not a pod).
            {"apiVersion": "v1", "kind": "Service",
             "metadata": {"name": METRICS_SERVICE, "namespace": METRICS_NAMESPACE, "labels": labels},
             "spec": {"ports": [{"name": "https", "port": 443, "targetPort": self.port, "protocol": "TCP"}]}},
            {"apiVersion": "v1", "kind": "Endpoints",
             "metadata": {"name": METRICS_SERVICE, "namespace": METRICS_NAMESPACE, "labels": labels},
             "subsets": [{"addresses": [{"ip": self.node_ip}],
                          "ports": [{"name": "https", "port": self.port, "protocol": "TCP"}]}]},
            # metrics-server's serving cert is self-signed (made at start): nothing to pin.
            {"apiVersion": "apiregistration.k8s.io/v1", "kind": "APIService",
             "metadata": {"name": METRICS_APISERVICE, "labels": labels},
             "spec": {"group": "metrics.k8s.io", "version": "v1beta1", "insecureSkipTLSVerify": True,
                      "groupPriorityMinimum": 100, "versionPriority": 100,
                      "service": {"name": METRICS_SERVICE, "namespace": METRICS_NAMESPACE, "port": 443}}},
        ]
        return json.dumps({"apiVersion": "v1", "kind": "List", "items": objects})


class KubeRayOperator(_HostProcess):
    """KubeRay's CRDs and operator (all namespaces, admin kubeconfig) on the host; a context manager."""

    name = "kuberay-operator"

    def __init__(self, cp: ControlPlane, workdir: Path, bin_dir: Path | None = None,
                 version: str = KUBERAY_VERSION) -> None:
        super().__init__(cp, workdir)
        bin_dir = bin_dir or cp.bin_dir
        self.binary = require_binaries(bin_dir, ("kuberay-operator",))["kuberay-operator"]
        self.crd_dir = bin_dir.parent / "kuberay-crds" / version
        self.crds_s = 0.0

    def __enter__(self) -> KubeRayOperator:
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def install_crds(self) -> list[str]:
        """Server-side apply KubeRay's CRDs and wait until Established; returns their names."""
        started = time.monotonic()
        files = sorted(self.crd_dir.glob("ray.io_*.yaml"))
        if not files:
            raise AddonError(f"no KubeRay CRDs in {self.crd_dir}: run controlplane/build-addons.sh kuberay-operator")
        args = ["apply", "--server-side", "--force-conflicts", "--field-manager=chorus-tests"]
        for f in files:
            args += ["-f", str(f)]
        r = self.cp.kubectl(*args, timeout=120)
        if r.returncode != 0:
            raise AddonError(f"applying KubeRay's CRDs failed: {r.stderr.strip()}")
        names = [f"{f.name.removeprefix('ray.io_').removesuffix('.yaml')}.ray.io" for f in files]
        try:
            wait_crds_established(self.cp.kubectl, names)
        except ControlPlaneError as exc:
            raise AddonError(f"KubeRay's {exc}") from None
        self.crds_s = time.monotonic() - started
        return names

    def start(self) -> KubeRayOperator:
        """Install the CRDs, start the operator and wait until its health probe answers."""
        started = time.monotonic()
        self.install_crds()
        probe_port, metrics_port = _free_port(), _free_port()
        env = dict(os.environ, KUBECONFIG=str(self.cp.kubeconfig))
        self._spawn(self.binary, [
            "--enable-leader-election=false",
            f"--metrics-addr=127.0.0.1:{metrics_port}",
            f"--health-probe-bind-address=127.0.0.1:{probe_port}",
            "--use-kubernetes-proxy",
            "--log-stdout-encoder=console",
        ], env=env)
        deadline = time.monotonic() + 60
        while True:
            self._check_alive()
            try:
                status, _ = self.cp.get(f"http://127.0.0.1:{probe_port}/readyz", timeout=2)
                if status == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise AddonError(f"kuberay-operator not ready after 60s:\n{self.tail()}")
            time.sleep(0.5)
        self.startup_s = time.monotonic() - started
        return self

    def stop(self) -> None:
        """Stop the operator (the CRDs stay: RayServices left behind would lose their finalizer handler)."""
        self._terminate()


__all__ = ["AddonError", "KubeRayOperator", "MetricsServer", "ensure_addons", "ControlPlaneError"]
