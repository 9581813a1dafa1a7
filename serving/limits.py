"""Per-tenant API limits: requests per minute (sliding window) and requests in flight (leases).

One `TenantLimiter` serves every ingress replica (it runs in its own one-replica deployment, see
chorus.serving.app), so a tenant's limits hold across replicas. A lease that is never released (an
ingress replica died mid-request) expires after `lease_s`, so a crash cannot lock a tenant out.
"""

from __future__ import annotations

import collections
import itertools
import math
import time
from collections.abc import Callable

from pydantic import BaseModel

WINDOW_S = 60.0


class Decision(BaseModel):
    """The answer to one request: admitted (with a lease to release) or refused (why, and when to retry)."""

    admitted: bool
    lease: int | None = None
    reason: str | None = None  # "rate" or "concurrency" when refused
    retry_after_s: int | None = None
    limit: int | None = None


class TenantLimiter:
    """Sliding-window request counts and in-flight leases per tenant."""

    def __init__(self, lease_s: float = 600.0, clock: Callable[[], float] = time.monotonic):
        self.lease_s = lease_s
        self._clock = clock
        self._recent: dict[str, collections.deque[float]] = collections.defaultdict(collections.deque)
        self._leases: dict[int, tuple[str, float]] = {}
        self._ids = itertools.count(1)

    def _in_flight(self, tenant: str, now: float) -> int:
        expired = [k for k, (_, t) in self._leases.items() if now - t > self.lease_s]
        for k in expired:
            del self._leases[k]
        return sum(1 for t, _ in self._leases.values() if t == tenant)

    def acquire(self, tenant: str, requests_per_minute: int, max_concurrent: int) -> Decision:
        """Admit one request of `tenant` or say which limit refuses it and after how many seconds to retry."""
        now = self._clock()
        recent = self._recent[tenant]
        while recent and now - recent[0] >= WINDOW_S:
            recent.popleft()
        if len(recent) >= requests_per_minute:
            wait = recent[len(recent) - requests_per_minute] + WINDOW_S - now
            return Decision(admitted=False, reason="rate", retry_after_s=max(1, math.ceil(wait)),
                            limit=requests_per_minute)
        if self._in_flight(tenant, now) >= max_concurrent:
            return Decision(admitted=False, reason="concurrency", retry_after_s=1, limit=max_concurrent)
        recent.append(now)
        lease = next(self._ids)
        self._leases[lease] = (tenant, now)
        return Decision(admitted=True, lease=lease)

    def release(self, lease: int) -> None:
        """End a request's lease (unknown or expired leases are ignored)."""
        self._leases.pop(lease, None)

    def forget(self, tenant: str) -> None:
        """Drop a tenant's counters (it was deleted)."""
        self._recent.pop(tenant, None)
