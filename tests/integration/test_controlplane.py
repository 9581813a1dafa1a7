"""The test control plane is a real one: version, namespace lifecycle, GC, RBAC, helm, teardown."""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from chorus.controlplane.binaries import K8S_VERSION, BinariesNotFound, require_binaries
from chorus.controlplane.cluster import ControlPlane, ControlPlaneConfig, ControlPlaneError

pytestmark = pytest.mark.integration


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    """Poll condition every 0.25 s until true, or fail naming what never happened."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.25)
    pytest.fail(f"{what} did not happen within {timeout:.0f}s")


def gone(kubectl, *target: str) -> bool:
    """True when `kubectl get target` answers NotFound."""
    result = kubectl("get", *target, "-o", "name")
    return result.returncode != 0 and "NotFound" in result.stderr


def test_server_reports_release_version(control_plane, kubectl):
    assert control_plane.version()["gitVersion"] == K8S_VERSION
    result = kubectl("version", "-o", "json", check=True)
    assert json.loads(result.stdout)["serverVersion"]["gitVersion"] == K8S_VERSION


def test_kubernetes_python_client_works_with_the_kubeconfig(kubeconfig):
    from kubernetes import client, config

    api = client.CoreV1Api(config.new_client_from_config(config_file=str(kubeconfig)))
    names = {ns.metadata.name for ns in api.list_namespace().items}
    assert {"default", "kube-system"} <= names


def test_deleted_namespace_is_finalised_by_the_controller_manager(kubectl, unique_name):
    kubectl("create", "namespace", unique_name, check=True)
    kubectl("-n", unique_name, "create", "configmap", "inside", "--from-literal=a=b", check=True)
    kubectl("delete", "namespace", unique_name, "--wait=false", check=True)
    # Only the namespace controller empties the namespace and removes its finalizer.
    wait_for(lambda: gone(kubectl, "namespace", unique_name), f"deletion of namespace {unique_name}")


def test_garbage_collector_deletes_dependents_of_a_deleted_owner(kubectl, unique_name):
    owner, child, bystander = f"{unique_name}-owner", f"{unique_name}-child", f"{unique_name}-other"
    kubectl("create", "configmap", owner, check=True)
    uid = kubectl("get", "configmap", owner, "-o", "jsonpath={.metadata.uid}", check=True).stdout
    dependent = {
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": child, "ownerReferences": [
            {"apiVersion": "v1", "kind": "ConfigMap", "name": owner, "uid": uid},
        ]},
    }
    kubectl("create", "-f", "-", input=json.dumps(dependent), check=True)
    kubectl("create", "configmap", bystander, check=True)

    kubectl("delete", "configmap", owner, "--cascade=background", check=True)
    wait_for(lambda: gone(kubectl, "configmap", child), f"garbage collection of {child}")
    assert not gone(kubectl, "configmap", bystander), "a ConfigMap without an owner was deleted"
    kubectl("delete", "configmap", bystander, check=True)


def test_rbac_forbids_a_service_account_until_a_role_allows_it(kubectl, unique_name):
    ns = unique_name
    kubectl("create", "namespace", ns, check=True)
    try:
        kubectl("-n", ns, "create", "serviceaccount", "reader", check=True)
        kubectl("-n", ns, "create", "secret", "generic", "s", "--from-literal=k=v", check=True)
        who = f"--as=system:serviceaccount:{ns}:reader"

        denied = kubectl("-n", ns, "get", "secret", "s", who)
        assert denied.returncode != 0 and "Forbidden" in denied.stderr, denied
        assert kubectl("-n", ns, "auth", "can-i", "get", "secrets", who).stdout.strip() == "no"

        kubectl("-n", ns, "create", "role", "read-secrets", "--verb=get",
                "--resource=secrets", check=True)
        kubectl("-n", ns, "create", "rolebinding", "read-secrets", "--role=read-secrets",
                f"--serviceaccount={ns}:reader", check=True)
        wait_for(lambda: kubectl("-n", ns, "get", "secret", "s", who).returncode == 0,
                 "access after the RoleBinding", timeout=30)
        # The grant is namespaced: the same account still may not read kube-system's secrets.
        assert kubectl("-n", "kube-system", "auth", "can-i", "get", "secrets",
                       who).stdout.strip() == "no"
    finally:
        kubectl("delete", "namespace", ns, "--wait=false")


def test_helm_installs_a_chart_gated_on_the_server_version(control_plane, tmp_path, unique_name):
    chart = tmp_path / "probe"
    (chart / "templates").mkdir(parents=True)
    # helm refuses the install unless the server reports a real 1.36 version (ldflags).
    (chart / "Chart.yaml").write_text(
        "apiVersion: v2\nname: probe\nversion: 0.1.0\nkubeVersion: '>=1.36.0-0 <1.37.0-0'\n"
    )
    (chart / "templates" / "cm.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}\n"
        "data:\n  kube: {{ .Capabilities.KubeVersion.Version | quote }}\n"
    )
    env = control_plane.env()

    def helm(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["helm", *args], env=env, capture_output=True, text=True, timeout=120)

    version = helm("version", "--template", "{{.Version}}")
    assert version.returncode == 0 and version.stdout.startswith("v3."), version
    installed = helm("install", unique_name, str(chart), "--namespace", "default", "--wait")
    assert installed.returncode == 0, installed.stderr
    data = control_plane.kubectl("get", "configmap", unique_name, "-o", "jsonpath={.data.kube}",
                                 check=True).stdout
    assert data == K8S_VERSION
    assert helm("uninstall", unique_name, "--namespace", "default").returncode == 0
    assert gone(control_plane.kubectl, "configmap", unique_name)


def test_stop_leaves_no_process_and_no_files(tmp_path):
    cp = ControlPlane(ControlPlaneConfig(parent_dir=tmp_path, wait_for_controllers=False))
    with cp:
        pids = list(cp.pids.values())
        workdir = cp.workdir
        assert cp.running and len(pids) == 3
    assert not cp.running
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    assert workdir is not None and not workdir.exists()


def test_missing_binaries_name_the_build_command(tmp_path: Path):
    with pytest.raises(BinariesNotFound, match="make controlplane") as info:
        require_binaries(tmp_path)
    assert "kube-apiserver" in str(info.value) and str(tmp_path) in str(info.value)


def test_a_server_that_fails_to_start_is_reported_with_its_log(tmp_path):
    config = ControlPlaneConfig(parent_dir=tmp_path, extra_apiserver_args=("--no-such-flag",))
    with pytest.raises(ControlPlaneError, match="kube-apiserver exited") as info:
        ControlPlane(config).start()
    assert "unknown flag: --no-such-flag" in str(info.value)
    assert list(tmp_path.iterdir()) == [], "a failed start left its temp dir behind"
