"""Per-voice status (the shape of KServe's modelStatus): what each voice of a tenant is doing.

The operator asks a `VoiceDriver` for each voice's status on every reconcile. Today's driver,
`PendingVoiceDriver`, starts nothing: a samples voice is Pending/TrainingNotStarted and a prebuilt
adapter is Pending/AdapterNotVerified. The adapters work plugs in by providing another driver
whose `observe` creates (idempotently, by a name derived from tenant, voice and spec hash) a
training Job in the tenant's namespace and reports Training while it runs, then verifies the
artifact in the registry (base-model fingerprint, sha256 of every file, quality gate) and reports
Ready with `adapterUri` and `version`, or Failed with `lastFailureInfo`. The rest of the operator
only reads the returned dicts, so nothing else changes when the driver does.
"""

from __future__ import annotations

from typing import Protocol

from chorus.operator.builders import TenantRef
from chorus.operator.spec import Voice

PENDING, TRAINING, READY, FAILED = "Pending", "Training", "Ready", "Failed"
STATES = (PENDING, TRAINING, READY, FAILED)

TRAINING_NOT_STARTED = "TrainingNotStarted"  # samples given; no trainer is installed in this release
ADAPTER_NOT_VERIFIED = "AdapterNotVerified"  # a prebuilt adapter is named but has not been checked yet


class VoiceDriver(Protocol):
    """Turns a voice's spec (and its previous status) into its current status dict."""

    def observe(self, tenant: TenantRef, voice: Voice, previous: dict | None) -> dict:
        """Return the voice's status: name, state, reason, message, and adapterUri/version/lastFailureInfo if known."""
        ...


class PendingVoiceDriver:
    """The driver used until training and verification exist: every voice waits, nothing is started."""

    def observe(self, tenant: TenantRef, voice: Voice, previous: dict | None) -> dict:
        """Pending with a reason that says what the voice is waiting for."""
        status = {"name": voice.name, "state": PENDING}
        if voice.adapter is not None:
            status.update(reason=ADAPTER_NOT_VERIFIED,
                          message=f"adapter {voice.adapter.uri} is not verified yet; it is not served until it is")
        else:
            status.update(reason=TRAINING_NOT_STARTED,
                          message="samples are recorded in the spec; training has not started")
        if voice.version:
            status["version"] = voice.version
        if previous and previous.get("lastFailureInfo"):
            status["lastFailureInfo"] = previous["lastFailureInfo"]
        return status


def voice_statuses(driver: VoiceDriver, tenant: TenantRef, voices: list[Voice],
                   previous: list[dict] | None) -> list[dict]:
    """The status list for the spec's voices, in spec order; voices no longer in the spec drop out."""
    before = {v.get("name"): v for v in previous or []}
    return [driver.observe(tenant, voice, before.get(voice.name)) for voice in voices]


def voice_summary(statuses: list[dict]) -> str:
    """'ready/total', e.g. '1/3', for the printer column."""
    return f"{sum(1 for s in statuses if s['state'] == READY)}/{len(statuses)}"
