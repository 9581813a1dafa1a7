"""Level-based reconciliation of one VoiceTenant: make the cluster match the spec, then report status.

Every call applies the whole desired state (server-side apply with force, so hand edits of the
fields the operator owns are overwritten) and reads back only what it cannot rebuild: the API key.
Calls for one tenant are serialised by a per-tenant lock; different tenants run concurrently.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

from chorus.operator import conditions as c
from chorus.operator.apikey import generate_api_key, hash_api_key, is_valid_api_key
from chorus.operator.builders import (
    KEY_SECRET_FIELD, KEY_SECRET_NAME, TENANT_LABEL, TenantRef, build_api_key_secret, build_children,
    build_namespace, build_tenant_record, record_name,
)
from chorus.operator.drift import differences
from chorus.operator.events import Event
from chorus.operator.kube import ApiError, KubeClient, secret_value
from chorus.operator.spec import SpecError, parse_spec, validate_tenant_name
from chorus.operator.voices import (
    VoiceDriver, training_summary, transition_events, voice_statuses, voice_summary,
)

log = logging.getLogger(__name__)
STATUS_KEYS = ("observedGeneration", "phase", "namespace", "apiKeySecret", "voiceSummary", "training", "conditions",
               "voices")
ChildKey = tuple[str, str | None, str]  # (kind, namespace, name)


@dataclass
class Result:
    """What a reconcile did: the new status, Events to post, and whether (and when) to retry."""

    status: dict
    events: list[Event] = field(default_factory=list)
    retry_after_s: float | None = None  # a temporary problem: try again later
    permanent_error: str | None = None  # the spec must change before anything can happen


@dataclass
class TenantState:
    """What the operator last applied for a tenant: drift repair compares watched children with it."""

    ref: TenantRef
    desired: dict[ChildKey, dict] = field(default_factory=dict)
    key_sha256: str | None = None
    deleting: bool = False
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


def child_key(obj: dict) -> ChildKey:
    """(kind, namespace, name) of an object dict."""
    meta = obj["metadata"]
    return obj["kind"], meta.get("namespace"), meta["name"]


def compose_status(old: dict | None, generation: int | None, parts: list[dict], namespace: str | None,
                   voices: list[dict] | None, key_secret: str | None) -> dict:
    """The full status the operator owns, Ready derived from the other conditions, timestamps kept."""
    old = old or {}
    parts = [p for p in parts if p["type"] != c.READY]
    conds = c.merge_conditions(old.get("conditions"), [c.ready_condition(parts, generation), *parts])
    status = {
        "observedGeneration": generation, "conditions": conds, "phase": c.phase(conds),
        "namespace": namespace, "apiKeySecret": key_secret,
        "voices": voices, "voiceSummary": voice_summary(voices) if voices is not None else None,
        "training": training_summary(voices) if voices is not None else None,
    }
    return {k: v for k, v in status.items() if v is not None}


def status_patch(old: dict | None, new: dict) -> dict:
    """The merge patch turning old into new for the operator's keys; empty when nothing changed."""
    old = old or {}
    patch = {k: new.get(k) for k in STATUS_KEYS if old.get(k) != new.get(k)}
    return {k: v for k, v in patch.items() if v is not None or k in old}


def voices_condition(voices: list[dict], generation: int | None) -> dict:
    """VoicesReady from the per-voice states."""
    states = [v["state"] for v in voices]
    if not states:
        return c.condition(c.VOICES_READY, True, c.NO_VOICES, "the tenant has no voices", generation)
    if "Failed" in states:
        failed = ", ".join(f"{v['name']} ({v.get('reason', 'Failed')})" for v in voices if v["state"] == "Failed")
        return c.condition(c.VOICES_READY, False, c.VOICES_FAILED, f"failed voices: {failed}", generation)
    if all(s == "Ready" for s in states):
        return c.condition(c.VOICES_READY, True, c.ALL_VOICES_READY, "every voice is serving", generation)
    waiting = ", ".join(f"{v['name']} ({v.get('reason', v['state'])})" for v in voices if v["state"] != "Ready")
    return c.condition(c.VOICES_READY, False, c.VOICES_PENDING, f"waiting: {waiting}", generation)


class Reconciler:
    """Applies tenants, repairs their drifted children and cleans them up; holds per-tenant state."""

    def __init__(self, kube: KubeClient, platform_namespace: str, driver: VoiceDriver,
                 max_concurrent: int = 8) -> None:
        self.kube = kube
        self.platform_namespace = platform_namespace
        self.driver = driver
        self.tenants: dict[str, TenantState] = {}
        # When many tenants arrive at once the API server is the bottleneck: letting all of them
        # proceed together makes every one finish late, a few at a time (FIFO) finishes most early.
        self._slots = asyncio.Semaphore(max_concurrent)

    def state(self, ref: TenantRef) -> TenantState:
        """The tenant's state, new if this uid was not seen before (a re-created tenant starts afresh)."""
        st = self.tenants.get(ref.name)
        if st is None or st.ref.uid != ref.uid:
            st = self.tenants[ref.name] = TenantState(ref)
        return st

    # ---- apply ----------------------------------------------------------------------------------
    async def reconcile(self, ref: TenantRef, spec_dict: dict, generation: int | None,
                        old_status: dict | None, verify: bool = False) -> Result:
        """Make the tenant's objects match its spec; return the status to write and the Events to post.

        verify re-reads every child even if this process applied it unchanged (the periodic resync).
        """
        st = self.state(ref)
        async with self._slots, st.lock:
            return await self._reconcile(st, spec_dict, generation, old_status or {}, verify)

    async def _sync(self, st: TenantState, obj: dict, fresh: bool, verify: bool) -> None:
        """Make one child match obj, writing only when something differs.

        In a namespace just made, children are created (cheaper for the API server than apply).
        A child this process already applied unchanged is skipped unless verify is set: its watch
        repairs drift. Otherwise it is read, and created or server-side applied only if it differs,
        so re-applying the same spec, or restarting the operator, changes nothing.
        """
        if fresh and await self.kube.create(obj) is not None:
            return
        if not verify and st.desired.get(child_key(obj)) == obj:
            return
        kind, namespace, name = child_key(obj)
        actual = await self.kube.get(kind, name, namespace)
        if actual is None:
            if await self.kube.create(obj) is not None:
                return
        elif not differences(obj, actual):
            return
        await self.kube.apply(obj)

    async def _reconcile(self, st: TenantState, spec_dict: dict, gen: int | None, old: dict,
                         verify: bool) -> Result:
        ref = st.ref
        try:
            validate_tenant_name(ref.name)
            spec = parse_spec(spec_dict)
        except SpecError as exc:
            bad = c.condition(c.SPEC_VALID, False, c.INVALID_SPEC, f"fix the spec and re-apply: {exc}", gen)
            return Result(compose_status(old, gen, [bad], None, None, None), permanent_error=str(exc))
        parts = [c.condition(c.SPEC_VALID, True, "Parsed", "the spec is valid", gen)]
        events: list[Event] = []

        # A tenant this process has applied before has its namespace. A new tenant's namespace is
        # created; one whose status names a namespace (an operator restart) is read first, so
        # resuming writes nothing. Either way an existing namespace must be this tenant's.
        namespace = build_namespace(ref)
        created, blocked = None, None
        if not st.desired:
            try:
                if not old.get("namespace"):
                    created = await self.kube.create(namespace)
                if created is None:
                    blocked = await self._namespace_blocker(ref)
            except ApiError as exc:
                blocked = (c.APPLY_FAILED, f"cannot create namespace {ref.namespace}: {exc}", 10.0)
        if blocked is not None:
            reason, message, delay = blocked
            parts += [c.condition(c.RESOURCES_READY, False, reason, message, gen),
                      c.condition(c.API_KEY_READY, None, reason, "waiting for the namespace", gen)]
            return Result(compose_status(old, gen, parts, ref.namespace, old.get("voices"), old.get("apiKeySecret")),
                          retry_after_s=delay)

        try:
            desired = [namespace] + build_children(ref, spec, self.platform_namespace)
            fresh = created is not None
            if not fresh:
                await self._sync(st, namespace, False, verify)
            await asyncio.gather(*(self._sync(st, obj, fresh, verify) for obj in desired[1:]))
            key_hash, key_event = await self._ensure_key(st, old)
            if key_event:
                events.append(key_event)
            voices = await voice_statuses(self.driver, ref, spec.voices, old.get("voices"))
            events.extend(transition_events(old.get("voices"), voices))
            record = build_tenant_record(ref, spec, key_hash, voices, self.platform_namespace)
            await self._sync(st, record, fresh, verify)
        except ApiError as exc:
            parts += [c.condition(c.RESOURCES_READY, False, c.APPLY_FAILED,
                                  f"the API server refused an object, retrying: {exc}", gen),
                      c.condition(c.API_KEY_READY, None, c.APPLY_FAILED, "not checked yet", gen)]
            return Result(compose_status(old, gen, parts, ref.namespace, old.get("voices"), old.get("apiKeySecret")),
                          events, retry_after_s=10)

        st.desired = {child_key(obj): obj for obj in desired + [record]}
        st.key_sha256 = key_hash
        parts += [
            c.condition(c.RESOURCES_READY, True, c.RECONCILED,
                        "namespace, quota, limits, network policy, RBAC and platform record applied", gen),
            # One reason whether the key is new or kept, so a restart does not rewrite status;
            # issuing and re-issuing are told by Events.
            c.condition(c.API_KEY_READY, True, c.KEY_PRESENT,
                        f"the API key is in Secret {ref.namespace}/{KEY_SECRET_NAME} (key {KEY_SECRET_FIELD!r})",
                        gen),
            voices_condition(voices, gen),
        ]
        return Result(compose_status(old, gen, parts, ref.namespace, voices, KEY_SECRET_NAME), events)

    async def _namespace_blocker(self, ref: TenantRef) -> tuple[str, str, float] | None:
        """Why the tenant's namespace cannot be applied now (reason, message, retry delay), or None."""
        ns = await self.kube.get("Namespace", ref.namespace)
        if ns is None:
            return None
        meta = ns["metadata"]
        if (meta.get("labels") or {}).get(TENANT_LABEL) != ref.name:
            return (c.NAMESPACE_CONFLICT,
                    f"namespace {ref.namespace} exists and does not belong to this tenant; delete or rename it, "
                    "or choose another tenant name", 60.0)
        if meta.get("deletionTimestamp"):
            return (c.NAMESPACE_TERMINATING,
                    f"namespace {ref.namespace} of an earlier tenant of this name is still being deleted", 3.0)
        return None

    async def _ensure_key(self, st: TenantState, old: dict) -> tuple[str, Event | None]:
        """The key's hash; creates a key if its Secret is missing or holds no valid key (never logs the key).

        A tenant never seen with a key tries to create the Secret first (one request for a new
        tenant); a conflict means it exists (e.g. made before a restart) and it is read instead.
        """
        ref = st.ref
        had_key = st.key_sha256 is not None or any(
            cond.get("type") == c.API_KEY_READY and cond.get("status") == "True" for cond in old.get("conditions", []))
        why = "its Secret was missing"
        for attempt in range(2):
            if had_key or attempt:
                secret = await self.kube.get("Secret", KEY_SECRET_NAME, ref.namespace)
                if secret is not None:
                    key = secret_value(secret, KEY_SECRET_FIELD)
                    if is_valid_api_key(key):
                        return hash_api_key(key), None
                    why = "its Secret held no valid key"
                    await self.kube.delete("Secret", KEY_SECRET_NAME, ref.namespace, uid=secret["metadata"]["uid"])
            key = generate_api_key()
            if await self.kube.create(build_api_key_secret(ref, key)) is not None:
                break
        else:
            raise ApiError(409, "Conflict", f"Secret {ref.namespace}/{KEY_SECRET_NAME} keeps changing")
        where = f"Secret {ref.namespace}/{KEY_SECRET_NAME}"
        if had_key:
            return hash_api_key(key), ("Warning", c.EVENT_KEY_REGENERATED,
                                       f"{why}: issued a new API key in {where}; the old key no longer works")
        return hash_api_key(key), ("Normal", c.KEY_ISSUED, f"issued the tenant's API key in {where}")

    # ---- drift ----------------------------------------------------------------------------------
    def owning_state(self, obj: dict) -> TenantState | None:
        """The live state of the tenant a child belongs to, or None (unknown, deleting, or an older incarnation)."""
        meta = obj.get("metadata") or {}
        st = self.tenants.get((meta.get("labels") or {}).get(TENANT_LABEL, ""))
        if st is None or st.deleting:
            return None
        uids = {o.get("uid") for o in meta.get("ownerReferences") or []}
        if uids and st.ref.uid not in uids:
            return None
        return st

    async def repair(self, event_type: str | None, obj: dict) -> tuple[TenantState | None, Event | None, bool]:
        """Restore one watched child if it was deleted or edited.

        Returns (tenant state, Event to post, whether a full reconcile is needed instead): the
        namespace and the key Secret cannot be restored from memory alone.
        """
        st = self.owning_state(obj)
        if st is None:
            return None, None, False
        kind, ns, name = child_key(obj)
        async with st.lock:
            if st.deleting:
                return None, None, False
            if kind == "Secret":
                if name != KEY_SECRET_NAME or st.key_sha256 is None:
                    return st, None, False
                key = None if event_type == "DELETED" else secret_value(obj, KEY_SECRET_FIELD)
                return st, None, key is None or hash_api_key(key) != st.key_sha256
            desired = st.desired.get((kind, ns, name))
            if desired is None:
                return st, None, False
            if event_type == "DELETED":
                if kind == "Namespace":
                    st.desired = {}  # check ownership again before re-creating it
                    return st, None, True
                what = "was deleted"
            else:
                diffs = differences(desired, obj)
                if not diffs:
                    return st, None, False
                what = f"was edited ({', '.join(diffs[:5])})"
            try:
                await self.kube.apply(desired)
            except ApiError as exc:  # e.g. the namespace is terminating: its own DELETED event follows
                log.warning("tenant %s: could not restore %s %s: %s", st.ref.name, kind, name, exc)
                return st, None, False
        where = f"{ns}/{name}" if ns else name
        log.info("tenant %s: %s %s %s; restored", st.ref.name, kind, where, what)
        return st, ("Warning", c.EVENT_RESTORED, f"{kind} {where} {what}; restored"), False

    # ---- delete ---------------------------------------------------------------------------------
    async def cleanup(self, ref: TenantRef) -> list[Event]:
        """Delete the tenant's namespace and platform record (only if they carry this tenant's label)."""
        st = self.state(ref)
        st.deleting = True
        events = []
        async with st.lock:
            for kind, name, namespace in (("Namespace", ref.namespace, None),
                                          ("ConfigMap", record_name(ref.name), self.platform_namespace)):
                obj = await self.kube.get(kind, name, namespace)
                if obj is None or (obj["metadata"].get("labels") or {}).get(TENANT_LABEL) != ref.name:
                    continue
                if await self.kube.delete(kind, name, namespace, uid=obj["metadata"]["uid"]):
                    events.append(("Normal", c.EVENT_CLEANED_UP, f"deleted {kind} {name}"))
        self.tenants.pop(ref.name, None)
        await self.driver.forget(ref)
        return events
