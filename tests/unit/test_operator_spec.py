"""VoiceTenant spec models and the CRD schema they mirror (pure, no cluster)."""

from __future__ import annotations

from importlib import resources

import pytest
import yaml

from chorus.operator.spec import SpecError, TenantSpec, parse_spec, validate_tenant_name

OWNER = {"kind": "User", "name": "alice"}


def crd() -> dict:
    text = resources.files("chorus.operator").joinpath("crds/voicetenants.chorus.dev.yaml").read_text()
    return yaml.safe_load(text)


def test_defaults_fill_a_minimal_spec():
    spec = parse_spec({"owners": [OWNER]})
    assert spec.quota.cpu == "4" and spec.quota.pods == 10
    assert spec.limits.default_request.memory == "256Mi"
    assert spec.api.requests_per_minute == 600
    assert spec.voices == []


def test_full_spec_round_trips_by_alias():
    raw = {
        "owners": [OWNER, {"kind": "ServiceAccount", "name": "ci", "namespace": "build"}],
        "quota": {"cpu": 2, "memory": "4Gi", "storage": "1Gi", "pods": 3},
        "limits": {"default": {"cpu": "1", "memory": "1Gi"}, "defaultRequest": {"cpu": "100m", "memory": "128Mi"},
                   "max": {"cpu": "2", "memory": "2Gi"}},
        "api": {"requestsPerMinute": 60, "maxConcurrent": 2, "maxCharsPerRequest": 300},
        "voices": [
            {"name": "narrator", "samples": {"uri": "s3://b/clips/", "training": {"steps": 10, "rank": 4}}},
            {"name": "promo", "adapter": {"uri": "file:///adapters/promo", "sha256": "a" * 64}, "version": 3},
        ],
    }
    spec = parse_spec(raw)
    assert spec.quota.cpu == "2"  # ints become quantity strings
    assert spec.voices[0].samples.training.steps == 10 and spec.voices[0].samples.training.max_minutes == 10
    assert spec.model_dump(by_alias=True, exclude_none=True)["api"]["maxConcurrent"] == 2
    assert TenantSpec.model_validate(spec.model_dump(by_alias=True)) == spec


@pytest.mark.parametrize("raw, fragment", [
    ({"owners": []}, "at least 1 item"),
    ({"owners": [{"kind": "Robot", "name": "r"}]}, "'User', 'Group' or 'ServiceAccount'"),
    ({"owners": [{"kind": "ServiceAccount", "name": "x"}]}, "namespace is required for a ServiceAccount"),
    ({"owners": [{"kind": "User", "name": "a", "namespace": "ns"}]}, "not allowed for a User or Group"),
    ({"owners": [OWNER, OWNER]}, "listed twice"),
    ({"owners": [OWNER], "quota": {"cpu": "-1"}}, "'-1' is not a resource quantity"),
    ({"owners": [OWNER], "quota": {"memory": "lots"}}, "'lots' is not a resource quantity"),
    ({"owners": [OWNER], "quota": {"pods": 5000}}, "less than or equal to 1000"),
    ({"owners": [OWNER], "api": {"requestsPerMinute": 0}}, "greater than or equal to 1"),
    ({"owners": [OWNER], "voices": [{"name": "v"}]}, "exactly one of samples or adapter must be set: it has neither"),
    ({"owners": [OWNER], "voices": [{"name": "v", "samples": {"uri": "s3://a/b"}, "adapter": {"uri": "s3://a/c"}}]},
     "it has both"),
    ({"owners": [OWNER], "voices": [{"name": "v", "adapter": {"uri": "s3://a"}}] * 2}, "repeated: v"),
    ({"owners": [OWNER], "voices": [{"name": "Bad_Name", "adapter": {"uri": "s3://a"}}]}, "spec.voices.0.name"),
    ({"owners": [OWNER], "voices": [{"name": "v", "language": "fr", "adapter": {"uri": "s3://a"}}]}, "'en-us'"),
    ({"owners": [OWNER], "voices": [{"name": "v", "adapter": {"uri": "/local/path"}}]}, "spec.voices.0.adapter.uri"),
    ({"owners": [OWNER], "surprise": 1}, "spec.surprise: Extra inputs are not permitted"),
])
def test_bad_specs_name_the_field(raw, fragment):
    with pytest.raises(SpecError, match=None) as info:
        parse_spec(raw)
    assert fragment in str(info.value)


@pytest.mark.parametrize("name, ok", [
    ("acme", True), ("a1-b2", True), ("x" * 56, True), ("x" * 57, False),
    ("1acme", False), ("Acme", False), ("acme-", False), ("ac_me", False),
])
def test_tenant_names_are_short_dns_labels(name, ok):
    if ok:
        assert validate_tenant_name(name) == name
    else:
        with pytest.raises(SpecError, match="DNS label of at most 56"):
            validate_tenant_name(name)


def _walk(schema: dict, path: str):
    yield path, schema
    for key, sub in (schema.get("properties") or {}).items():
        yield from _walk(sub, f"{path}.{key}")
    if "items" in schema:
        yield from _walk(schema["items"], f"{path}[]")


def test_every_crd_field_has_a_description_for_kubectl_explain():
    schema = crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    missing = [path for path, node in _walk(schema, "") if path != ".metadata" and not node.get("description")]
    assert missing == []


def test_crd_defaults_agree_with_the_model():
    spec_schema = crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
    model = TenantSpec.model_validate({"owners": [OWNER]}).model_dump(by_alias=True)
    for section in ("quota", "api"):
        for field, node in spec_schema[section]["properties"].items():
            assert str(node["default"]) == str(model[section][field]), f"{section}.{field}"
    for part in ("default", "defaultRequest", "max"):
        for field, node in spec_schema["limits"]["properties"][part]["properties"].items():
            assert str(node["default"]) == str(model["limits"][part][field]), f"limits.{part}.{field}"
