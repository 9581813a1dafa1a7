"""The operator's one Settings object: Helm values -> environment (CHORUS_OPERATOR_*) -> here."""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from chorus.adapters.gate import GateThresholds
from chorus.operator.spec import DNS_LABEL


class Settings(BaseSettings):
    """How the operator runs; every field can be set as CHORUS_OPERATOR_<FIELD>."""

    model_config = SettingsConfigDict(env_prefix="CHORUS_OPERATOR_", extra="forbid")

    platform_namespace: str = Field(
        "chorus-system", pattern=DNS_LABEL, max_length=63,
        description="Namespace of the serving tier: the only ingress source allowed into tenant namespaces, "
                    "and where each tenant's record (API-key hash, limits, voices) is written.")
    kubeconfig: Path | None = Field(
        None, description="Kubeconfig file to use; unset: the pod's service account (in-cluster).")
    standalone: bool = Field(
        False, description="Run without peering (no leader election); for development and single replicas.")
    peering_name: str = Field(
        "chorus-operator", pattern=DNS_LABEL, max_length=63,
        description="ClusterKopfPeering object replicas use to elect the active one.")
    priority: int = Field(
        default_factory=lambda: secrets.randbelow(1_000_000) + 1, ge=0,
        description="Peering priority: the highest live replica works, the others wait. Random by default, "
                    "as replicas of equal priority would all pause.")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field("INFO", description="Operator log level.")
    resync_interval_s: float = Field(
        300.0, gt=0, description="Seconds between full reconciles of each tenant (the drift safety net; "
                                 "watched children are repaired as soon as they change).")
    max_concurrent_reconciles: int = Field(
        8, ge=1, le=256, description="Tenants reconciled at once; more wait their turn (first come, first served).")
    max_connections: int = Field(32, ge=1, le=512, description="Concurrent HTTP connections to the API server.")
    worker_limit: int | None = Field(
        None, ge=1, description="Most objects kopf processes at once; unset: no limit (recommended: kopf's "
                                 "workers keep their slot while idle, and 16 made a burst of 200 tenants 7x slower).")
    batch_window_s: float = Field(
        0.05, ge=0, le=5, description="kopf waits this long for more events of an object before handling it.")
    # ---- voices: training, attaching, versions ------------------------------------------------------
    registry_uri: str = Field(
        default_factory=lambda: (Path.home() / ".cache" / "chorus" / "adapters").as_uri(),
        description="fsspec URI of the adapter registry (file:// on a shared volume, or s3://); training jobs "
                    "publish there and the serving tier loads from there.")
    s3_endpoint_url: str | None = Field(
        None, description="S3-compatible endpoint (MinIO, ...) for s3:// registry and sample URIs; unset: AWS.")
    storage_secret: str | None = Field(
        None, pattern=DNS_LABEL, max_length=63,
        description="Secret in the platform namespace holding storage credentials (AWS_ACCESS_KEY_ID, ...); the "
                    "operator copies it into each tenant namespace for the Kubernetes training backend.")
    training_backend: Literal["ray", "kubernetes"] = Field(
        "ray", description="Where training runs: a Ray job on `ray_address`, or a Kubernetes Job in the "
                           "tenant's namespace (inside its quota).")
    ray_address: str = Field("http://127.0.0.1:8265", description="Ray dashboard address for job submission.")
    ray_python: str = Field("python", description="Python that Ray runs the job with (the image's, by default).")
    training_image: str = Field("chorus-train:latest", description="Image of Kubernetes training Jobs.")
    training_image_pull_policy: Literal["Always", "IfNotPresent", "Never"] = Field(
        "IfNotPresent", description="Pull policy of training Jobs' image (Never for images loaded on the node).")
    training_cpu: str = Field("2", description="CPU request and limit of a training Job (Kubernetes backend).")
    training_memory: str = Field("4Gi", description="Memory request and limit of a training Job.")
    training_cpus: float = Field(
        1.0, ge=0, description="CPUs a Ray training job reserves (0: none, e.g. a cluster whose CPUs serving holds).")
    training_threads: int = Field(2, ge=1, le=64, description="torch threads in a training job.")
    job_overhead_minutes: int = Field(
        20, ge=1, le=240, description="Minutes allowed on top of a voice's maxMinutes for preparing, evaluating "
                                      "and publishing (the Job's activeDeadlineSeconds).")
    gate: GateThresholds = Field(default_factory=GateThresholds,
                                 description="Quality gate thresholds (JSON in CHORUS_OPERATOR_GATE).")
    base_fingerprint: str | None = Field(
        None, pattern=r"^[0-9a-f]{64}$",
        description="The platform's base model fingerprint; unset: computed from the installed base voice.")
    on_base_change: Literal["retrain", "fail"] = Field(
        "retrain", description="When the base model changes, voices made for the old one are retrained from their "
                               "samples (retrain) or marked Failed (fail). Old adapters are never served on a new base.")
    keep_versions: int = Field(
        3, ge=1, le=1000, description="Published versions kept per voice; older ones are deleted from the "
                                      "registry (the serving and the pinned version are always kept).")
    on_tenant_delete: Literal["delete", "keep"] = Field(
        "delete", description="What deleting a VoiceTenant does to its adapters and job records in the registry.")
    voice_poll_interval_s: float = Field(
        10.0, ge=1, le=300, description="How often a tenant with voices in training is re-read (status progress).")
    liveness_endpoint: str | None = Field(
        None, description="e.g. http://0.0.0.0:8080/healthz for a Kubernetes liveness probe; unset: none.")
