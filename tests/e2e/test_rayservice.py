"""serving.mode=rayservice on a real node: KubeRay's CRDs accept the chart's RayService, KubeRay's
operator reconciles it into a RayCluster whose pods run from the local serve image, and a sentence
is synthesised through KubeRay's serve Service.

Real parts only: the session's control plane and real node, KubeRay's operator and CRDs built and
taken from its Go module (github.com/ray-project/kuberay/ray-operator, controlplane/build-addons.sh)
and run on the host with the admin kubeconfig (chorus.controlplane.addons.KubeRayOperator), the
chart installed with the real helm CLI, a tenant record written by hand (no Chorus operator).

One stand-in: a Ray worker joins the head at `<cluster>-head-svc.<namespace>.svc.cluster.local`, a
name only cluster DNS resolves, and the test node runs no DNS server. The test first shows the
worker waiting for that name (KubeRay's init container), then gives the worker template a
hostAliases entry for it and GRPC_DNS_RESOLVER=native (Ray's gRPC resolver, c-ares, ignores
/etc/hosts), patched onto the RayCluster, not the chart, and replaces the worker pod.
On a cluster with DNS nothing of this is needed. Memory was not the limit: the pods' cgroup usage
is printed (see charts/chorus/README.md, "Tests").
"""

from __future__ import annotations

import json
import secrets
import subprocess
import time
from pathlib import Path

import httpx
import pytest
import yaml

from chorus.controlplane.addons import AddonError, KubeRayOperator, ensure_addons
from chorus.controlplane.binaries import BinariesNotFound
from chorus.controlplane.node import pod_ready

pytestmark = [pytest.mark.e2e, pytest.mark.integration, pytest.mark.slow]

CHART = Path(__file__).resolve().parents[2] / "charts" / "chorus"
RELEASE = "ray"
_T0 = time.monotonic()


def _say(msg: str) -> None:
    print(f"[test_rayservice +{time.monotonic() - _T0:.0f}s] {msg}", flush=True)


@pytest.fixture(scope="module")
def kuberay(real_node, tmp_path_factory):
    """KubeRay's CRDs installed and its operator running on the host."""
    try:
        bin_dir, build_s = ensure_addons("kuberay-operator", bin_dir=real_node.cp.bin_dir)
        operator = KubeRayOperator(real_node.cp, tmp_path_factory.mktemp("kuberay"), bin_dir=bin_dir)
        operator.build_s = build_s
    except (AddonError, BinariesNotFound) as exc:
        pytest.fail(str(exc), pytrace=False)
    with operator:
        yield operator


def _values(image_ref: str) -> dict:
    repository, tag = image_ref.rsplit(":", 1)
    small = {"requests": {"cpu": "250m", "memory": "1Gi"}, "limits": {"cpu": "1", "memory": "3Gi"}}
    return {
        "image.serve.repository": repository, "image.serve.tag": tag, "image.serve.pullPolicy": "Never",
        "crds.enabled": False, "operator.enabled": False, "tests.enabled": False,
        "serving.mode": "rayservice",
        "serving.rayService.headResources": small,
        "serving.rayService.workers.resources": small,
        "serving.app.synthesisCpus": 1, "serving.app.threads": 1,
    }


def _get(cp, *args: str) -> dict:
    r = cp.kubectl("get", *args, "-o", "json", timeout=20)
    return json.loads(r.stdout) if r.returncode == 0 else {}


def _pod_memory_mb(uid: str) -> int | None:
    """A pod's memory cgroup usage on this host (cgroup v1 or v2), in MB; None if not found."""
    for qos in ("", "burstable/", "besteffort/"):
        for path in (Path(f"/sys/fs/cgroup/memory/kubepods/{qos}pod{uid}/memory.usage_in_bytes"),
                     Path(f"/sys/fs/cgroup/kubepods/{qos}pod{uid}/memory.current")):
            if path.exists():
                return int(path.read_text()) >> 20
    return None


def _wait(what: str, fn, timeout: float, diagnose):
    deadline = time.monotonic() + timeout
    while True:
        if (result := fn()):
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not after {timeout:.0f}s\n{diagnose()}", pytrace=False)
        time.sleep(1)


def test_kuberay_reconciles_the_charts_rayservice_into_a_running_ray_cluster(serve_archive, real_node, kuberay,
                                                                            serve_image, namespace, tenant_record):
    cp = real_node.cp
    times = {"kuberay build/check": kuberay.build_s, "CRDs applied and Established": kuberay.crds_s,
             "operator start (CRDs + ready)": kuberay.startup_s}

    def diagnose() -> str:
        return f"{real_node.diagnose(namespace)}\n----- kuberay-operator log\n{kuberay.tail(60)}"

    # The rendered RayService, as helm renders it, accepted by the API server against KubeRay's schema.
    args = [a for k, v in _values(serve_image).items() for a in ("--set-json", f"{k}={json.dumps(v)}")]
    rendered = subprocess.run([str(cp.helm), "template", RELEASE, str(CHART), "-n", namespace, *args],
                              capture_output=True, text=True, timeout=60, env=cp.env())
    assert rendered.returncode == 0, rendered.stderr
    docs = [d for d in yaml.safe_load_all(rendered.stdout) if d]
    (ray_service,) = [d for d in docs if d["kind"] == "RayService"]
    r = cp.kubectl("apply", "--server-side", "--dry-run=server", "-f", "-", input=json.dumps(ray_service))
    assert r.returncode == 0, f"the API server refused the rendered RayService: {r.stderr}"

    started = time.monotonic()
    r = subprocess.run([str(cp.helm), "install", RELEASE, str(CHART), "-n", namespace, *args],
                       capture_output=True, text=True, timeout=120, env=cp.env())
    assert r.returncode == 0, r.stderr
    name = ray_service["metadata"]["name"]
    stored = _get(cp, "rayservice", "-n", namespace, name)
    # Pruning would have dropped fields the CRD's schema does not know: the spec comes back whole.
    assert yaml.safe_load(stored["spec"]["serveConfigV2"]) == yaml.safe_load(ray_service["spec"]["serveConfigV2"])
    head_spec = stored["spec"]["rayClusterConfig"]["headGroupSpec"]["template"]["spec"]
    assert head_spec["containers"][0]["readinessProbe"]["httpGet"]["path"] == "/api/gcs_healthz"

    def ray_cluster():
        items = _get(cp, "raycluster", "-n", namespace).get("items", [])
        owned = [c for c in items if any(o.get("kind") == "RayService" and o.get("name") == name
                                         for o in c["metadata"].get("ownerReferences", []))]
        return owned[0] if owned else None

    cluster = _wait("a RayCluster owned by the RayService", ray_cluster, 90, diagnose)
    times["install to RayCluster"] = time.monotonic() - started
    cluster_name = cluster["metadata"]["name"]
    _say(f"RayCluster {cluster_name} after {times['install to RayCluster']:.1f}s")
    assert cluster["spec"]["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"

    def pods(node_type: str) -> list[dict]:
        return _get(cp, "pods", "-n", namespace, "-l",
                    f"ray.io/cluster={cluster_name},ray.io/node-type={node_type}").get("items", [])

    head = _wait("the Ray head pod", lambda: pods("head"), 60, diagnose)[0]
    times["install to head pod created"] = time.monotonic() - started
    _say(f"head pod {head['metadata']['name']} created after {times['install to head pod created']:.1f}s")
    _wait("a Ray worker pod", lambda: pods("worker"), 60, diagnose)
    times["install to worker pod created"] = time.monotonic() - started

    # The head runs: GCS, dashboard and Serve controller up (its readiness probe is the GCS health).
    real_node.wait_pods_ready(namespace, f"ray.io/cluster={cluster_name},ray.io/node-type=head", timeout=300)
    times["install to head pod Ready"] = time.monotonic() - started
    _say(f"head pod Ready after {times['install to head pod Ready']:.1f}s")

    # KubeRay reached the head's dashboard (through the API server's service proxy) and submitted
    # the Serve application from serveConfigV2: the RayService reports it.
    def app_submitted():
        status = _get(cp, "rayservice", "-n", namespace, name).get("status", {})
        apps = (status.get("pendingServiceStatus") or {}).get("applicationStatuses") or \
               (status.get("activeServiceStatus") or {}).get("applicationStatuses") or {}
        return apps.get("chorus")

    app = _wait("the Serve application `chorus` in the RayService's status", app_submitted, 180, diagnose)
    times["install to Serve app submitted"] = time.monotonic() - started
    _say(f"Serve application: {json.dumps(app)[:400]}")

    # Memory is not what limits this node: the head's cgroup, read on the host.
    head = pods("head")[0]
    usage = _pod_memory_mb(head["metadata"]["uid"])
    _say(f"head pod memory (cgroup usage): {usage} MB")

    # The worker cannot join without cluster DNS: KubeRay's init container waits for the head's GCS
    # at <cluster>-head-svc.<namespace>.svc.cluster.local, which nothing resolves on this node.
    worker = pods("worker")[0]
    wname = worker["metadata"]["name"]
    init = [(c["name"], next(iter(c.get("state", {})), "?")) for c in worker["status"].get("initContainerStatuses", [])]
    logs = cp.kubectl("logs", "-n", namespace, wname, "--all-containers", "--tail=2").stdout
    _say(f"worker {wname}: phase {worker['status'].get('phase')}, init containers {init}; log tail:\n{logs}")
    assert not pod_ready(worker)

    # Stand-in for cluster DNS (the test node's gap, not the chart's): a hostAliases entry naming the
    # head's address, patched onto the RayCluster's worker template (KubeRay compares the RayService
    # with the hash it annotated, so it keeps the patch), and the waiting worker pod replaced.
    head_ip = pods("head")[0]["status"]["podIP"]
    fqdn = f"{cluster_name}-head-svc.{namespace}.svc.cluster.local"
    # Ray's gRPC resolves names with c-ares, which does not read /etc/hosts: GRPC_DNS_RESOLVER=native
    # makes it use the C library (KubeRay copies the container's env into its wait-gcs-ready init container).
    patch = [{"op": "add", "path": "/spec/workerGroupSpecs/0/template/spec/hostAliases",
              "value": [{"ip": head_ip, "hostnames": [fqdn]}]},
             {"op": "add", "path": "/spec/workerGroupSpecs/0/template/spec/containers/0/env/-",
              "value": {"name": "GRPC_DNS_RESOLVER", "value": "native"}}]
    cp.kubectl("patch", "raycluster", "-n", namespace, cluster_name, "--type=json", "-p", json.dumps(patch),
               check=True)
    cp.kubectl("delete", "pods", "-n", namespace, "-l", f"ray.io/cluster={cluster_name},ray.io/node-type=worker",
               "--wait=false", check=True)
    t0 = time.monotonic()
    real_node.wait_pods_ready(namespace, f"ray.io/cluster={cluster_name},ray.io/node-type=worker", timeout=300)
    times["worker (given the head's name) Ready"] = time.monotonic() - t0
    _say(f"worker Ready after {time.monotonic() - t0:.1f}s")

    def app_running():
        status = _get(cp, "rayservice", "-n", namespace, name).get("status", {})
        for key in ("activeServiceStatus", "pendingServiceStatus"):
            app = ((status.get(key) or {}).get("applicationStatuses") or {}).get("chorus") or {}
            if app.get("status") == "RUNNING":
                return app
        return None

    _wait("the Serve application RUNNING", app_running, 300, diagnose)
    times["worker replaced to Serve app RUNNING"] = time.monotonic() - t0
    memory = {p["metadata"]["name"].rsplit("-", 2)[-2]: _pod_memory_mb(p["metadata"]["uid"])
              for p in pods("head") + pods("worker")}
    _say(f"Serve app RUNNING; pod memory (cgroup usage, MB): {memory}")

    # Synthesis through KubeRay's serve Service, with a tenant record written by hand (no operator).
    key = "sk-ray-" + secrets.token_hex(16)
    record = tenant_record(namespace, "raytest", key, rpm=600, max_concurrent=4)
    cp.kubectl("apply", "-f", "-", input=json.dumps(record), check=True)
    service = _wait("the Service <rayservice>-serve-svc",
                    lambda: _get(cp, "service", "-n", namespace, f"{name}-serve-svc"), 120, diagnose)
    url = f"http://{service['spec']['clusterIP']}:8000/v1/audio/speech"
    deadline = time.monotonic() + 120
    with httpx.Client(timeout=60, headers={"Authorization": f"Bearer {key}"}) as client:
        while True:  # 401 until the application has read the new record
            r = client.post(url, json={"model": "chorus", "input": "Hello from Ray Serve on KubeRay.",
                                       "voice": "default", "response_format": "wav"})
            if r.status_code == 200 or time.monotonic() > deadline:
                break
            time.sleep(2)
    assert r.status_code == 200 and r.content[:4] == b"RIFF", (r.status_code, r.text[:300])
    times["install to first synthesis through the serve Service"] = time.monotonic() - started
    _say(f"synthesised {len(r.content)} bytes of WAV through {url}")
    _say("times: " + json.dumps({k: round(v, 1) for k, v in times.items()}))

    r = subprocess.run([str(cp.helm), "uninstall", RELEASE, "-n", namespace, "--wait", "--timeout=120s"],
                       capture_output=True, text=True, timeout=180, env=cp.env())
    assert r.returncode == 0, r.stderr
    _wait("the RayCluster deleted with the RayService", lambda: not _get(cp, "raycluster", "-n", namespace)
          .get("items"), 120, diagnose)
