"""Pure builders, API keys, conditions, drift detection and voice status of the operator."""

from __future__ import annotations

import json

import kopf
import pytest

from chorus.operator import conditions as c
from chorus.operator.apikey import generate_api_key, hash_api_key, is_valid_api_key, key_matches
from chorus.operator.builders import (
    KEY_SECRET_NAME, TENANT_LABEL, TenantRef, build_api_key_secret, build_children, build_namespace,
    build_network_policy, build_role, build_role_binding, build_tenant_record,
)
from chorus.operator.drift import differences, parse_quantity
from chorus.operator.handlers import apply_result
from chorus.operator.reconcile import Result, compose_status, status_patch, voices_condition
from chorus.operator.spec import parse_spec
from chorus.operator.voices import training_summary, voice_summary

REF = TenantRef("acme", "1234-uid")
SPEC = parse_spec({
    "owners": [{"kind": "User", "name": "alice"}, {"kind": "Group", "name": "acme-devs"},
               {"kind": "ServiceAccount", "name": "ci", "namespace": "build"}],
    "quota": {"cpu": "3", "memory": "6Gi", "pods": 7},
    "voices": [{"name": "narrator", "samples": {"uri": "s3://b/c"}},
               {"name": "promo", "adapter": {"uri": "s3://b/a"}, "version": 2}],
})


def test_every_child_is_labelled_and_owned_by_the_tenant():
    objs = [build_namespace(REF), *build_children(REF, SPEC, "chorus-system"), build_api_key_secret(REF, "k")]
    for obj in objs:
        meta = obj["metadata"]
        assert meta["labels"][TENANT_LABEL] == "acme"
        assert meta["labels"]["app.kubernetes.io/managed-by"] == "chorus-operator"
        assert meta["ownerReferences"] == [{"apiVersion": "chorus.dev/v1alpha1", "kind": "VoiceTenant",
                                            "name": "acme", "uid": "1234-uid", "controller": True,
                                            "blockOwnerDeletion": True}]
        assert meta.get("namespace", "tenant-acme") == "tenant-acme"
    assert build_namespace(REF)["metadata"]["name"] == "tenant-acme"


def test_quota_and_limits_follow_the_spec():
    quota, limits = build_children(REF, SPEC, "chorus-system")[:2]
    assert quota["spec"]["hard"] == {"requests.cpu": "3", "limits.cpu": "3", "requests.memory": "6Gi",
                                     "limits.memory": "6Gi", "requests.storage": "20Gi", "pods": "7"}
    item = limits["spec"]["limits"][0]
    assert item["type"] == "Container" and item["defaultRequest"] == {"cpu": "100m", "memory": "256Mi"}


def test_network_policy_admits_only_the_platform_namespace():
    spec = build_network_policy(REF, "chorus-system")["spec"]
    assert spec["podSelector"] == {} and spec["policyTypes"] == ["Ingress"]
    assert spec["ingress"] == [{"from": [{"namespaceSelector": {
        "matchLabels": {"kubernetes.io/metadata.name": "chorus-system"}}}]}]


def test_owners_can_read_their_key_but_not_list_secrets():
    rules = build_role(REF)["rules"]
    secret_rules = [r for r in rules if "secrets" in r["resources"]]
    assert secret_rules == [{"apiGroups": [""], "resources": ["secrets"], "resourceNames": [KEY_SECRET_NAME],
                             "verbs": ["get", "delete"]}]
    subjects = build_role_binding(REF, SPEC)["subjects"]
    assert subjects == [
        {"kind": "User", "name": "alice", "apiGroup": "rbac.authorization.k8s.io"},
        {"kind": "Group", "name": "acme-devs", "apiGroup": "rbac.authorization.k8s.io"},
        {"kind": "ServiceAccount", "name": "ci", "namespace": "build"},
    ]


def test_api_keys_are_random_and_only_their_hash_is_shared():
    a, b = generate_api_key(), generate_api_key()
    assert a != b and is_valid_api_key(a) and not is_valid_api_key("chorus_short") and not is_valid_api_key(None)
    assert key_matches(a, hash_api_key(a)) and not key_matches(b, hash_api_key(a))
    voices = [{"name": "narrator", "state": "Training", "progress": {"step": 10, "total": 100}},
              {"name": "promo", "state": "Failed", "reason": "GateFailed", "version": 3, "servingVersion": 2,
               "adapterUri": "s3://registry/acme/promo/2"}]
    record = build_tenant_record(REF, SPEC, hash_api_key(a), voices, "chorus-system")
    assert record["metadata"]["namespace"] == "chorus-system"
    assert a not in json.dumps(record) and record["data"]["apiKeySha256"] == hash_api_key(a)
    # The record serves each voice's servingVersion, whatever newer work its state describes.
    assert json.loads(record["data"]["voices.json"]) == [
        {"name": "narrator", "state": "Training", "language": "en-us"},
        {"name": "promo", "state": "Ready", "version": 2, "adapterUri": "s3://registry/acme/promo/2",
         "language": "en-us"}]


def test_voice_summaries_count_serving_voices_and_show_training():
    voices = [{"name": "narrator", "state": "Training", "progress": {"step": 10, "total": 100}},
              {"name": "promo", "state": "Failed", "servingVersion": 2},
              {"name": "jingle", "state": "Preparing"}]
    assert voice_summary(voices) == "1/3"
    assert training_summary(voices) == "narrator 10/100, jingle Preparing"
    cond = voices_condition(voices, 3)
    assert (cond["status"], cond["reason"]) == ("False", c.VOICES_FAILED) and "promo" in cond["message"]
    pending = voices_condition([{"name": "a", "state": "Pending", "reason": "JobSubmitted"}], 3)
    assert (pending["status"], pending["reason"]) == ("False", c.VOICES_PENDING)
    assert voices_condition([], 3)["status"] == "True"


def test_conditions_keep_transition_time_until_status_changes():
    first = c.merge_conditions(None, [c.condition(c.SPEC_VALID, True, "Parsed", "ok", 1)], "2026-01-01T00:00:00Z")
    same = c.merge_conditions(first, [c.condition(c.SPEC_VALID, True, "Parsed", "ok", 2)], "2026-01-02T00:00:00Z")
    flipped = c.merge_conditions(same, [c.condition(c.SPEC_VALID, False, c.INVALID_SPEC, "x", 3)],
                                 "2026-01-03T00:00:00Z")
    assert same[0]["lastTransitionTime"] == "2026-01-01T00:00:00Z" and same[0]["observedGeneration"] == 2
    assert flipped[0]["lastTransitionTime"] == "2026-01-03T00:00:00Z"


def test_ready_and_phase_are_derived_and_status_is_written_only_when_changed():
    parts = [c.condition(c.SPEC_VALID, True, "Parsed", "ok", 1),
             c.condition(c.RESOURCES_READY, True, c.RECONCILED, "ok", 1),
             c.condition(c.API_KEY_READY, False, c.APPLY_FAILED, "no key", 1)]
    status = compose_status(None, 1, parts, "tenant-acme", [], KEY_SECRET_NAME)
    ready = status["conditions"][0]
    assert (ready["type"], ready["status"], ready["reason"]) == (c.READY, "False", c.DEPENDENCIES_NOT_READY)
    assert "ApiKeyReady is False" in ready["message"] and status["phase"] == "Pending"
    assert status_patch(status, compose_status(status, 1, parts, "tenant-acme", [], KEY_SECRET_NAME)) == {}
    parts[2] = c.condition(c.API_KEY_READY, True, c.KEY_PRESENT, "ok", 1)
    patch = status_patch(status, compose_status(status, 1, parts, "tenant-acme", [], KEY_SECRET_NAME))
    assert set(patch) == {"conditions", "phase"} and patch["phase"] == "Ready"
    invalid = compose_status(status, 2, [c.condition(c.SPEC_VALID, False, c.INVALID_SPEC, "bad", 2)], None, None, None)
    assert invalid["phase"] == "Failed" and status_patch(status, invalid)["voices"] is None


def test_drift_compares_only_what_the_operator_sets_and_quantities_by_value():
    desired = build_children(REF, SPEC, "chorus-system")[0]
    observed = json.loads(json.dumps(desired))
    observed["metadata"].update(uid="x", resourceVersion="9", annotations={"note": "people may annotate"})
    observed["spec"]["hard"]["requests.cpu"] = "3000m"
    observed["status"] = {"used": {}}
    assert differences(desired, observed) == []
    observed["spec"]["hard"]["pods"] = "100"
    del observed["metadata"]["labels"][TENANT_LABEL]
    assert differences(desired, observed) == ["metadata.labels.chorus.dev/tenant", "spec.hard.pods"]
    netpol = build_network_policy(REF, "chorus-system")
    opened = json.loads(json.dumps(netpol))
    opened["spec"]["ingress"] = [{}]
    assert differences(netpol, opened) == ["spec.ingress[0].from"]


def test_parse_quantity():
    assert parse_quantity("500m") == parse_quantity("0.5")
    assert parse_quantity("1Gi") == 1024 ** 3 and parse_quantity("1e3") == 1000 and parse_quantity(2) == 2
    assert parse_quantity("lots") is None and parse_quantity("1Xi") is None


def test_a_bad_spec_becomes_a_condition_and_a_permanent_error():
    bad = c.condition(c.SPEC_VALID, False, c.INVALID_SPEC, "fix the spec and re-apply: spec.owners: too few", 4)
    result = Result(compose_status(None, 4, [bad], None, None, None), permanent_error="spec.owners: too few")
    patch = kopf.Patch()
    with pytest.raises(kopf.PermanentError, match="invalid spec: spec.owners: too few"):
        apply_result(result, REF, {}, patch, None)
    conds = {cond["type"]: cond for cond in patch["status"]["conditions"]}
    assert conds["SpecValid"]["reason"] == "InvalidSpec" and "fix the spec" in conds["SpecValid"]["message"]
    assert conds["Ready"]["status"] == "False" and patch["status"]["phase"] == "Failed"

    retry = Result(compose_status(None, 4, [c.condition(c.SPEC_VALID, True, "Parsed", "ok", 4)], None, None, None),
                   retry_after_s=3.0)
    with pytest.raises(kopf.TemporaryError) as info:
        apply_result(retry, REF, {}, kopf.Patch(), None)
    assert info.value.delay == 3.0


def test_events_are_filed_where_kubectl_describe_finds_them():
    import datetime as dt

    from chorus.operator.events import build_event

    event = build_event(REF, "Warning", "DriftRepaired", "NetworkPolicy x was deleted; restored",
                        dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.timezone.utc))
    assert event["metadata"]["namespace"] == "default"
    assert event["involvedObject"] == {"apiVersion": "chorus.dev/v1alpha1", "kind": "VoiceTenant",
                                       "name": "acme", "uid": "1234-uid"}  # no namespace: cluster-scoped
    assert (event["type"], event["reason"], event["firstTimestamp"]) == ("Warning", "DriftRepaired",
                                                                         "2026-01-02T03:04:05Z")
