"""The operator's one Settings object: Helm values -> environment (CHORUS_OPERATOR_*) -> here."""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

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
    liveness_endpoint: str | None = Field(
        None, description="e.g. http://0.0.0.0:8080/healthz for a Kubernetes liveness probe; unset: none.")
