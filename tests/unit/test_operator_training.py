"""The Kubernetes training backend's objects: inside the tenant's namespace, quota and restricted profile."""

from __future__ import annotations

import json

from chorus.adapters.voicejob import VoiceJob
from chorus.operator.builders import TenantRef
from chorus.operator.settings import Settings
from chorus.operator.training import build_trainer_service_account, build_training_job, job_name

REF = TenantRef("acme", "uid-1")
JOB = VoiceJob(tenant="acme", voice="narrator", identity="0123456789abcdef" * 2, samples_uri="s3://b/acme/narrator/",
               samples_hash="h", steps=600, max_minutes=10, rank=8, registry_uri="s3://b/registry",
               base_fingerprint="a" * 64)


def test_the_training_job_runs_restricted_inside_the_tenant_namespace():
    settings = Settings(training_image="localhost/chorus-train:abc", training_image_pull_policy="Never",
                        training_cpu="2", training_memory="4Gi", job_overhead_minutes=20)
    job = build_training_job(REF, JOB, settings, JOB.max_minutes, "chorus-storage")
    assert job["metadata"]["namespace"] == "tenant-acme" and job["metadata"]["name"] == job_name(JOB)
    assert len(job_name(JOB)) <= 63 and job_name(JOB) == "train-narrator-0123456789"
    spec = job["spec"]
    assert spec["activeDeadlineSeconds"] == 30 * 60 and spec["backoffLimit"] == 1 and spec["ttlSecondsAfterFinished"]
    pod = spec["template"]["spec"]
    assert pod["serviceAccountName"] == "chorus-trainer" and pod["automountServiceAccountToken"] is False
    assert pod["securityContext"]["runAsNonRoot"] and pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    (c,) = pod["containers"]
    assert c["image"] == "localhost/chorus-train:abc" and c["imagePullPolicy"] == "Never"
    assert c["securityContext"] == {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                                    "capabilities": {"drop": ["ALL"]}, "runAsNonRoot": True}
    assert c["resources"]["requests"] == c["resources"]["limits"] == {"cpu": "2", "memory": "4Gi"}
    assert c["envFrom"] == [{"secretRef": {"name": "chorus-storage"}}]
    env = {e["name"]: e["value"] for e in c["env"]}
    assert VoiceJob.model_validate(json.loads(env["CHORUS_VOICE_JOB"])) == JOB
    assert c["command"] == ["chorus", "adapter", "job"]
    sa = build_trainer_service_account(REF)
    assert sa["metadata"]["namespace"] == "tenant-acme" and sa["automountServiceAccountToken"] is False


def test_default_training_resources_fit_the_default_limit_range():
    from chorus.operator.spec import Limits

    settings, limits = Settings(), Limits()
    assert settings.training_memory == limits.max.memory and float(settings.training_cpu) <= float(limits.max.cpu)
