"""kopf handlers: thin wrappers that hand the work to the Reconciler and turn its Result into status, Events and retries."""

from __future__ import annotations

import logging
from typing import Any

import kopf

from chorus.operator.builders import GROUP, KIND, PLURAL, VERSION, TenantRef
from chorus.operator.kube import ApiError
from chorus.operator.reconcile import Result, status_patch
from chorus.operator.voices import has_active_voices

log = logging.getLogger(__name__)
# Children watched for drift: (group, version, plural). Namespace and key-Secret changes lead to a
# full reconcile; the others are restored from what was last applied.
CHILD_RESOURCES = (
    ("", "v1", "namespaces"), ("", "v1", "resourcequotas"), ("", "v1", "limitranges"),
    ("", "v1", "secrets"), ("", "v1", "configmaps"), ("networking.k8s.io", "v1", "networkpolicies"),
    ("rbac.authorization.k8s.io", "v1", "roles"), ("rbac.authorization.k8s.io", "v1", "rolebindings"),
)


def apply_result(result: Result, ref: TenantRef, old_status: dict, patch: kopf.Patch, memo: Any,
                 raise_errors: bool = True) -> None:
    """Post the Result's Events, put its status changes in kopf's patch, and raise kopf's error for it."""
    if result.events:
        memo.events.post(ref, result.events)
    for key, value in status_patch(old_status, result.status).items():
        patch.status[key] = value
    if not raise_errors:
        return
    if result.permanent_error:
        raise kopf.PermanentError(f"invalid spec: {result.permanent_error}")
    if result.retry_after_s is not None:
        raise kopf.TemporaryError("tenant not ready yet; see status.conditions", delay=result.retry_after_s)


async def reconcile_tenant(name: str, uid: str, spec: Any, meta: Any, status: Any,
                           patch: kopf.Patch, memo: kopf.Memo, **_: Any) -> None:
    """On create, update and resume: apply everything the spec asks for."""
    old, ref = dict(status), TenantRef(name, uid)
    result = await memo.reconciler.reconcile(ref, dict(spec), meta.get("generation"), old)
    apply_result(result, ref, old, patch, memo)


async def resync_tenant(name: str, uid: str, spec: Any, meta: Any, status: Any,
                        patch: kopf.Patch, memo: kopf.Memo, **_: Any) -> None:
    """Periodically: the same reconcile, re-reading every child, as a safety net for drift no watch saw."""
    old, ref = dict(status), TenantRef(name, uid)
    result = await memo.reconciler.reconcile(ref, dict(spec), meta.get("generation"), old, verify=True)
    apply_result(result, ref, old, patch, memo, raise_errors=False)


async def delete_tenant(name: str, uid: str, memo: kopf.Memo, **_: Any) -> None:
    """On delete (behind the finalizer): remove the tenant's namespace and record; GC takes the rest."""
    ref = TenantRef(name, uid)
    memo.events.post(ref, await memo.reconciler.cleanup(ref))
    memo.kopf_state.forget(uid)


async def repair_child(event_type: str, obj: dict, memo: kopf.Memo) -> None:
    """A watched child changed: restore it if it drifted from what was applied."""
    st, drift_event, needs_full = await memo.reconciler.repair(event_type, obj)
    if st is None:
        return
    if drift_event:
        memo.events.post(st.ref, [drift_event])
    if needs_full:
        await reconcile_from_api(st.ref, memo)


async def reconcile_from_api(ref: TenantRef, memo: kopf.Memo) -> None:
    """Reconcile a tenant outside its own handlers: read it, apply, write status only if it changed."""
    kube = memo.kube
    tenant = await kube.get(KIND, ref.name)
    if not tenant or tenant["metadata"].get("uid") != ref.uid or tenant["metadata"].get("deletionTimestamp"):
        return
    old = tenant.get("status") or {}
    result = await memo.reconciler.reconcile(ref, tenant.get("spec") or {}, tenant["metadata"].get("generation"), old)
    memo.events.post(ref, result.events)
    changes = status_patch(old, result.status)
    if changes:
        try:
            await kube.patch_status(KIND, ref.name, changes)
        except ApiError as exc:
            log.warning("tenant %s: could not write status (%s); the next reconcile will", ref.name, exc)


async def poll_voices(name: str, uid: str, spec: Any, meta: Any, status: Any, patch: kopf.Patch,
                      memo: kopf.Memo, **_: Any) -> None:
    """While a voice trains: the same reconcile, so progress, the verdict and the record follow the run."""
    old, ref = dict(status), TenantRef(name, uid)
    result = await memo.reconciler.reconcile(ref, dict(spec), meta.get("generation"), old)
    apply_result(result, ref, old, patch, memo, raise_errors=False)


def _voices_active(status: Any, **_: Any) -> bool:
    return has_active_voices(dict(status or {}))


def register(registry: kopf.OperatorRegistry, resync_interval_s: float, voice_poll_interval_s: float = 10.0) -> None:
    """Register every handler on registry (handlers are not registered at import, so tests can build several)."""
    tenants = (GROUP, VERSION, PLURAL)
    for decorator in (kopf.on.create, kopf.on.update, kopf.on.resume):
        decorator(*tenants, registry=registry)(reconcile_tenant)
    kopf.timer(*tenants, registry=registry, interval=resync_interval_s, initial_delay=resync_interval_s,
               idle=resync_interval_s / 2)(resync_tenant)
    kopf.timer(*tenants, registry=registry, interval=voice_poll_interval_s, when=_voices_active)(poll_voices)
    kopf.on.delete(*tenants, registry=registry)(delete_tenant)
    # Children are watched by chorus.operator.childwatch (started by the runner), not by kopf.
