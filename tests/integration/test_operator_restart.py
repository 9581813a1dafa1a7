"""Operator crashes and replicas: a killed operator's successor converges with no duplicates; two replicas do not fight."""

from __future__ import annotations

import base64
import time
import uuid

import pytest

from chorus.operator.process import OperatorProcess
from chorus.operator.testing import apply, get_json, install_crds, tenant_manifest, wait_ready, wait_until

pytestmark = pytest.mark.integration


def _key(kubectl, tenant: str) -> str | None:
    secret = get_json(kubectl, "secret", "chorus-api-key", "-n", f"tenant-{tenant}")
    return base64.b64decode(secret["data"]["apiKey"]).decode() if secret else None


def _count(kubectl, kinds: str, tenant: str) -> int:
    return len((get_json(kubectl, kinds, "-A", "-l", f"chorus.dev/tenant={tenant}") or {}).get("items", []))


def test_killed_midway_then_restarted_converges_without_duplicates(control_plane, kubectl, tmp_path, unique_name):
    install_crds(kubectl)
    peering = f"restart-{uuid.uuid4().hex[:6]}"
    names = [f"{unique_name}-{i}" for i in range(8)]
    first = OperatorProcess(control_plane.kubeconfig, tmp_path / "first.log",
                            {"peering_name": peering, "priority": "1"})
    with first:
        first.wait_for_log("watching VoiceTenants", timeout=90)
        apply(kubectl, *[tenant_manifest(n) for n in names])
        wait_ready(kubectl, names[0])
        first.kill()  # SIGKILL while the other tenants are still being worked on
    keys_before = {n: _key(kubectl, n) for n in names}
    assert keys_before[names[0]] is not None
    settled = {kind: get_json(kubectl, kind, obj, "-n", f"tenant-{names[0]}")["metadata"]["resourceVersion"]
               for kind, obj in (("networkpolicy", "chorus-ingress"), ("rolebinding", "chorus-tenant-owners"))}

    # While no operator runs: one spec changes and one tenant is added.
    apply(kubectl, tenant_manifest(names[1], quota={"pods": 4}))
    late = f"{unique_name}-late"
    apply(kubectl, tenant_manifest(late))

    # A higher priority than the dead peer's entry, which lingers until its lifetime ends.
    with OperatorProcess(control_plane.kubeconfig, tmp_path / "second.log",
                         {"peering_name": peering, "priority": "2"}) as second:
        second.wait_for_log("watching VoiceTenants", timeout=90)
        for n in names + [late]:
            wait_ready(kubectl, n, timeout=90)
        wait_until(lambda: get_json(kubectl, "resourcequota", "chorus-quota", "-n", f"tenant-{names[1]}")[
            "spec"]["hard"]["pods"] == "4", what="update made while down applied")
        for n in names + [late]:
            assert _count(kubectl, "namespaces", n) == 1
            assert _count(kubectl, "secrets", n) == 1
            assert _count(kubectl, "configmaps", n) == 1  # the platform record
            assert _count(kubectl, "resourcequotas,limitranges,networkpolicies,roles,rolebindings", n) == 5
            if keys_before.get(n):
                assert _key(kubectl, n) == keys_before[n], f"{n}: key rotated by the restart"
        for kind, obj in (("networkpolicy", "chorus-ingress"), ("rolebinding", "chorus-tenant-owners")):
            version = get_json(kubectl, kind, obj, "-n", f"tenant-{names[0]}")["metadata"]["resourceVersion"]
            assert version == settled[kind], f"the restart rewrote {kind} of a settled tenant"
        assert second.running()


def test_two_replicas_do_not_fight(control_plane, kubectl, tmp_path, unique_name):
    install_crds(kubectl)
    peering = f"pair-{uuid.uuid4().hex[:6]}"
    leader = OperatorProcess(control_plane.kubeconfig, tmp_path / "leader.log",
                             {"peering_name": peering, "priority": "20"})
    standby = OperatorProcess(control_plane.kubeconfig, tmp_path / "standby.log",
                              {"peering_name": peering, "priority": "10"})
    with leader, standby:
        leader.wait_for_log("watching VoiceTenants", timeout=90)
        # A replica starts paused and stays so while a higher-priority peer is alive (kopf says
        # nothing then); it logs when it resumes.
        standby.wait_for_log("Initial authentication has finished", timeout=90)
        time.sleep(3)
        one, two = f"{unique_name}-1", f"{unique_name}-2"
        apply(kubectl, tenant_manifest(one))
        wait_ready(kubectl, one)
        assert f"[{one}]" in leader.log_text() and f"[{one}]" not in standby.log_text()

        leader.stop()  # a graceful exit leaves the peering at once
        standby.wait_for_log("Resuming operations", timeout=90)
        apply(kubectl, tenant_manifest(two))
        wait_ready(kubectl, two)
        assert f"[{two}]" in standby.log_text()
