"""The two training backends against the real things: Ray's job API and a real API server."""

from __future__ import annotations

import asyncio
import sys

import pytest

from chorus.adapters.voicejob import JobStore, VoiceJob
from chorus.operator.builders import TenantRef
from chorus.operator.kube import KubeClient, load_connection
from chorus.operator.settings import Settings
from chorus.operator.testing import get_json, wait_until
from chorus.operator.training import KubernetesJobBackend, RayJobBackend, job_name

pytestmark = pytest.mark.integration


def _job(tmp_path, base_fp, tenant="acme", identity="feedbeef" * 4) -> VoiceJob:
    return VoiceJob(tenant=tenant, voice="narrator", identity=identity, samples_uri=(tmp_path / "none").as_uri(),
                    samples_hash="h", steps=5, max_minutes=1, rank=4, registry_uri=(tmp_path / "registry").as_uri(),
                    base_fingerprint=base_fp)


def test_ray_backend_runs_the_job_once_and_the_result_comes_back_through_storage(ray_jobs, tmp_path, base_fp):
    backend = RayJobBackend(ray_jobs, python=sys.executable, cpus=0)
    job = _job(tmp_path, base_fp, identity="0badcafe" * 4)
    ref = TenantRef("acme", "uid")
    assert asyncio.run(backend.status(ref, job)).phase == "Missing"
    asyncio.run(backend.submit(ref, job))
    asyncio.run(backend.submit(ref, job))  # a second submission of the same run is a no-op
    status = wait_until(lambda: (s := asyncio.run(backend.status(ref, job))).phase in ("Succeeded", "Failed") and s,
                        timeout=180, interval=1, what="the Ray job to end")
    assert status.phase == "Succeeded", status  # the outcome is recorded, so the process exits 0
    result = JobStore(job).result()
    assert (result.outcome, result.reason) == ("failed", "SamplesNotFound") and "does not exist" in result.message
    asyncio.run(backend.delete(ref, job))
    assert asyncio.run(backend.status(ref, job)).phase == "Missing"


def test_ray_backend_says_when_ray_is_unreachable(tmp_path, base_fp):
    from chorus.operator.training import BackendError

    with pytest.raises(BackendError, match="cannot reach Ray's job API at http://127.0.0.1:9"):
        asyncio.run(RayJobBackend("http://127.0.0.1:9").status(TenantRef("a", "u"), _job(tmp_path, base_fp)))


def test_kubernetes_backend_creates_one_job_in_the_tenant_namespace(control_plane, kubectl, tmp_path, base_fp,
                                                                   unique_name):
    tenant = TenantRef(unique_name[:40], "uid")
    kubectl("create", "namespace", tenant.namespace, check=True)
    settings = Settings(training_image="localhost/chorus-train:test", training_image_pull_policy="Never")

    async def scenario():
        kube = KubeClient(load_connection(control_plane.kubeconfig), "chorus-operator")
        try:
            backend = KubernetesJobBackend(kube, settings)
            job = _job(tmp_path, base_fp, tenant=tenant.name)
            before = await backend.status(tenant, job)
            await backend.submit(tenant, job)
            await backend.submit(tenant, job)
            after = await backend.status(tenant, job)
            return job, before, after, backend
        finally:
            await kube.close()

    job, before, after, backend = asyncio.run(scenario())
    assert before.phase == "Missing" and after.phase == "Pending" and "waits for its pod" in after.message
    created = get_json(kubectl, "job", job_name(job), "-n", tenant.namespace)
    assert created["spec"]["template"]["spec"]["serviceAccountName"] == "chorus-trainer"
    assert get_json(kubectl, "serviceaccount", "chorus-trainer", "-n", tenant.namespace)[
        "automountServiceAccountToken"] is False
    jobs = get_json(kubectl, "jobs", "-n", tenant.namespace)["items"]
    assert len(jobs) == 1
    kubectl("delete", "namespace", tenant.namespace, "--wait=false", check=True)
