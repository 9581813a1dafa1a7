"""Watches of the operator's children, lighter than kopf's per-object event handling.

kopf takes every watch event through its per-object workers (batch window, state, logging
context); for the nine children a new tenant gets, that was half of the operator's CPU. These
watches parse each event and hand it straight to drift repair, which only compares it with what
was applied. They act only while this replica is the active one: a replica paused by kopf
peering no longer sees spec changes, and repairing from its stale memory would fight the leader.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from typing import Awaitable, Callable

from chorus.operator.kube import ApiError, KubeClient

log = logging.getLogger(__name__)
Handler = Callable[[str, dict], Awaitable[None]]  # (ADDED|MODIFIED|DELETED, object)
WATCH_TIMEOUT_S = 300


class PeeringGate:
    """Whether this replica is the active one, by kopf's rule, from the ClusterKopfPeering object (polled).

    Active when no live peer other than this one has the same or a higher priority. Standalone
    (no peering name): always active.
    """

    def __init__(self, kube: KubeClient, peering_name: str | None, identity: str, priority: int,
                 interval_s: float = 5.0) -> None:
        self.kube, self.peering_name, self.identity = kube, peering_name, identity
        self.priority, self.interval_s = priority, interval_s
        self.active = peering_name is None

    def update(self, peering: dict | None, now: dt.datetime) -> None:
        """Recompute `active` from the peering object's status (peer id -> priority, lifetime, lastseen)."""
        rivals = 0
        for peer_id, peer in ((peering or {}).get("status") or {}).items():
            if peer_id == self.identity or not isinstance(peer, dict):
                continue
            try:
                seen = dt.datetime.fromisoformat(peer["lastseen"])
                seen = seen if seen.tzinfo else seen.replace(tzinfo=dt.timezone.utc)
                alive = seen + dt.timedelta(seconds=int(peer.get("lifetime", 60))) > now
            except (KeyError, TypeError, ValueError):
                alive = True  # unreadable: assume it is alive, as pausing is the safe side
            if alive and int(peer.get("priority", 0)) >= self.priority:
                rivals += 1
        if self.active != (rivals == 0):
            log.info("child watches %s", "resumed" if rivals == 0 else "paused: another replica is active")
        self.active = rivals == 0

    async def run(self) -> None:
        """Poll the peering object until cancelled (returns at once when standalone)."""
        if self.peering_name is None:
            return
        while True:
            try:
                peering = await self.kube.get("ClusterKopfPeering", self.peering_name)
                self.update(peering, dt.datetime.now(dt.timezone.utc))
            except (ApiError, OSError, asyncio.TimeoutError) as exc:
                log.warning("cannot read ClusterKopfPeering %s (%s); child watches keep their state",
                            self.peering_name, exc)
            await asyncio.sleep(self.interval_s)


class ChildWatcher:
    """One watch per child resource (server-side label selector); each event goes to handle in its own task."""

    def __init__(self, kube: KubeClient, resources: tuple[tuple[str, str, str], ...], selector: str,
                 handle: Handler, gate: PeeringGate) -> None:
        self.kube, self.resources, self.selector = kube, resources, selector
        self.handle, self.gate = handle, gate
        self._tasks: set[asyncio.Task] = set()

    def start(self) -> None:
        """Start the gate and every watch on the running loop."""
        for coro in (self.gate.run(), *(self._watch(*res) for res in self.resources)):
            self._spawn(coro)

    async def stop(self) -> None:
        """Cancel the watches and any handling still running."""
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def _spawn(self, coro: Awaitable) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("child watch handling failed: %r", task.exception())

    def _dispatch(self, event_type: str, obj: dict) -> None:
        if self.gate.active:
            self._spawn(self.handle(event_type, obj))

    async def _watch(self, group: str, version: str, plural: str) -> None:
        path = f"/apis/{group}/{version}/{plural}" if group else f"/api/{version}/{plural}"
        resource_version: str | None = None
        listed = False
        while True:
            try:
                if resource_version is None:
                    # The first list only sets the starting point; after a gap (410 Gone) every
                    # listed object is checked, as events in the gap were lost.
                    listing = await self.kube.request("GET", path, params={"labelSelector": self.selector})
                    resource_version = listing["metadata"]["resourceVersion"]
                    kind = listing.get("kind", "").removesuffix("List")
                    for item in listing.get("items", []) if listed else []:
                        self._dispatch("MODIFIED", {"kind": kind, **item})
                    listed = True
                params = {"resourceVersion": resource_version, "allowWatchBookmarks": "true",
                          "labelSelector": self.selector, "timeoutSeconds": str(WATCH_TIMEOUT_S)}
                async for event in self.kube.watch(path, params):
                    obj = event.get("object") or {}
                    if event.get("type") == "ERROR":
                        if obj.get("code") == 410:
                            resource_version = None
                        break
                    resource_version = (obj.get("metadata") or {}).get("resourceVersion", resource_version)
                    if event.get("type") in ("ADDED", "MODIFIED", "DELETED"):
                        self._dispatch(event["type"], obj)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - a watch must outlive any one failure
                if isinstance(exc, ApiError) and exc.status == 410:
                    resource_version = None
                log.warning("watch of %s ended (%s); restarting", plural, exc)
                await asyncio.sleep(1)
