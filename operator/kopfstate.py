"""kopf's handler progress and diff base, kept in the operator's memory instead of annotations on each tenant.

kopf normally writes both into annotations: one extra PATCH of every VoiceTenant per handled
change, and one more watch event for everyone watching VoiceTenants. This operator is
level-based and does not need them to survive a restart: after a restart kopf sees every tenant
as new and runs the same reconcile, which writes nothing when nothing changed (status carries
observedGeneration for people). Spec changes while the operator runs are still found by
comparing with the last handled spec, held here. Only a retry's wake-up ("touch") is still an
annotation, since it must cause a watch event.
"""

from __future__ import annotations

from typing import Any

import kopf


class MemoryProgressStorage(kopf.AnnotationsProgressStorage):
    """Per-handler progress (retries, delays) in a dict keyed by (object uid, handler id)."""

    def __init__(self, *, prefix: str) -> None:
        super().__init__(prefix=prefix)
        self.records: dict[tuple[str, str], dict] = {}

    def fetch(self, *, key: Any, body: Any) -> Any:  # noqa: D102 - kopf's interface
        record = self.records.get((body.metadata.uid, key))
        return dict(record) if record is not None else None

    def store(self, *, key: Any, record: Any, body: Any, patch: Any) -> None:  # noqa: D102
        self.records[(body.metadata.uid, key)] = dict(record)

    def purge(self, *, key: Any, body: Any, patch: Any) -> None:  # noqa: D102
        self.records.pop((body.metadata.uid, key), None)

    def forget(self, uid: str) -> None:
        """Drop everything kept for the object with this uid."""
        for record_key in [k for k in self.records if k[0] == uid]:
            del self.records[record_key]


class MemoryDiffBaseStorage(kopf.DiffBaseStorage):
    """The last handled essence of each object, keyed by uid."""

    def __init__(self) -> None:
        super().__init__()
        self.essences: dict[str, Any] = {}

    def fetch(self, *, body: Any) -> Any:  # noqa: D102 - kopf's interface
        return self.essences.get(body.metadata.uid)

    def store(self, *, body: Any, patch: Any, essence: Any) -> None:  # noqa: D102
        self.essences[body.metadata.uid] = essence

    def forget(self, uid: str) -> None:
        """Drop the essence of the object with this uid."""
        self.essences.pop(uid, None)


class MemoryState:
    """Both storages, so a deleted tenant's entries can be dropped in one call."""

    def __init__(self, prefix: str) -> None:
        self.progress = MemoryProgressStorage(prefix=prefix)
        self.diffbase = MemoryDiffBaseStorage()

    def forget(self, uid: str) -> None:
        """Drop what is kept for a deleted object."""
        self.progress.forget(uid)
        self.diffbase.forget(uid)
