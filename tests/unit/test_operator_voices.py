"""The voice driver's decisions, on a real file:// registry and job store, with a backend that records calls."""

from __future__ import annotations

import asyncio
import hashlib
from datetime import UTC, datetime
from pathlib import Path

import pytest

from chorus.adapters.artifact import MANIFEST_FILE, QualityRecord, write_artifact
from chorus.adapters.gate import GateThresholds, evaluate_gate
from chorus.adapters.registry import Registry
from chorus.adapters.testartifacts import TEST_DATASET_HASH, passing_quality, tiny_peft_model
from chorus.adapters.voicejob import JobStore, Progress, Result
from chorus.operator.builders import TenantRef
from chorus.operator.settings import Settings
from chorus.operator.spec import Voice
from chorus.operator.training import RunStatus
from chorus.operator.voices import TrainingVoiceDriver, transition_events

BASE = "a" * 64
OTHER_BASE = "b" * 64
TENANT = TenantRef("acme", "uid-1")


class FakeBackend:
    """Records submissions; each run's phase is whatever the test sets (Missing until submitted)."""

    name = "fake"

    def __init__(self) -> None:
        self.submitted: list[str] = []
        self.phase: dict[str, str] = {}
        self.deleted: list[str] = []

    async def status(self, tenant, job):
        return RunStatus(self.phase.get(job.name, "Missing"), "")

    async def submit(self, tenant, job):
        self.submitted.append(job.name)
        self.phase[job.name] = "Pending"
        self.last_job = job

    async def delete(self, tenant, job):
        self.deleted.append(job.name)


def failing_quality() -> QualityRecord:
    good = passing_quality()
    metrics = good.metrics.model_copy(update={"similarity_adapted": 0.70})
    return QualityRecord(metrics=metrics, thresholds=GateThresholds(), gate=evaluate_gate(metrics, GateThresholds()))


def publish(registry_root: Path, tmp: Path, identity: str | None, passed: bool = True, base: str = BASE,
            voice: str = "narrator", seed: int = 0) -> int:
    """Publish a tiny artifact as a job would: its identity in the manifest's training settings."""
    out = tmp / f"art-{voice}-{seed}-{identity}-{base[0]}"
    write_artifact(tiny_peft_model(seed), out, tenant="acme", voice=voice, base_fingerprint=base,
                   dataset_hash=TEST_DATASET_HASH, training={"identity": identity} if identity else {},
                   quality=passing_quality() if passed else failing_quality(), profile={})
    return Registry(registry_root.as_uri()).publish(out).version


@pytest.fixture
def env(tmp_path):
    samples = tmp_path / "samples"
    samples.mkdir()
    (samples / "a.wav").write_bytes(b"RIFF fake audio 1")
    registry = tmp_path / "registry"
    registry.mkdir()
    settings = Settings(registry_uri=registry.as_uri(), standalone=True, keep_versions=3)
    backend = FakeBackend()
    driver = TrainingVoiceDriver(settings, backend, BASE)
    return tmp_path, samples, registry, settings, backend, driver


def samples_voice(samples: Path, **extra) -> Voice:
    return Voice.model_validate({"name": "narrator", "samples": {"uri": samples.as_uri()}, **extra})


def observe(driver, voice, prev=None):
    return asyncio.run(driver.observe(TENANT, voice, prev))


def test_a_samples_voice_trains_once_and_serves_when_its_version_passes(env):
    tmp, samples, registry, settings, backend, driver = env
    voice = samples_voice(samples)
    first = observe(driver, voice)
    assert (first["state"], first["reason"]) == ("Pending", "JobSubmitted") and len(backend.submitted) == 1
    assert "servingVersion" not in first
    job = backend.last_job
    assert job.tenant == "acme" and job.voice == "narrator" and job.base_fingerprint == BASE

    backend.phase[job.name] = "Running"
    JobStore(job).write_progress(Progress(stage="Training", step=50, total=200, loss=0.5, eta_s=30,
                                          updated=datetime.now(UTC)))
    training = observe(driver, voice, first)
    assert training["state"] == "Training" and training["progress"] == {
        "step": 50, "total": 200, "percent": 25, "loss": "0.5000", "etaSeconds": 30}
    # Progress is throttled per voice: a poll right after shows the same figures.
    JobStore(job).write_progress(Progress(stage="Training", step=60, total=200, updated=datetime.now(UTC)))
    assert observe(driver, voice, training)["progress"]["step"] == 50

    version = publish(registry, tmp, job.identity)
    ready = observe(driver, voice, training)
    assert (ready["state"], ready["reason"], ready["servingVersion"], ready["version"]) == (
        "Ready", "VersionReady", version, version)
    assert ready["adapterUri"] == f"{registry.as_uri()}/acme/narrator/{version}"
    assert ready["gate"] == {"passed": True, "version": version} and ready["quality"]["similarityGapClosed"] > 0.7
    assert ("Normal", "VoiceServing", "voice narrator now serves version 1") in transition_events([training], [ready])

    # A restarted operator (a new driver, status from the object) neither retrains nor resubmits.
    again = observe(TrainingVoiceDriver(settings, backend, BASE), voice, ready)
    assert again == ready and len(backend.submitted) == 1


def test_changed_samples_train_a_new_version_while_the_old_one_serves_and_a_failing_gate_keeps_it(env):
    tmp, samples, registry, settings, backend, driver = env
    voice = samples_voice(samples)
    observe(driver, voice)
    v1 = publish(registry, tmp, backend.last_job.identity)
    ready = observe(driver, voice)
    (samples / "b.wav").write_bytes(b"RIFF more audio")
    pending = observe(driver, voice, ready)
    assert len(backend.submitted) == 2 and backend.submitted[0] != backend.submitted[1]
    assert (pending["state"], pending["servingVersion"]) == ("Pending", v1)

    v2 = publish(registry, tmp, backend.last_job.identity, passed=False, seed=1)
    failed = observe(driver, voice, pending)
    assert (failed["state"], failed["reason"], failed["servingVersion"], failed["version"]) == (
        "Failed", "GateFailed", v1, v2)
    assert "similarity" in failed["message"] and f"version {v1} keeps serving" in failed["message"]
    assert failed["gate"]["passed"] is False and failed["lastFailureInfo"]["reason"] == "GateFailed"
    assert observe(driver, voice, failed)["lastFailureInfo"] == failed["lastFailureInfo"]  # time kept
    # Changed training settings are a new identity too.
    retuned = Voice.model_validate({"name": "narrator", "samples": {"uri": samples.as_uri(), "training": {"steps": 10}}})
    observe(driver, retuned, failed)
    assert len(backend.submitted) == 3


def test_a_pin_serves_that_version_and_trains_nothing(env):
    tmp, samples, registry, settings, backend, driver = env
    v1 = publish(registry, tmp, "x" * 32)
    v2 = publish(registry, tmp, "y" * 32, seed=1)
    pinned = observe(driver, samples_voice(samples, version=v1), {"name": "narrator", "servingVersion": v2})
    assert (pinned["state"], pinned["reason"], pinned["servingVersion"]) == ("Ready", "Pinned", v1)
    missing = observe(driver, samples_voice(samples, version=9), pinned)
    assert (missing["state"], missing["reason"], missing["servingVersion"]) == ("Failed", "PinnedVersionUnavailable", v1)
    assert "published: [1, 2]" in missing["message"] and backend.submitted == []


def test_a_job_that_recorded_a_failure_is_not_rerun(env):
    tmp, samples, registry, settings, backend, driver = env
    voice = samples_voice(samples)
    observe(driver, voice)
    job = backend.last_job
    JobStore(job).write_result(Result(outcome="failed", reason="TooLittleSpeech",
                                      message="too little usable speech: 12.0 s usable", finished=datetime.now(UTC)))
    failed = observe(driver, voice)
    assert (failed["state"], failed["reason"]) == ("Failed", "TooLittleSpeech")
    assert "12.0 s usable" in failed["message"] and "re-apply" in failed["message"] and len(backend.submitted) == 1
    backend.phase[job.name] = "Failed"
    JobStore(job).clear()
    crashed = observe(driver, voice)
    assert crashed["reason"] == "TrainingJobFailed" and len(backend.submitted) == 1


def test_missing_samples_say_where_to_put_them(env):
    tmp, samples, registry, settings, backend, driver = env
    status = observe(driver, samples_voice(tmp / "nowhere"))
    assert (status["state"], status["reason"]) == ("Failed", "SamplesNotFound")
    assert "no samples at" in status["message"] and "30 s of speech" in status["message"]


@pytest.mark.parametrize("policy", ["retrain", "fail"])
def test_adapters_of_another_base_are_never_served(env, policy):
    tmp, samples, registry, settings, backend, _ = env
    driver = TrainingVoiceDriver(settings.model_copy(update={"on_base_change": policy}), backend, BASE)
    old = publish(registry, tmp, "z" * 32, base=OTHER_BASE)
    status = observe(driver, samples_voice(samples), {"name": "narrator", "servingVersion": old})
    assert "servingVersion" not in status
    if policy == "fail":
        assert (status["state"], status["reason"]) == ("Failed", "BaseModelChanged") and backend.submitted == []
    else:
        assert status["reason"] == "JobSubmitted" and len(backend.submitted) == 1


def test_prebuilt_adapters_are_verified_then_published_as_the_voice(env):
    tmp, samples, registry, settings, backend, driver = env
    art = tmp / "prebuilt"
    write_artifact(tiny_peft_model(3), art, tenant="someone", voice="else", base_fingerprint=BASE,
                   dataset_hash=TEST_DATASET_HASH, training={}, quality=passing_quality(), profile={})
    sha = hashlib.sha256((art / MANIFEST_FILE).read_bytes()).hexdigest()
    voice = Voice.model_validate({"name": "promo", "adapter": {"uri": art.as_uri(), "sha256": sha}})
    ready = observe(driver, voice)
    assert (ready["state"], ready["servingVersion"]) == ("Ready", 1), ready
    published = Registry(registry.as_uri()).manifest("acme", "promo", 1)
    assert published.training["source_uri"] == art.as_uri() and published.tenant == "acme"
    assert observe(driver, voice, ready) == ready  # attached once
    assert len(Registry(registry.as_uri()).versions("acme", "promo")) == 1

    wrong = Voice.model_validate({"name": "promo", "adapter": {"uri": art.as_uri(), "sha256": "0" * 64}})
    bad = observe(driver, wrong, ready)
    assert (bad["state"], bad["reason"], bad["servingVersion"]) == ("Failed", "AdapterInvalid", 1)
    assert "sha256" in bad["message"]
    gone = observe(driver, Voice.model_validate({"name": "promo", "adapter": {"uri": (tmp / "none").as_uri()}}))
    assert gone["reason"] == "AdapterNotFound"
    other = tmp / "other"
    write_artifact(tiny_peft_model(4), other, tenant="acme", voice="promo", base_fingerprint=OTHER_BASE,
                   dataset_hash=TEST_DATASET_HASH, training={}, quality=None, profile={})
    assert observe(driver, Voice.model_validate({"name": "promo", "adapter": {"uri": other.as_uri()}}))[
        "reason"] == "BaseModelMismatch"


def test_old_versions_are_pruned_and_a_deleted_tenant_takes_its_adapters(env):
    tmp, samples, registry, settings, backend, driver = env
    voice = samples_voice(samples)
    for seed in range(4):
        publish(registry, tmp, f"{seed}" * 32, seed=seed)
    observe(driver, voice)
    mine = publish(registry, tmp, backend.last_job.identity, seed=9)
    ready = observe(driver, voice, {"name": "narrator", "servingVersion": 2})
    assert ready["servingVersion"] == mine
    assert Registry(registry.as_uri()).versions("acme", "narrator") == [2, 3, 4, 5]  # newest 3 + the one serving
    asyncio.run(driver.forget(TENANT))
    assert Registry(registry.as_uri()).tenants() == []


def test_an_operator_restarted_mid_training_finds_the_running_job(env):
    tmp, samples, registry, settings, backend, driver = env
    voice = samples_voice(samples)
    submitted = observe(driver, voice)
    backend.phase[backend.last_job.name] = "Running"
    restarted = TrainingVoiceDriver(settings, backend, BASE)
    status = observe(restarted, voice, submitted)
    assert status["state"] == "Preparing" and len(backend.submitted) == 1  # no progress written yet: preparing
