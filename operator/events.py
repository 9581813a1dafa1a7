"""Kubernetes Events about VoiceTenants, posted so that `kubectl describe voicetenant` shows them.

kopf files Events of cluster-scoped objects with involvedObject.namespace "default", which
`kubectl describe` does not find; like Node events, these live in the "default" namespace with no
namespace in involvedObject. Posting happens in the background: an Event never delays a reconcile.
Messages never carry secrets (the callers only name objects).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging

from chorus.operator.builders import API_VERSION, KIND, TenantRef
from chorus.operator.kube import ApiError, KubeClient

log = logging.getLogger(__name__)
EVENT_NAMESPACE = "default"  # where Events of cluster-scoped objects go
COMPONENT = "chorus-operator"
Event = tuple[str, str, str]  # (Normal|Warning, reason, message)


def build_event(ref: TenantRef, type_: str, reason: str, message: str, now: dt.datetime) -> dict:
    """A core/v1 Event about a VoiceTenant."""
    stamp = now.strftime("%Y-%m-%dT%H:%M:%SZ")
    return {
        "apiVersion": "v1", "kind": "Event",
        "metadata": {"generateName": f"{ref.name}.", "namespace": EVENT_NAMESPACE},
        "involvedObject": {"apiVersion": API_VERSION, "kind": KIND, "name": ref.name, "uid": ref.uid},
        "type": type_, "reason": reason, "message": message[:1024],
        "source": {"component": COMPONENT}, "reportingComponent": COMPONENT, "reportingInstance": COMPONENT,
        "firstTimestamp": stamp, "lastTimestamp": stamp, "count": 1,
    }


class EventPoster:
    """Posts Events in background tasks on the operator's event loop."""

    def __init__(self, kube: KubeClient) -> None:
        self.kube = kube
        self._tasks: set[asyncio.Task] = set()

    def post(self, ref: TenantRef, events: list[Event]) -> None:
        """Schedule one Event per (type, reason, message)."""
        for type_, reason, message in events:
            event = build_event(ref, type_, reason, message, dt.datetime.now(dt.timezone.utc))
            task = asyncio.get_running_loop().create_task(self._send(event))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _send(self, event: dict) -> None:
        try:
            await self.kube.create(event)
        except (ApiError, OSError) as exc:  # an Event is worth a warning, not a failed reconcile
            log.warning("could not post Event %s about %s: %s", event["reason"],
                        event["involvedObject"]["name"], exc)
