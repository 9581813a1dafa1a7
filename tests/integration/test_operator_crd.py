"""The VoiceTenant CRD on a real API server: bad manifests are refused with messages that say what is wrong."""

from __future__ import annotations

import copy

import pytest
import yaml

from chorus.operator.testing import install_crds, tenant_manifest

pytestmark = pytest.mark.integration

VALID_SPEC = {
    "owners": [{"kind": "User", "name": "alice"}, {"kind": "ServiceAccount", "name": "ci", "namespace": "build"}],
    "quota": {"cpu": "2", "memory": "4Gi", "pods": 5},
    "limits": {"default": {"cpu": "500m", "memory": "512Mi"}},
    "api": {"requestsPerMinute": 60},
    "voices": [
        {"name": "narrator", "samples": {"uri": "s3://bucket/clips/", "training": {"steps": 200, "rank": 4}}},
        {"name": "promo", "version": 3, "adapter": {"uri": "file:///srv/adapters/promo", "sha256": "ab" * 32}},
    ],
}


def _with(path: str, value, name: str = "valid-tenant") -> dict:
    """VALID_SPEC's manifest with the dotted path (list indexes as numbers) set to value (DELETE removes it)."""
    manifest = tenant_manifest(name, owners=VALID_SPEC["owners"])
    manifest["spec"] = copy.deepcopy(VALID_SPEC)
    *parents, last = path.split(".")
    node = manifest
    for part in parents:
        node = node[int(part)] if part.isdigit() else node.setdefault(part, {})
    key = int(last) if last.isdigit() else last
    if value == "DELETE":
        del node[key]
    else:
        node[key] = value
    return manifest


MALFORMED = [
    # (case id, manifest, fragment the API server's answer must contain)
    ("name-not-dns-label", _with("spec.api.maxConcurrent", 2, name="acme.corp"), "metadata.name must be a DNS label"),
    ("name-too-long", _with("spec.api.maxConcurrent", 2, name="a" * 57), "at most 56 characters"),
    ("spec-missing", _with("spec", "DELETE"), "spec: Required value"),
    ("owners-missing", _with("spec.owners", "DELETE"), "spec.owners: Required value"),
    ("owners-empty", _with("spec.owners", []), "should have at least 1 items"),
    ("owner-kind-unknown", _with("spec.owners.0.kind", "Robot"), 'Unsupported value: "Robot"'),
    ("service-account-without-namespace", _with("spec.owners.1.namespace", "DELETE"),
     "namespace is required for a ServiceAccount owner"),
    ("user-with-namespace", _with("spec.owners.0.namespace", "build"), "not allowed for a User or Group owner"),
    ("owner-listed-twice", _with("spec.owners", [{"kind": "User", "name": "a"}] * 2), "Duplicate value"),
    ("quota-cpu-negative-string", _with("spec.quota.cpu", "-1"), "spec.quota.cpu in body should match"),
    ("quota-memory-not-a-quantity", _with("spec.quota.memory", "lots"), "spec.quota.memory in body should match"),
    ("quota-cpu-negative-int", _with("spec.quota.cpu", -2), "cpu must not be negative"),
    ("quota-pods-too-many", _with("spec.quota.pods", 5000), "less than or equal to 1000"),
    ("rate-zero", _with("spec.api.requestsPerMinute", 0), "greater than or equal to 1"),
    ("concurrency-too-high", _with("spec.api.maxConcurrent", 1000), "less than or equal to 256"),
    ("limits-request-above-limit", _with("spec.limits.defaultRequest", {"cpu": "2", "memory": "1Mi"}),
     "limits.defaultRequest.cpu must not exceed limits.default.cpu"),
    ("limits-default-above-max", _with("spec.limits.max", {"cpu": "4", "memory": "256Mi"}),
     "limits.default.memory must not exceed limits.max.memory"),
    ("voice-without-source", _with("spec.voices.0.samples", "DELETE"),
     "exactly one of samples or adapter must be set: this voice has neither"),
    ("voice-with-both-sources", _with("spec.voices.1.samples", {"uri": "s3://b/c"}),
     "exactly one of samples or adapter must be set: this voice has both"),
    ("voice-names-repeat", _with("spec.voices.1.name", "narrator"), "Duplicate value"),
    ("voice-name-not-dns-label", _with("spec.voices.0.name", "Narrator_1"), "spec.voices[0].name in body should match"),
    ("voice-name-too-long", _with("spec.voices.0.name", "n" * 41), "spec.voices[0].name"),
    ("language-unsupported", _with("spec.voices.0.language", "fr"), 'Unsupported value: "fr"'),
    ("samples-uri-not-a-uri", _with("spec.voices.0.samples.uri", "/home/me/clips"),
     "spec.voices[0].samples.uri in body should match"),
    ("training-steps-zero", _with("spec.voices.0.samples.training.steps", 0), "greater than or equal to 1"),
    ("training-rank-too-high", _with("spec.voices.0.samples.training.rank", 128), "less than or equal to 64"),
    ("training-minutes-too-long", _with("spec.voices.0.samples.training.maxMinutes", 1000),
     "less than or equal to 240"),
    ("adapter-uri-missing", _with("spec.voices.1.adapter.uri", "DELETE"), "spec.voices[1].adapter.uri: Required value"),
    ("adapter-sha256-not-hex", _with("spec.voices.1.adapter.sha256", "xyz"),
     "spec.voices[1].adapter.sha256 in body should match"),
    ("version-pin-zero", _with("spec.voices.1.version", 0), "spec.voices[1].version in body should be greater than or equal to 1"),
    ("version-pin-not-a-number", _with("spec.voices.1.version", "latest"), "spec.voices[1].version: Invalid value"),
    ("too-many-voices", _with("spec.voices", [{"name": f"v{i}", "adapter": {"uri": "s3://b/a"}} for i in range(33)]),
     "must have at most 32 items"),
    ("unknown-spec-field", _with("spec.bogus", True), 'unknown field "spec.bogus"'),
    ("unknown-voice-field", _with("spec.voices.0.colour", "blue"), 'unknown field "spec.voices[0].colour"'),
]


@pytest.fixture(scope="module")
def crds(kubectl):
    install_crds(kubectl)


def _dry_run(kubectl, manifest: dict):
    return kubectl("create", "--dry-run=server", "--validate=strict", "-f", "-", input=yaml.safe_dump(manifest))


def test_a_valid_manifest_is_accepted_and_defaulted(crds, kubectl):
    result = kubectl("create", "--dry-run=server", "--validate=strict", "-o", "yaml", "-f", "-",
                     input=yaml.safe_dump(_with("spec.api.maxConcurrent", 2)))
    assert result.returncode == 0, result.stderr
    spec = yaml.safe_load(result.stdout)["spec"]
    assert spec["quota"]["storage"] == "20Gi" and spec["limits"]["max"] == {"cpu": "2", "memory": "4Gi"}
    assert spec["voices"][0]["language"] == "en-us" and spec["voices"][0]["samples"]["training"]["maxMinutes"] == 10


@pytest.mark.parametrize("case, manifest, fragment", MALFORMED, ids=[m[0] for m in MALFORMED])
def test_malformed_manifest_is_rejected_with_a_clear_message(crds, kubectl, case, manifest, fragment):
    result = _dry_run(kubectl, manifest)
    assert result.returncode != 0, f"{case}: accepted, but should have been refused"
    assert fragment in result.stderr, f"{case}: {result.stderr}"


def test_kubectl_explain_documents_the_fields(crds, kubectl):
    result = kubectl("explain", "voicetenant.spec.voices.samples.training.rank")
    assert result.returncode == 0, result.stderr
    assert "LoRA rank" in result.stdout
    result = kubectl("explain", "vt.status.voices.lastFailureInfo")
    assert "last failure" in result.stdout


def test_printer_columns_and_short_names(crds, kubectl):
    result = kubectl("get", "vt", "--no-headers=false")
    assert result.returncode == 0, result.stderr
    crd = yaml.safe_load(kubectl("get", "crd", "voicetenants.chorus.dev", "-o", "yaml", check=True).stdout)
    columns = [c["name"] for c in crd["spec"]["versions"][0]["additionalPrinterColumns"]]
    assert columns == ["Ready", "Voices", "Training", "Namespace", "Phase", "Age"]
    assert crd["spec"]["scope"] == "Cluster" and "vt" in crd["spec"]["names"]["shortNames"]
