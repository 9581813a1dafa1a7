"""Pydantic models of a VoiceTenant's spec, mirroring the CRD schema in crds/voicetenants.chorus.dev.yaml.

The API server already validates manifests against the CRD; the operator parses each spec again
here so every handler works on typed values, and so a spec the schema let through (an older CRD,
a hand-edited object) fails with one readable message instead of a half-applied tenant.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

DNS_LABEL = r"^[a-z]([-a-z0-9]*[a-z0-9])?$"
NAMESPACE_PREFIX = "tenant-"
MAX_TENANT_NAME = 63 - len(NAMESPACE_PREFIX)  # the namespace name is a DNS label too
QUANTITY = re.compile(
    r"^(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"
)
URI = r"^(s3|gs|gcs|az|abfs|file|https?)://[^\s]+$"
LANGUAGES = ("en-us",)  # espeak-ng voices the base model speaks


def _quantity(value: Any) -> str:
    """A Kubernetes resource quantity as a string; ints are accepted as the CRD accepts them."""
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a quantity")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"{value} is negative; a quantity must not be")
        return str(value)
    if isinstance(value, str) and QUANTITY.match(value):
        return value
    raise ValueError(f"{value!r} is not a resource quantity such as '500m', '2' or '4Gi'")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)


Quantity = Annotated[str, Field(description="A Kubernetes resource quantity, e.g. '500m' or '4Gi'.")]


class Owner(_Model):
    """An RBAC subject given access to the tenant's namespace."""

    kind: Literal["User", "Group", "ServiceAccount"] = Field(description="The subject kind.")
    name: str = Field(min_length=1, max_length=253, description="Name as the API server knows it.")
    namespace: str | None = Field(
        None, pattern=DNS_LABEL.replace("[a-z]", "[a-z0-9]", 1), max_length=63,
        description="The service account's namespace (ServiceAccount only).",
    )

    @model_validator(mode="after")
    def _namespace_only_for_service_accounts(self) -> Owner:
        if (self.kind == "ServiceAccount") != (self.namespace is not None):
            raise ValueError(
                "namespace is required for a ServiceAccount owner and not allowed for a User or "
                f"Group owner (owner {self.kind} {self.name!r})"
            )
        return self


class Quota(_Model):
    """Hard totals for the tenant's namespace (ResourceQuota)."""

    cpu: Quantity = Field("4", description="CPU requested and limited in total.")
    memory: Quantity = Field("8Gi", description="Memory requested and limited in total.")
    storage: Quantity = Field("20Gi", description="Storage requested by all PVCs.")
    pods: int = Field(10, ge=0, le=1000, description="Most pods at once.")

    _check = field_validator("cpu", "memory", "storage", mode="before")(lambda v: _quantity(v))


class Resources(_Model):
    """A CPU and memory pair."""

    cpu: Quantity = Field(description="CPU quantity.")
    memory: Quantity = Field(description="Memory quantity.")

    _check = field_validator("cpu", "memory", mode="before")(lambda v: _quantity(v))


class Limits(_Model):
    """Per-container defaults and maximum (LimitRange)."""

    default: Resources = Field(Resources(cpu="1", memory="1Gi"), description="Default limit.")
    default_request: Resources = Field(
        Resources(cpu="100m", memory="256Mi"), alias="defaultRequest", description="Default request."
    )
    max: Resources = Field(Resources(cpu="2", memory="4Gi"), description="Per-container maximum.")


class ApiLimits(_Model):
    """What the serving tier enforces on the tenant's synthesis API."""

    requests_per_minute: int = Field(600, ge=1, le=100_000, alias="requestsPerMinute",
                                     description="Requests per minute.")
    max_concurrent: int = Field(4, ge=1, le=256, alias="maxConcurrent",
                                description="Requests in flight at once.")
    max_chars_per_request: int = Field(5000, ge=1, le=100_000, alias="maxCharsPerRequest",
                                       description="Longest text per request, in characters.")


class Training(_Model):
    """Training settings for a samples voice."""

    steps: int = Field(1500, ge=1, le=20_000, description="Most optimiser steps.")
    max_minutes: int = Field(10, ge=1, le=240, alias="maxMinutes", description="Wall-time cap.")
    rank: int = Field(8, ge=1, le=64, description="LoRA rank.")


class Samples(_Model):
    """Recordings to train a voice from."""

    uri: str = Field(pattern=URI, max_length=2048, description="Folder of audio clips.")
    transcripts_uri: str | None = Field(None, pattern=URI, max_length=2048, alias="transcriptsUri",
                                        description="Optional 'file|text' transcript list.")
    training: Training = Field(Training(), description="Training settings.")


class Adapter(_Model):
    """A prebuilt LoRA adapter artifact."""

    uri: str = Field(pattern=URI, max_length=2048, description="The artifact's folder.")
    sha256: str | None = Field(None, pattern=r"^[a-f0-9]{64}$", description="Manifest checksum.")


class Voice(_Model):
    """One tenant voice: trained from samples or attached from an adapter, never both."""

    name: str = Field(pattern=DNS_LABEL, max_length=40, description="Unique in the tenant.")
    language: Literal[LANGUAGES] = Field("en-us", description="espeak-ng voice name.")  # type: ignore[valid-type]
    version: int | None = Field(None, ge=1, description="Pinned adapter version in the registry (1, 2, ...).")
    samples: Samples | None = Field(None, description="Train from these recordings.")
    adapter: Adapter | None = Field(None, description="Attach this prebuilt adapter.")

    @model_validator(mode="after")
    def _exactly_one_source(self) -> Voice:
        if (self.samples is None) == (self.adapter is None):
            has = "both" if self.samples else "neither"
            raise ValueError(f"voice {self.name!r}: exactly one of samples or adapter must be set: it has {has}")
        return self


class TenantSpec(_Model):
    """The spec of a VoiceTenant."""

    owners: list[Owner] = Field(min_length=1, max_length=32, description="RBAC subjects.")
    quota: Quota = Field(Quota(), description="ResourceQuota totals.")
    limits: Limits = Field(Limits(), description="LimitRange defaults.")
    api: ApiLimits = Field(ApiLimits(), description="Synthesis API limits.")
    voices: list[Voice] = Field([], max_length=32, description="The tenant's voices.")

    @field_validator("owners")
    @classmethod
    def _unique_owners(cls, owners: list[Owner]) -> list[Owner]:
        seen = set()
        for owner in owners:
            if (owner.kind, owner.name) in seen:
                raise ValueError(f"owner {owner.kind} {owner.name!r} is listed twice")
            seen.add((owner.kind, owner.name))
        return owners

    @field_validator("voices")
    @classmethod
    def _unique_voices(cls, voices: list[Voice]) -> list[Voice]:
        names = [v.name for v in voices]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"voice names must be unique; repeated: {', '.join(dupes)}")
        return voices


class SpecError(ValueError):
    """A VoiceTenant spec that cannot be acted on; the message says which fields and why."""


def validate_tenant_name(name: str) -> str:
    """Return name if it is a DNS label short enough for the 'tenant-' namespace, else raise SpecError."""
    if not re.match(DNS_LABEL, name) or len(name) > MAX_TENANT_NAME:
        raise SpecError(
            f"tenant name {name!r} must be a DNS label of at most {MAX_TENANT_NAME} characters "
            "(lower-case letters, digits and '-', starting with a letter)"
        )
    return name


def parse_spec(spec: dict[str, Any]) -> TenantSpec:
    """Parse a VoiceTenant spec dict; raise SpecError naming every bad field."""
    try:
        return TenantSpec.model_validate(dict(spec))
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            where = ".".join(str(p) for p in err["loc"]) or "spec"
            problems.append(f"spec.{where}: {err['msg']}")
        raise SpecError("; ".join(problems)) from None
