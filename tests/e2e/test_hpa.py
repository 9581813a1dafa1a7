"""The serving tier's HorizontalPodAutoscaler acts on a real node: bounded load scales it out, then in.

Real parts only: the session's control plane and real node (chorus.controlplane.node), metrics-server
built from its Go module and run on the host as the cluster's metrics.k8s.io API
(chorus.controlplane.addons.MetricsServer), the serve image built from Debian packages
(chorus.images), the chart's serving Deployment, Service and HPA installed with the real helm CLI.

No operator: the serving tier reads tenants from tenant-record ConfigMaps in its namespace, so the
test writes one by hand (the format of chorus.operator.builders.build_tenant_record) with the sha256
of a key it made up, and speaks in the base voice. Load goes only to the Service's ClusterIP (the
cluster this session started), bounded in count and in time. The times (metrics available,
scale-out, new pod Ready, scale-in) are printed and recorded in charts/chorus/README.md.
"""

from __future__ import annotations

import json
import secrets
import subprocess
import threading
import time
from pathlib import Path

import httpx
import pytest

from chorus.controlplane.addons import AddonError, MetricsServer, ensure_addons
from chorus.controlplane.binaries import BinariesNotFound

pytestmark = [pytest.mark.e2e, pytest.mark.integration, pytest.mark.slow]

CHART = Path(__file__).resolve().parents[2] / "charts" / "chorus"
RELEASE = "hpa"
TENANT = "loadtest"
# What each serving pod asks for: little CPU so that one synthesis thread (up to the 1-CPU limit)
# is far above the target, while an idle pod (Ray's own processes) stays well below it.
CPU_REQUEST, CPU_LIMIT, TARGET_PERCENT = "500m", "1", 60
MAX_REPLICAS = 2
SCALE_DOWN_WINDOW_S = 30
# Bounds of the load: never more than this many requests, clients and seconds.
LOAD_MAX_REQUESTS, LOAD_CLIENTS, LOAD_MAX_S = 2000, 3, 420
TEXT = "The autoscaler watches how busy these pods are, and adds another one when they work too hard."


def _say(msg: str) -> None:
    print(f"[test_hpa +{time.monotonic() - _T0:.0f}s] {msg}", flush=True)


_T0 = time.monotonic()


@pytest.fixture(scope="module")
def metrics_server(real_node, tmp_path_factory):
    """metrics-server (built from sigs.k8s.io/metrics-server) serving metrics.k8s.io for the node."""
    try:
        bin_dir, build_s = ensure_addons("metrics-server", bin_dir=real_node.cp.bin_dir)
        server = MetricsServer(real_node.cp, real_node.ip, tmp_path_factory.mktemp("metrics-server"),
                               bin_dir=bin_dir)
        server.build_s = build_s
    except (AddonError, BinariesNotFound) as exc:
        pytest.fail(str(exc), pytrace=False)
    with server:
        yield server


def _helm(cp, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([str(cp.helm), *args], capture_output=True, text=True, timeout=timeout, env=cp.env())


def _values(image_ref: str) -> dict:
    repository, tag = image_ref.rsplit(":", 1)
    return {
        "image.serve.repository": repository, "image.serve.tag": tag, "image.serve.pullPolicy": "Never",
        "crds.enabled": False, "operator.enabled": False, "tests.enabled": False,
        "serving.mode": "deployment",
        "serving.app.threads": 1, "serving.app.synthesisReplicas": 1,
        "serving.resources": {"requests": {"cpu": CPU_REQUEST, "memory": "1Gi"},
                              "limits": {"cpu": CPU_LIMIT, "memory": "3Gi"}},
        "serving.autoscaling.enabled": True,
        "serving.autoscaling.minReplicas": 1,
        "serving.autoscaling.maxReplicas": MAX_REPLICAS,
        "serving.autoscaling.targetCPUUtilizationPercentage": TARGET_PERCENT,
        "serving.autoscaling.scaleDownStabilizationSeconds": SCALE_DOWN_WINDOW_S,
    }


def _hpa(cp, namespace: str, name: str) -> dict:
    r = cp.kubectl("get", "hpa", "-n", namespace, name, "-o", "json", timeout=20)
    return json.loads(r.stdout) if r.returncode == 0 else {}


def _hpa_line(hpa: dict) -> str:
    status = hpa.get("status", {})
    cpu = next((m["resource"]["current"].get("averageUtilization") for m in status.get("currentMetrics") or []
                if m.get("type") == "Resource"), None)
    conds = {c["type"]: f"{c['status']}/{c.get('reason')}" for c in status.get("conditions", [])}
    return f"replicas {status.get('currentReplicas')}->{status.get('desiredReplicas')}, cpu {cpu}%, {conds}"


class _Load:
    """LOAD_CLIENTS threads posting syntheses to url until stopped, LOAD_MAX_REQUESTS or LOAD_MAX_S."""

    def __init__(self, url: str, key: str) -> None:
        self.url, self.key = url, key
        self.stop = threading.Event()
        self.sent = self.ok = 0
        self.errors: dict[str, int] = {}
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._client, daemon=True) for _ in range(LOAD_CLIENTS)]
        self._deadline = time.monotonic() + LOAD_MAX_S

    def __enter__(self) -> _Load:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop.set()
        for t in self._threads:
            t.join(timeout=60)

    def _take(self) -> bool:
        with self._lock:
            if self.stop.is_set() or self.sent >= LOAD_MAX_REQUESTS or time.monotonic() > self._deadline:
                return False
            self.sent += 1
            return True

    def _client(self) -> None:
        body = {"model": "chorus", "input": TEXT, "voice": "default", "response_format": "pcm"}
        with httpx.Client(timeout=60, headers={"Authorization": f"Bearer {self.key}"}) as client:
            while self._take():
                try:
                    r = client.post(self.url, json=body)
                    outcome = "ok" if r.status_code == 200 and r.content else f"HTTP {r.status_code}"
                except httpx.HTTPError as exc:
                    outcome = type(exc).__name__
                    time.sleep(0.5)
                with self._lock:
                    if outcome == "ok":
                        self.ok += 1
                    else:
                        self.errors[outcome] = self.errors.get(outcome, 0) + 1


def test_bounded_load_scales_the_serving_deployment_out_and_back_in(serve_archive, real_node, metrics_server,
                                                                     serve_image, namespace, tenant_record):
    cp = real_node.cp
    times: dict[str, float] = {"metrics-server build/check": metrics_server.build_s,
                               "metrics available (start to node metrics)": metrics_server.startup_s}
    key = "sk-hpa-" + secrets.token_hex(16)
    record = tenant_record(namespace, TENANT, key, rpm=100000, max_concurrent=16)
    cp.kubectl("apply", "-f", "-", input=json.dumps(record), check=True)
    values = _values(serve_image)
    args = [a for k, v in values.items() for a in ("--set-json", f"{k}={json.dumps(v)}")]
    started = time.monotonic()
    r = _helm(cp, "install", RELEASE, str(CHART), "-n", namespace, *args)
    assert r.returncode == 0, r.stderr
    name = f"{RELEASE}-chorus-serving"
    selector = f"app.kubernetes.io/instance={RELEASE},app.kubernetes.io/component=serving"
    real_node.wait_pods_ready(namespace, selector, timeout=300)
    times["install to first pod Ready"] = time.monotonic() - started
    _say(f"serving pod Ready after {times['install to first pod Ready']:.0f}s")

    # The HPA sees the idle pod's CPU (metrics-server, then the HPA's 15 s sync) before any load.
    t0 = time.monotonic()
    while True:
        hpa = _hpa(cp, namespace, name)
        if any(m.get("type") == "Resource" for m in hpa.get("status", {}).get("currentMetrics") or []):
            break
        if time.monotonic() - t0 > 120:
            pytest.fail(f"the HPA never got CPU metrics: {_hpa_line(hpa)}\n{json.dumps(hpa.get('status'))}\n"
                        f"metrics-server log:\n{metrics_server.tail()}\n{real_node.diagnose(namespace)}")
        time.sleep(2)
    times["HPA has CPU metrics (after pod Ready)"] = time.monotonic() - t0
    _say(f"HPA idle: {_hpa_line(hpa)}")
    assert hpa["status"]["desiredReplicas"] == 1, f"scaled before any load: {_hpa_line(hpa)}"

    cluster_ip = cp.kubectl("get", "service", "-n", namespace, name, "-o", "jsonpath={.spec.clusterIP}",
                            check=True).stdout.strip()
    url = f"http://{cluster_ip}:8000/v1/audio/speech"
    with httpx.Client(timeout=60, headers={"Authorization": f"Bearer {key}"}) as client:
        r = client.post(url, json={"model": "chorus", "input": "Hello.", "voice": "default",
                                   "response_format": "pcm"})
        assert r.status_code == 200 and r.content, (r.status_code, r.text[:300])

    # Load until the HPA has asked for a second pod and that pod is Ready (it then shares the load).
    t0 = time.monotonic()
    scaled_out = ready_out = None
    with _Load(url, key) as load:
        while time.monotonic() - t0 < LOAD_MAX_S - 10:
            hpa = _hpa(cp, namespace, name)
            if scaled_out is None and (hpa.get("status", {}).get("desiredReplicas") or 0) >= 2:
                scaled_out = time.monotonic() - t0
                _say(f"scale-out asked after {scaled_out:.0f}s of load: {_hpa_line(hpa)}")
            if scaled_out is not None:
                left = LOAD_MAX_S - 10 - (time.monotonic() - t0)
                pods = real_node.wait_pods_ready(namespace, selector, timeout=max(30, left), count=2)
                ready_out = time.monotonic() - t0
                _say(f"{len(pods)} pods Ready after {ready_out:.0f}s of load")
                time.sleep(20)  # both pods take requests for a while
                break
            time.sleep(3)
        load.stop.set()
    _say(f"load: {load.sent} requests, {load.ok} ok, errors {load.errors}; {_hpa_line(_hpa(cp, namespace, name))}")
    assert scaled_out is not None, (f"no scale-out in {LOAD_MAX_S}s of load: {_hpa_line(hpa)}\n"
                                    f"{json.dumps(hpa.get('status'))}\n{real_node.diagnose(namespace)}")
    assert load.ok > 0
    times["load to scale-out decision"] = scaled_out
    times["load to second pod Ready"] = ready_out

    # Load off: the HPA removes the extra pod after the stabilization window.
    t0 = time.monotonic()
    scaled_in = None
    while time.monotonic() - t0 < 300:
        hpa = _hpa(cp, namespace, name)
        spec_replicas = json.loads(cp.kubectl("get", "deployment", "-n", namespace, name, "-o", "json",
                                              check=True).stdout)["spec"]["replicas"]
        if spec_replicas == 1:
            scaled_in = time.monotonic() - t0
            break
        time.sleep(3)
    assert scaled_in is not None, f"no scale-in 300s after the load stopped: {_hpa_line(hpa)}"
    times["load stop to scale-in (window %ds)" % SCALE_DOWN_WINDOW_S] = scaled_in
    _say("times: " + json.dumps({k: round(v, 1) for k, v in times.items()}))
    events = cp.kubectl("get", "events", "-n", namespace, "--field-selector",
                        f"involvedObject.kind=HorizontalPodAutoscaler", "-o",
                        "custom-columns=AGE:.lastTimestamp,REASON:.reason,MESSAGE:.message").stdout
    _say(f"HPA events:\n{events}")
    assert "SuccessfulRescale" in events
    r = _helm(cp, "uninstall", RELEASE, "-n", namespace, "--wait", timeout=180)
    assert r.returncode == 0, r.stderr
