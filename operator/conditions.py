"""Condition types, reasons and the pure helpers that keep `status.conditions` in metav1.Condition shape."""

from __future__ import annotations

import datetime as dt
from typing import Any

# ---- condition types ----------------------------------------------------------------------------
READY = "Ready"  # the tenant is usable: spec valid, namespace and its objects in place, API key issued
SPEC_VALID = "SpecValid"  # the spec parsed into the operator's model
RESOURCES_READY = "ResourcesReady"  # namespace, quota, limits, network policy, RBAC and record applied
API_KEY_READY = "ApiKeyReady"  # the key Secret exists and its hash is where the serving tier reads it
VOICES_READY = "VoicesReady"  # every voice is servable (not part of Ready: training takes minutes)

# ---- reasons (CamelCase) ------------------------------------------------------------------------
RECONCILED = "Reconciled"  # every child object matches the spec
INVALID_SPEC = "InvalidSpec"  # the spec failed validation; the message names the fields
NAMESPACE_CONFLICT = "NamespaceConflict"  # the namespace exists and belongs to someone else
NAMESPACE_TERMINATING = "NamespaceTerminating"  # the old namespace is still being deleted
APPLY_FAILED = "ApplyFailed"  # the API server refused a child object; retried with backoff
KEY_PRESENT = "KeyPresent"  # the tenant's API key is in its Secret and its hash in the tenant record
ALL_VOICES_READY = "AllVoicesReady"  # every voice is Ready
VOICES_PENDING = "VoicesPending"  # some voices are pending or training
VOICES_FAILED = "VoicesFailed"  # at least one voice failed; see status.voices
NO_VOICES = "NoVoices"  # the tenant has no voices yet
DEPENDENCIES_NOT_READY = "DependenciesNotReady"  # Ready is False because another condition is
TERMINATING = "Terminating"  # the tenant is being deleted

# ---- event reasons ------------------------------------------------------------------------------
KEY_ISSUED = "KeyIssued"  # the tenant's first API key was generated
EVENT_CREATED = "Created"  # a child object was created
EVENT_RESTORED = "DriftRepaired"  # a child object was edited or deleted by hand and has been restored
EVENT_KEY_REGENERATED = "ApiKeyRegenerated"  # the key Secret was missing: a new key replaced the old
EVENT_CLEANED_UP = "CleanedUp"  # the tenant's namespace and platform record were deleted

CONDITION_ORDER = (READY, SPEC_VALID, RESOURCES_READY, API_KEY_READY, VOICES_READY)


def now() -> str:
    """The current UTC time in the RFC 3339 form Kubernetes uses (second precision)."""
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def condition(type_: str, ok: bool | None, reason: str, message: str, generation: int | None) -> dict:
    """A metav1.Condition dict without lastTransitionTime (merge_conditions sets it)."""
    status = "Unknown" if ok is None else ("True" if ok else "False")
    cond: dict[str, Any] = {"type": type_, "status": status, "reason": reason, "message": message}
    if generation is not None:
        cond["observedGeneration"] = generation
    return cond


def merge_conditions(old: list[dict] | None, new: list[dict], timestamp: str | None = None) -> list[dict]:
    """New conditions in a stable order, keeping each old lastTransitionTime where status did not change."""
    previous = {c.get("type"): c for c in old or []}
    stamp = timestamp or now()
    merged = []
    for cond in sorted(new, key=lambda c: CONDITION_ORDER.index(c["type"])
                       if c["type"] in CONDITION_ORDER else len(CONDITION_ORDER)):
        before = previous.get(cond["type"])
        keep = before is not None and before.get("status") == cond["status"] and before.get("lastTransitionTime")
        merged.append({**cond, "lastTransitionTime": before["lastTransitionTime"] if keep else stamp})
    return merged


def summary(conditions: list[dict]) -> dict[str, str]:
    """type -> status for a list of conditions."""
    return {c["type"]: c["status"] for c in conditions}


def ready_condition(parts: list[dict], generation: int | None) -> dict:
    """Ready is True when SpecValid, ResourcesReady and ApiKeyReady all are; else it names the first that is not."""
    for cond in parts:
        if cond["type"] in (SPEC_VALID, RESOURCES_READY, API_KEY_READY) and cond["status"] != "True":
            return condition(READY, False, DEPENDENCIES_NOT_READY,
                             f"{cond['type']} is {cond['status']}: {cond['message']}", generation)
    return condition(READY, True, RECONCILED, "the tenant's namespace, policies, RBAC and API key are in place",
                     generation)


def phase(conditions: list[dict], deleting: bool = False) -> str:
    """A one-word summary for printer columns, derived from the conditions; never branched on."""
    if deleting:
        return "Terminating"
    states = summary(conditions)
    if states.get(READY) == "True":
        return "Ready"
    if states.get(SPEC_VALID) == "False":
        return "Failed"
    return "Pending"
