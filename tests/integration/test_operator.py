"""The operator on a real control plane: create, update, drift repair, deletion, RBAC isolation, no leaked keys.

One operator subprocess (`python -m chorus.operator`, DEBUG logging, kopf peering) serves the
whole module; each test makes tenants with unique names.
"""

from __future__ import annotations

import base64
import hashlib
import json

import pytest
import yaml

from chorus.operator.apikey import is_valid_api_key
from chorus.operator.process import OperatorProcess
from chorus.operator.testing import apply, get_json, install_crds, tenant_manifest, wait_ready, wait_until

pytestmark = pytest.mark.integration
PLATFORM = "chorus-system"
SEEN_KEYS: list[str] = []  # every API key a test saw; none may appear in the operator's log


@pytest.fixture(scope="module")
def operator(control_plane, kubectl, tmp_path_factory):
    install_crds(kubectl)
    log = tmp_path_factory.mktemp("operator") / "operator.log"
    registry = tmp_path_factory.mktemp("registry")
    with OperatorProcess(control_plane.kubeconfig, log,
                         {"log_level": "DEBUG", "peering_name": "test-operator", "priority": "10",
                          "registry_uri": registry.as_uri()}) as op:
        op.wait_for_log("watching VoiceTenants", timeout=90)
        yield op


def key_of(kubectl, namespace: str) -> str:
    secret = get_json(kubectl, "secret", "chorus-api-key", "-n", namespace)
    key = base64.b64decode(secret["data"]["apiKey"]).decode()
    SEEN_KEYS.append(key)
    return key


def record_of(kubectl, tenant: str) -> dict | None:
    return get_json(kubectl, "configmap", f"tenant-{tenant}", "-n", PLATFORM)


def events_of(kubectl, tenant: str) -> list[dict]:
    found = get_json(kubectl, "events", "-A", "--field-selector",
                     f"involvedObject.kind=VoiceTenant,involvedObject.name={tenant}")
    return found["items"] if found else []


def test_create_makes_every_child(operator, kubectl, unique_name):
    name, ns = unique_name, f"tenant-{unique_name}"
    apply(kubectl, tenant_manifest(
        name, owners=[{"kind": "User", "name": f"{name}-alice"}],
        quota={"cpu": "3", "memory": "6Gi", "pods": 7},
        voices=[{"name": "narrator", "samples": {"uri": f"file:///nonexistent/{name}/narrator/"}},
                {"name": "promo", "adapter": {"uri": f"file:///nonexistent/{name}/promo"}},
                {"name": "jingle", "adapter": {"uri": f"file:///nonexistent/{name}/jingle"}, "version": 2}]))
    tenant = wait_ready(kubectl, name)

    status = tenant["status"]
    assert status["namespace"] == ns and status["apiKeySecret"] == "chorus-api-key"
    assert status["observedGeneration"] == tenant["metadata"]["generation"] and status["phase"] == "Ready"
    assert {c["type"]: c["status"] for c in status["conditions"]} == {
        "Ready": "True", "SpecValid": "True", "ResourcesReady": "True", "ApiKeyReady": "True", "VoicesReady": "False"}
    # Each voice says what is wrong and what to do (the driver's decisions: tests/unit/test_operator_voices.py).
    voices = {v["name"]: v for v in status["voices"]}
    assert [(v["name"], v["state"], v["reason"]) for v in status["voices"]] == [
        ("narrator", "Failed", "SamplesNotFound"), ("promo", "Failed", "AdapterNotFound"),
        ("jingle", "Failed", "PinnedVersionUnavailable")]
    assert "upload recordings there" in voices["narrator"]["message"]
    assert "version 2 is not in the registry" in voices["jingle"]["message"]
    assert voices["narrator"]["lastFailureInfo"]["reason"] == "SamplesNotFound"
    assert status["voiceSummary"] == "0/3"
    assert "chorus.dev/finalizer" in tenant["metadata"]["finalizers"]

    namespace = get_json(kubectl, "namespace", ns)
    assert namespace["metadata"]["labels"]["chorus.dev/tenant"] == name
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    assert namespace["metadata"]["ownerReferences"][0]["uid"] == tenant["metadata"]["uid"]
    assert get_json(kubectl, "resourcequota", "chorus-quota", "-n", ns)["spec"]["hard"] == {
        "limits.cpu": "3", "limits.memory": "6Gi", "pods": "7", "requests.cpu": "3", "requests.memory": "6Gi",
        "requests.storage": "20Gi"}
    limits = get_json(kubectl, "limitrange", "chorus-limits", "-n", ns)["spec"]["limits"][0]
    assert limits["default"] == {"cpu": "1", "memory": "1Gi"} and limits["max"] == {"cpu": "2", "memory": "4Gi"}
    netpol = get_json(kubectl, "networkpolicy", "chorus-ingress", "-n", ns)["spec"]
    assert netpol["podSelector"] == {} and netpol["policyTypes"] == ["Ingress"]
    assert netpol["ingress"] == [{"from": [{"namespaceSelector": {"matchLabels": {
        "kubernetes.io/metadata.name": PLATFORM}}}]}]
    binding = get_json(kubectl, "rolebinding", "chorus-tenant-owners", "-n", ns)
    assert binding["subjects"] == [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": f"{name}-alice"}]
    assert get_json(kubectl, "role", "chorus-tenant-owner", "-n", ns)["rules"]

    key = key_of(kubectl, ns)
    assert is_valid_api_key(key)
    record = record_of(kubectl, name)
    assert record["data"]["apiKeySha256"] == hashlib.sha256(key.encode()).hexdigest()
    assert record["data"]["namespace"] == ns and record["data"]["requestsPerMinute"] == "600"
    assert [(v["name"], v["state"]) for v in json.loads(record["data"]["voices.json"])] == [
        ("narrator", "Failed"), ("promo", "Failed"), ("jingle", "Failed")]
    assert key not in json.dumps(tenant)

    reasons = wait_until(lambda: {e["reason"] for e in events_of(kubectl, name)} & {"KeyIssued"},
                         what="KeyIssued event")
    assert reasons == {"KeyIssued"}
    wait_until(lambda: "VoiceFailed" in {e["reason"] for e in events_of(kubectl, name)}, what="VoiceFailed event")
    assert "KeyIssued" in kubectl("describe", "voicetenant", name, check=True).stdout
    table = kubectl("get", "vt", name, check=True).stdout
    assert "True" in table and "0/3" in table and ns in table


def test_update_applies_owners_and_quota_and_reapply_changes_nothing(operator, kubectl, unique_name):
    name, ns = unique_name, f"tenant-{unique_name}"
    manifest = tenant_manifest(name, owners=[{"kind": "User", "name": f"{name}-alice"}])
    apply(kubectl, manifest)
    first = wait_ready(kubectl, name)
    key = key_of(kubectl, ns)
    versions = {kind: get_json(kubectl, kind, n, "-n", ns)["metadata"]["resourceVersion"]
                for kind, n in (("resourcequota", "chorus-quota"), ("rolebinding", "chorus-tenant-owners"),
                                ("networkpolicy", "chorus-ingress"), ("secret", "chorus-api-key"))}

    apply(kubectl, manifest)  # the same spec again: nothing may change
    assert get_json(kubectl, "voicetenant", name)["metadata"]["generation"] == first["metadata"]["generation"]

    manifest["spec"]["owners"] = [{"kind": "User", "name": f"{name}-bob"}, {"kind": "Group", "name": f"{name}-devs"}]
    manifest["spec"]["quota"] = {"cpu": "1500m", "pods": 3}
    apply(kubectl, manifest)
    wait_ready(kubectl, name, generation=first["metadata"]["generation"] + 1)
    binding = get_json(kubectl, "rolebinding", "chorus-tenant-owners", "-n", ns)
    assert [(s["kind"], s["name"]) for s in binding["subjects"]] == [("User", f"{name}-bob"), ("Group", f"{name}-devs")]
    hard = get_json(kubectl, "resourcequota", "chorus-quota", "-n", ns)["spec"]["hard"]
    assert hard["requests.cpu"] == "1500m" and hard["pods"] == "3" and hard["requests.memory"] == "8Gi"
    assert key_of(kubectl, ns) == key  # an update never rotates the key
    assert get_json(kubectl, "networkpolicy", "chorus-ingress", "-n", ns)["metadata"]["resourceVersion"] == \
        versions["networkpolicy"]
    assert get_json(kubectl, "secret", "chorus-api-key", "-n", ns)["metadata"]["resourceVersion"] == versions["secret"]
    can = kubectl("auth", "can-i", "get", "secret/chorus-api-key", "-n", ns, "--as", f"{name}-alice")
    assert can.stdout.strip() == "no"
    can = kubectl("auth", "can-i", "get", "secret/chorus-api-key", "-n", ns, "--as", f"{name}-bob")
    assert can.stdout.strip() == "yes"


def test_drift_is_repaired_and_the_key_kept(operator, kubectl, unique_name):
    name, ns = unique_name, f"tenant-{unique_name}"
    apply(kubectl, tenant_manifest(name, quota={"pods": 7}))
    wait_ready(kubectl, name)
    key = key_of(kubectl, ns)

    kubectl("delete", "networkpolicy", "chorus-ingress", "-n", ns, check=True)
    wait_until(lambda: get_json(kubectl, "networkpolicy", "chorus-ingress", "-n", ns), what="netpol restored")

    kubectl("patch", "networkpolicy", "chorus-ingress", "-n", ns, "--type=merge",
            "-p", json.dumps({"spec": {"ingress": [{}]}}), check=True)  # open to everyone
    wait_until(lambda: get_json(kubectl, "networkpolicy", "chorus-ingress", "-n", ns)["spec"]["ingress"][0].get("from"),
               what="netpol ingress restored")

    kubectl("patch", "resourcequota", "chorus-quota", "-n", ns, "--type=merge",
            "-p", json.dumps({"spec": {"hard": {"pods": "100"}}}), check=True)
    wait_until(lambda: get_json(kubectl, "resourcequota", "chorus-quota", "-n", ns)["spec"]["hard"]["pods"] == "7",
               what="quota restored")

    kubectl("delete", "rolebinding", "chorus-tenant-owners", "-n", ns, check=True)
    wait_until(lambda: get_json(kubectl, "rolebinding", "chorus-tenant-owners", "-n", ns), what="binding restored")

    kubectl("label", "namespace", ns, "pod-security.kubernetes.io/enforce=privileged", "--overwrite", check=True)
    wait_until(lambda: get_json(kubectl, "namespace", ns)["metadata"]["labels"][
        "pod-security.kubernetes.io/enforce"] == "restricted", what="namespace labels restored")

    kubectl("patch", "configmap", f"tenant-{name}", "-n", PLATFORM, "--type=merge",
            "-p", json.dumps({"data": {"apiKeySha256": "0" * 64}}), check=True)
    wanted = hashlib.sha256(key.encode()).hexdigest()
    wait_until(lambda: record_of(kubectl, name)["data"]["apiKeySha256"] == wanted, what="record restored")
    assert key_of(kubectl, ns) == key  # none of that touched the key

    repaired = wait_until(lambda: [e for e in events_of(kubectl, name) if e["reason"] == "DriftRepaired"],
                          what="DriftRepaired events")
    assert any("NetworkPolicy" in e["message"] and "restored" in e["message"] for e in repaired)
    assert "ApiKeyRegenerated" not in {e["reason"] for e in events_of(kubectl, name)}

    kubectl("delete", "secret", "chorus-api-key", "-n", ns, check=True)
    new_key = wait_until(lambda: get_json(kubectl, "secret", "chorus-api-key", "-n", ns) and key_of(kubectl, ns),
                         what="key Secret re-issued")
    assert is_valid_api_key(new_key) and new_key != key
    new_hash = hashlib.sha256(new_key.encode()).hexdigest()
    wait_until(lambda: record_of(kubectl, name)["data"]["apiKeySha256"] == new_hash, what="record has the new hash")
    regenerated = wait_until(lambda: [e for e in events_of(kubectl, name) if e["reason"] == "ApiKeyRegenerated"],
                             what="ApiKeyRegenerated event")
    assert regenerated[0]["type"] == "Warning" and "old key no longer works" in regenerated[0]["message"]
    assert wait_ready(kubectl, name)



def test_a_deleted_namespace_is_recreated_with_a_new_key(operator, kubectl, unique_name):
    name, ns = unique_name, f"tenant-{unique_name}"
    apply(kubectl, tenant_manifest(name))
    wait_ready(kubectl, name)
    old_uid = get_json(kubectl, "namespace", ns)["metadata"]["uid"]
    key = key_of(kubectl, ns)

    kubectl("delete", "namespace", ns, "--wait=false", check=True)
    fresh = wait_until(lambda: (get_json(kubectl, "namespace", ns) or {"metadata": {"uid": old_uid}})[
        "metadata"]["uid"] != old_uid, timeout=120, what="namespace re-created")
    assert fresh
    new_key = wait_until(lambda: get_json(kubectl, "secret", "chorus-api-key", "-n", ns) and key_of(kubectl, ns),
                         what="key re-issued")
    assert new_key != key
    for kind, obj in (("resourcequota", "chorus-quota"), ("limitrange", "chorus-limits"),
                      ("networkpolicy", "chorus-ingress"), ("role", "chorus-tenant-owner"),
                      ("rolebinding", "chorus-tenant-owners")):
        wait_until(lambda: get_json(kubectl, kind, obj, "-n", ns), what=f"{kind} re-created")
    new_hash = hashlib.sha256(new_key.encode()).hexdigest()
    wait_until(lambda: record_of(kubectl, name)["data"]["apiKeySha256"] == new_hash, what="record has the new hash")
    assert wait_ready(kubectl, name)

def test_delete_removes_the_tenant_and_nothing_of_another(operator, kubectl, unique_name):
    gone, kept = f"{unique_name}-a", f"{unique_name}-b"
    apply(kubectl, tenant_manifest(gone), tenant_manifest(kept))
    wait_ready(kubectl, gone)
    wait_ready(kubectl, kept)
    kept_key = key_of(kubectl, f"tenant-{kept}")
    key_of(kubectl, f"tenant-{gone}")

    result = kubectl("delete", "voicetenant", gone, "--wait=true", "--timeout=60s")
    assert result.returncode == 0, result.stderr
    assert get_json(kubectl, "voicetenant", gone) is None
    assert record_of(kubectl, gone) is None  # deleted by the finalizer's handler
    wait_until(lambda: get_json(kubectl, "namespace", f"tenant-{gone}") is None, timeout=120,
               what="namespace deleted")
    leftovers = get_json(kubectl, "namespaces,configmaps,secrets,roles,rolebindings,networkpolicies", "-A",
                         "-l", f"chorus.dev/tenant={gone}")
    assert (leftovers or {}).get("items", []) == []  # kubectl prints nothing when nothing matches

    assert get_json(kubectl, "namespace", f"tenant-{kept}")["status"]["phase"] == "Active"
    assert key_of(kubectl, f"tenant-{kept}") == kept_key and record_of(kubectl, kept) is not None
    assert wait_ready(kubectl, kept)


def _sar(kubectl, user: str, groups: list[str], namespace: str, verb: str, name: str | None) -> bool:
    review = {"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
              "spec": {"user": user, "groups": groups, "resourceAttributes": {
                  "namespace": namespace, "verb": verb, "resource": "secrets", **({"name": name} if name else {})}}}
    result = kubectl("create", "-o", "json", "-f", "-", input=yaml.safe_dump(review), check=True)
    return json.loads(result.stdout)["status"].get("allowed", False)


def test_an_owner_cannot_read_another_tenants_secret(operator, kubectl, unique_name):
    a, b = f"{unique_name}-a", f"{unique_name}-b"
    alice, devs = f"{unique_name}-alice", f"{unique_name}-devs"
    apply(kubectl, tenant_manifest(a, owners=[{"kind": "User", "name": alice}]),
          tenant_manifest(b, owners=[{"kind": "Group", "name": devs}]))
    wait_ready(kubectl, a)
    wait_ready(kubectl, b)
    ns_a, ns_b = f"tenant-{a}", f"tenant-{b}"

    assert _sar(kubectl, alice, [], ns_a, "get", "chorus-api-key")
    assert not _sar(kubectl, alice, [], ns_b, "get", "chorus-api-key")
    assert not _sar(kubectl, alice, [], ns_a, "list", None)  # no listing, not even her own namespace
    assert not _sar(kubectl, alice, [], ns_a, "get", "some-other-secret")
    assert not _sar(kubectl, alice, [], ns_a, "update", "chorus-api-key")  # owners cannot set a weak key
    assert _sar(kubectl, "carol", [devs], ns_b, "get", "chorus-api-key")
    assert not _sar(kubectl, "carol", [devs], ns_a, "get", "chorus-api-key")

    own = kubectl("get", "secret", "chorus-api-key", "-n", ns_a, "--as", alice, "-o", "json")
    assert own.returncode == 0, own.stderr
    SEEN_KEYS.append(base64.b64decode(json.loads(own.stdout)["data"]["apiKey"]).decode())
    other = kubectl("get", "secret", "chorus-api-key", "-n", ns_b, "--as", alice)
    assert other.returncode != 0 and "Forbidden" in other.stderr
    key_of(kubectl, ns_b)


def test_a_namespace_that_is_not_the_tenants_is_never_taken_or_deleted(operator, kubectl, unique_name):
    name, ns = unique_name, f"tenant-{unique_name}"
    kubectl("create", "namespace", ns, check=True)
    kubectl("create", "configmap", "precious", "-n", ns, "--from-literal=a=b", check=True)
    apply(kubectl, tenant_manifest(name))

    def conflict():
        tenant = get_json(kubectl, "voicetenant", name)
        conds = {c["type"]: c for c in (tenant.get("status") or {}).get("conditions", [])}
        return conds.get("ResourcesReady", {}).get("reason") == "NamespaceConflict" and conds
    conds = wait_until(conflict, what="NamespaceConflict condition")
    assert conds["Ready"]["status"] == "False" and ns in conds["ResourcesReady"]["message"]
    assert "chorus.dev/tenant" not in (get_json(kubectl, "namespace", ns)["metadata"].get("labels") or {})
    assert get_json(kubectl, "secret", "chorus-api-key", "-n", ns) is None

    result = kubectl("delete", "voicetenant", name, "--wait=true", "--timeout=60s")
    assert result.returncode == 0, result.stderr
    assert get_json(kubectl, "namespace", ns)["status"]["phase"] == "Active"
    assert get_json(kubectl, "configmap", "precious", "-n", ns) is not None
    kubectl("delete", "namespace", ns, "--wait=false")


def test_keys_never_reach_logs_events_or_status(operator, kubectl):
    assert SEEN_KEYS, "the tests above saw no keys"
    log = operator.log_text()
    assert "DEBUG" in log  # the strictest level was on
    events = json.dumps(get_json(kubectl, "events", "-A"))
    tenants = json.dumps(get_json(kubectl, "voicetenants"))
    for key in SEEN_KEYS:
        secret_part = key.removeprefix("chorus_")
        assert secret_part not in log and secret_part not in events and secret_part not in tenants
    assert operator.running(), operator.log_text()[-3000:]
