"""Where training runs: one interface, two backends (a Ray job, or a Kubernetes Job in the tenant's namespace).

A backend only starts, finds and stops runs, by a name derived from the job's identity, so an
operator restarted mid-training finds the run it started instead of starting a second. What a run
did (progress, the published version, why it failed) is read back from storage
(`chorus.adapters.voicejob.JobStore`), the same way for both backends, never from logs.
"""

from __future__ import annotations

import asyncio
import logging
import shlex
import time
from typing import Literal, NamedTuple, Protocol

from chorus.adapters.voicejob import VoiceJob
from chorus.operator.builders import TenantRef, labels
from chorus.operator.kube import ApiError, KubeClient
from chorus.operator.settings import Settings

log = logging.getLogger(__name__)
TRAINER_SERVICE_ACCOUNT = "chorus-trainer"
STORAGE_SECRET_COPY = "chorus-storage"  # the platform's storage credentials, copied into the tenant namespace
VOICE_LABEL = "chorus.dev/voice"
Phase = Literal["Missing", "Pending", "Running", "Succeeded", "Failed"]


class RunStatus(NamedTuple):
    """What the backend knows of a run."""

    phase: Phase
    message: str = ""


class BackendError(RuntimeError):
    """The backend could not be reached or refused a request; the message says which and why."""


class TrainingBackend(Protocol):
    """Starts, finds and stops training runs by the job's name."""

    name: str

    async def status(self, tenant: TenantRef, job: VoiceJob) -> RunStatus:
        """The run's phase; Missing if there is none."""
        ...

    async def submit(self, tenant: TenantRef, job: VoiceJob) -> None:
        """Start the run (a run of that name that already exists is left alone)."""
        ...

    async def delete(self, tenant: TenantRef, job: VoiceJob) -> None:
        """Stop and forget the run, if there is one."""
        ...


# ---- Ray ------------------------------------------------------------------------------------------
class RayJobBackend:
    """Ray's job submission API: the job runs `python -m chorus.adapters.voicejob` on the Ray cluster."""

    name = "ray"

    def __init__(self, address: str, python: str = "python", cpus: float = 1.0, env: dict[str, str] | None = None):
        self.address, self.python, self.cpus, self.env = address, python, cpus, dict(env or {})
        self._client = None

    def _c(self):
        if self._client is None:
            from ray.job_submission import JobSubmissionClient

            try:
                self._client = JobSubmissionClient(self.address)
            except Exception as exc:  # ConnectionError, or Ray's own on a bad address
                raise BackendError(f"cannot reach Ray's job API at {self.address}: {exc}") from None
        return self._client

    def _status(self, job: VoiceJob) -> RunStatus:
        try:
            info = self._c().get_job_info(job.name)
        except RuntimeError as exc:
            if "does not exist" in str(exc):
                return RunStatus("Missing")
            raise BackendError(f"Ray job {job.name}: {str(exc)[:300]}") from None
        except Exception as exc:
            self._client = None
            raise BackendError(f"cannot reach Ray's job API at {self.address}: {exc}") from None
        phase = {"PENDING": "Pending", "RUNNING": "Running", "SUCCEEDED": "Succeeded"}.get(str(info.status), "Failed")
        return RunStatus(phase, (info.message or "").strip()[:500])

    def _submit(self, job: VoiceJob) -> None:
        entrypoint = f"{shlex.quote(self.python)} -P -m chorus.adapters.voicejob"
        try:
            self._c().submit_job(entrypoint=entrypoint, submission_id=job.name, entrypoint_num_cpus=self.cpus,
                                 runtime_env={"env_vars": {**self.env, "CHORUS_VOICE_JOB": job.model_dump_json()}},
                                 metadata={"tenant": job.tenant, "voice": job.voice, "identity": job.identity})
        except RuntimeError as exc:
            if "already exists" in str(exc):
                return
            raise BackendError(f"Ray refused job {job.name}: {str(exc)[-300:]}") from None
        log.info("submitted Ray job %s", job.name)

    def _delete(self, job: VoiceJob) -> None:
        client = self._c()
        try:
            client.stop_job(job.name)
        except RuntimeError:
            pass
        for _ in range(50):  # a job can be deleted only once it has stopped
            try:
                if client.get_job_status(job.name).is_terminal():
                    client.delete_job(job.name)
                    return
            except RuntimeError:
                return
            time.sleep(0.2)

    async def status(self, tenant: TenantRef, job: VoiceJob) -> RunStatus:
        """The Ray job's status."""
        return await asyncio.to_thread(self._status, job)

    async def submit(self, tenant: TenantRef, job: VoiceJob) -> None:
        """Submit the Ray job (idempotent by submission id)."""
        await asyncio.to_thread(self._submit, job)

    async def delete(self, tenant: TenantRef, job: VoiceJob) -> None:
        """Stop and delete the Ray job."""
        await asyncio.to_thread(self._delete, job)


# ---- Kubernetes -----------------------------------------------------------------------------------
def job_name(job: VoiceJob) -> str:
    """The Job's name in the tenant namespace (a DNS label: voice names are at most 40 characters)."""
    return f"train-{job.voice}-{job.identity[:10]}"


def build_trainer_service_account(tenant: TenantRef) -> dict:
    """The service account training pods run as: no API access (its token is not even mounted)."""
    return {"apiVersion": "v1", "kind": "ServiceAccount", "automountServiceAccountToken": False,
            "metadata": {"name": TRAINER_SERVICE_ACCOUNT, "namespace": tenant.namespace,
                         "labels": labels(tenant.name, "trainer")}}


def build_training_job(tenant: TenantRef, job: VoiceJob, settings: Settings, max_minutes: float,
                       storage_secret: str | None) -> dict:
    """A batch/v1 Job that runs one voice's training inside the tenant's namespace, quota and Pod Security profile."""
    env = [{"name": "CHORUS_VOICE_JOB", "value": job.model_dump_json()},
           {"name": "HOME", "value": "/tmp"}, {"name": "OMP_NUM_THREADS", "value": str(job.threads)}]
    container = {
        "name": "train", "image": settings.training_image, "imagePullPolicy": settings.training_image_pull_policy,
        "command": ["chorus", "adapter", "job"], "env": env,
        "resources": {"requests": {"cpu": settings.training_cpu, "memory": settings.training_memory},
                      "limits": {"cpu": settings.training_cpu, "memory": settings.training_memory}},
        "securityContext": {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                            "capabilities": {"drop": ["ALL"]}, "runAsNonRoot": True},
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
    }
    if storage_secret:
        container["envFrom"] = [{"secretRef": {"name": storage_secret}}]
    job_labels = {**labels(tenant.name, "training"), VOICE_LABEL: job.voice, "chorus.dev/identity": job.identity[:16]}
    return {
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": job_name(job), "namespace": tenant.namespace, "labels": job_labels},
        "spec": {
            "backoffLimit": 1,
            "activeDeadlineSeconds": int((max_minutes + settings.job_overhead_minutes) * 60),
            "ttlSecondsAfterFinished": 3600,
            "template": {
                "metadata": {"labels": job_labels},
                "spec": {
                    "restartPolicy": "Never", "serviceAccountName": TRAINER_SERVICE_ACCOUNT,
                    "automountServiceAccountToken": False, "enableServiceLinks": False,
                    "securityContext": {"runAsNonRoot": True, "runAsUser": 10001, "runAsGroup": 10001,
                                        "fsGroup": 10001, "seccompProfile": {"type": "RuntimeDefault"}},
                    "containers": [container],
                    "volumes": [{"name": "tmp", "emptyDir": {"sizeLimit": "4Gi"}}],
                },
            },
        },
    }


class KubernetesJobBackend:
    """A Job per run in the tenant's namespace, running the training image as `chorus-trainer`."""

    name = "kubernetes"

    def __init__(self, kube: KubeClient, settings: Settings) -> None:
        self.kube, self.settings = kube, settings

    async def status(self, tenant: TenantRef, job: VoiceJob) -> RunStatus:
        """Missing, Pending (no pod running yet), Running, Succeeded or Failed, from the Job's status."""
        obj = await self.kube.get("Job", job_name(job), tenant.namespace)
        if obj is None:
            return RunStatus("Missing")
        status = obj.get("status") or {}
        for cond in status.get("conditions") or []:
            if cond.get("status") != "True":
                continue
            if cond.get("type") == "Complete":
                return RunStatus("Succeeded")
            if cond.get("type") == "Failed":
                return RunStatus("Failed", f"{cond.get('reason', '')}: {cond.get('message', '')}".strip(": "))
        if status.get("ready"):
            return RunStatus("Running")
        return RunStatus("Pending", f"Job {tenant.namespace}/{job_name(job)} waits for its pod to run "
                                    "(kubectl describe job / get pods in that namespace shows why)")

    async def _copy_storage_secret(self, tenant: TenantRef) -> str | None:
        name = self.settings.storage_secret
        if not name:
            return None
        source = await self.kube.get("Secret", name, self.settings.platform_namespace)
        if source is None:
            raise BackendError(f"storage Secret {self.settings.platform_namespace}/{name} does not exist")
        copy = {"apiVersion": "v1", "kind": "Secret", "type": "Opaque", "data": source.get("data") or {},
                "metadata": {"name": STORAGE_SECRET_COPY, "namespace": tenant.namespace,
                             "labels": labels(tenant.name, "storage")}}
        await self.kube.apply(copy)
        return STORAGE_SECRET_COPY

    async def submit(self, tenant: TenantRef, job: VoiceJob) -> None:
        """Create the service account (and the storage Secret's copy), then the Job; an existing Job is kept."""
        try:
            await self.kube.create(build_trainer_service_account(tenant))
            secret = await self._copy_storage_secret(tenant)
            created = await self.kube.create(build_training_job(tenant, job, self.settings, job.max_minutes, secret))
        except ApiError as exc:
            raise BackendError(f"cannot create the training Job in {tenant.namespace}: {exc}") from None
        if created is not None:
            log.info("created Job %s/%s", tenant.namespace, job_name(job))

    async def delete(self, tenant: TenantRef, job: VoiceJob) -> None:
        """Delete the Job and its pods."""
        await self.kube.delete("Job", job_name(job), tenant.namespace)


def make_backend(settings: Settings, kube: KubeClient) -> TrainingBackend:
    """The backend the settings choose."""
    if settings.training_backend == "kubernetes":
        return KubernetesJobBackend(kube, settings)
    return RayJobBackend(settings.ray_address, settings.ray_python, settings.training_cpus)


