"""The real test node: pods from locally built images run, Services route, Jobs finish, logs work,
and teardown leaves nothing on the host."""

from __future__ import annotations

import ipaddress
import json
import os
import time
import urllib.error
import urllib.request

import pytest

from chorus.controlplane.binaries import K8S_VERSION
from chorus.controlplane.localimages import busybox_archive
from chorus.controlplane.node import NODE_IP, POD_CIDR, NodeError, leftovers, node_processes

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def busybox(real_node) -> str:
    """The busybox test image, loaded into the node; its name."""
    archive, _ = busybox_archive()
    return real_node.load_image(archive)


@pytest.fixture
def namespace(real_node, unique_name):
    """A fresh namespace, deleted after the test (without waiting)."""
    real_node.kubectl("create", "namespace", unique_name, check=True)
    yield unique_name
    real_node.kubectl("delete", "namespace", unique_name, "--wait=false")


def apply(node, *objects: dict) -> None:
    """kubectl apply the objects (as one JSON List)."""
    node.kubectl("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": list(objects)}),
                 check=True)


def container(image: str, *command: str, **extra) -> dict:
    """A container spec for a local image (never pulled)."""
    return {"name": "main", "image": image, "imagePullPolicy": "Never", "command": list(command), **extra}


def test_node_registers_ready_with_its_node_ip(real_node):
    node = json.loads(real_node.kubectl("get", "node", real_node.name, "-o", "json", check=True).stdout)
    assert {c["type"]: c["status"] for c in node["status"]["conditions"]}["Ready"] == "True"
    assert node["status"]["nodeInfo"]["kubeletVersion"] == K8S_VERSION
    assert node["status"]["nodeInfo"]["containerRuntimeVersion"].startswith("containerd://")
    assert {"type": "InternalIP", "address": NODE_IP} in node["status"]["addresses"]
    print(f"node Ready in {real_node.startup_s:.1f}s: {real_node.timings}")


def test_deployment_pod_is_reachable_through_a_cluster_ip_service(real_node, busybox, namespace):
    labels = {"app": "web"}
    deployment = {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "namespace": namespace},
        "spec": {"replicas": 1, "selector": {"matchLabels": labels}, "template": {
            "metadata": {"labels": labels},
            "spec": {"terminationGracePeriodSeconds": 1, "containers": [container(
                busybox, "httpd", "-f", "-p", "8080", "-h", "/www",
                ports=[{"containerPort": 8080}],
                readinessProbe={"httpGet": {"path": "/", "port": 8080}, "periodSeconds": 1},
            )]},
        }},
    }
    service = {
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": namespace},
        "spec": {"selector": labels, "ports": [{"port": 80, "targetPort": 8080}]},
    }
    started = time.monotonic()
    apply(real_node, deployment, service)
    (pod,) = real_node.wait_pods_ready(namespace, "app=web", timeout=60)
    ready_s = time.monotonic() - started
    assert pod["status"]["phase"] == "Running"
    assert ipaddress.ip_address(pod["status"]["podIP"]) in ipaddress.ip_network(POD_CIDR)

    cluster_ip = real_node.kubectl("get", "service", "-n", namespace, "web", "-o", "jsonpath={.spec.clusterIP}",
                                   check=True).stdout
    # kube-proxy programs the Service's rules within a sync period of the endpoints appearing.
    deadline, last = time.monotonic() + 30, ""
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://{cluster_ip}/", timeout=2) as resp:
                assert resp.read().decode() == "chorus busybox\n"
                break
        except (urllib.error.URLError, OSError) as exc:
            last = str(exc)
            time.sleep(0.25)
    else:
        raise AssertionError(f"http://{cluster_ip}/ unreachable from the host for 30s: {last}\n"
                             f"{real_node.diagnose(namespace)}")
    print(f"Deployment pod Ready in {ready_s:.1f}s, Service answered {time.monotonic() - started:.1f}s after apply")


def test_job_completes_and_its_logs_are_readable(real_node, busybox, namespace):
    job = {
        "apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "hello", "namespace": namespace},
        "spec": {"backoffLimit": 0, "template": {"spec": {"restartPolicy": "Never", "containers": [
            container(busybox, "sh", "-c", "echo hello from $(hostname); echo done"),
        ]}}},
    }
    started = time.monotonic()
    apply(real_node, job)
    real_node.wait_job_complete(namespace, "hello", timeout=60)
    logs = real_node.kubectl("logs", "-n", namespace, "job/hello", check=True).stdout
    assert logs.splitlines()[0].startswith("hello from hello-") and logs.splitlines()[-1] == "done", logs
    print(f"Job complete and logs read in {time.monotonic() - started:.1f}s")


def test_a_pod_reaches_the_api_server_through_the_kubernetes_service(real_node, busybox, namespace):
    # The address and port the kubelet injects for in-cluster clients. busybox's TLS cannot talk to
    # the API server's ciphers, so speak plain HTTP to it: Go's TLS listener answers that with its
    # own 400, which proves the DNAT from the pod bridge to the loopback API server.
    script = ('printf "GET /version HTTP/1.0\\r\\n\\r\\n" | nc -w 5 "$KUBERNETES_SERVICE_HOST" "$KUBERNETES_SERVICE_PORT";'
              ' echo; echo "via $KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT"')
    apply(real_node, {
        "apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "api", "namespace": namespace},
        "spec": {"backoffLimit": 0, "template": {"spec": {"restartPolicy": "Never", "containers": [
            container(busybox, "sh", "-c", script)]}}},
    })
    real_node.wait_job_complete(namespace, "api", timeout=60)
    logs = real_node.kubectl("logs", "-n", namespace, "job/api", check=True).stdout
    assert "Client sent an HTTP request to an HTTPS server" in logs, logs
    assert logs.splitlines()[-1] == "via 10.96.0.1:443"


def test_a_pod_that_cannot_start_fails_fast_with_diagnostics(real_node, namespace):
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "nope", "namespace": namespace,
                                                           "labels": {"app": "nope"}},
           "spec": {"containers": [container("chorus.local/not-loaded:1", "true")]}}
    apply(real_node, pod)
    started = time.monotonic()
    with pytest.raises(NodeError) as info:
        real_node.wait_pods_ready(namespace, "app=nope", timeout=120)
    assert time.monotonic() - started < 60, "waited for the timeout instead of failing fast"
    text = str(info.value)
    assert "ErrImageNeverPull" in text
    assert f"kubectl describe pod -n {namespace} nope" in text and "Events:" in text
    assert "kubelet (running), last lines" in text and "containerd (running), last lines" in text


def test_stop_leaves_nothing_behind_and_the_node_starts_again(real_node, busybox, namespace):
    # A running pod, so there are containers, mounts, a netns and Service chains to clean.
    apply(real_node, {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "sleeper", "namespace": namespace,
                                                                      "labels": {"app": "sleeper"}},
                      "spec": {"terminationGracePeriodSeconds": 1,
                               "containers": [container(busybox, "sleep", "3600")]}})
    real_node.wait_pods_ready(namespace, "app=sleeper", timeout=60)
    pids = list(real_node.pids.values())
    assert node_processes(), "no node processes found while the node runs"
    assert leftovers(), "leftovers() sees nothing while a node runs: it cannot prove a clean teardown"

    real_node.stop()
    print(f"teardown {real_node.teardown_s:.1f}s")
    try:
        assert leftovers() == []
        for pid in pids:
            assert not os.path.exists(f"/proc/{pid}") or open(f"/proc/{pid}/stat").read().split()[2] == "Z"
    finally:
        real_node.start()  # the session fixture's node, for tests after this one
    assert real_node.kubectl("get", "node", real_node.name, "-o", "name", check=True).stdout.strip()
    print(f"restarted Ready in {real_node.startup_s:.1f}s")


CRASHING_NODE = """
import json, sys, time
from pathlib import Path
from chorus.controlplane.cluster import ControlPlane, ControlPlaneConfig
from chorus.controlplane.localimages import busybox_archive
from chorus.controlplane.node import Node
cp = ControlPlane(ControlPlaneConfig(parent_dir=Path(sys.argv[1]), wait_for_controllers=False)).start()
node = Node(cp).start()
image = node.load_image(busybox_archive()[0])
pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "orphan", "labels": {"app": "orphan"}},
       "spec": {"containers": [{"name": "main", "image": image, "imagePullPolicy": "Never",
                                "command": ["sleep", "3600"]}]}}
cp.kubectl("apply", "-f", "-", input=json.dumps(pod), check=True)
node.wait_pods_ready("default", "app=orphan", timeout=60)
print(json.dumps({"workdir": str(node.workdir)}), flush=True)
time.sleep(600)
"""


def test_the_next_start_cleans_up_after_a_node_whose_process_was_killed(real_node, tmp_path):
    import subprocess
    import sys

    real_node.stop()  # one node per machine: make room for the one that will crash
    try:
        child = subprocess.Popen([sys.executable, "-c", CRASHING_NODE, str(tmp_path)], stdout=subprocess.PIPE,
                                 stderr=subprocess.STDOUT, text=True)
        try:
            line = child.stdout.readline()
            if not line.startswith("{"):
                child.kill()
                raise AssertionError(f"the crashing node did not start: {line}{child.stdout.read()}")
            workdir = json.loads(line)["workdir"]
        finally:
            child.kill()  # SIGKILL: no teardown runs
            child.wait()
        orphans = leftovers()
        assert any("containerd-shim" in item for item in orphans), orphans  # shims outlive a killed node
        assert any(item.startswith("cgroup ") for item in orphans), orphans
        stale = list(node_processes())
    finally:
        started = time.monotonic()
        real_node.start()
        print(f"start after a crash (cleanup included) {time.monotonic() - started:.1f}s: {real_node.timings}")
    assert not os.path.exists(workdir)
    assert not set(stale) & set(node_processes()), "processes of the killed node survived the next start"
