"""serving.limits: a tenant's requests per minute (sliding window) and requests in flight (leases), on a fake clock."""

from __future__ import annotations

import pytest

from chorus.serving.limits import WINDOW_S, TenantLimiter


class FakeClock:
    """Seconds that move only when a test says so."""

    def __init__(self, now: float = 1000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def limiter(clock) -> TenantLimiter:
    return TenantLimiter(lease_s=30.0, clock=clock)


def _admit(limiter: TenantLimiter, tenant: str = "acme", rpm: int = 3, concurrent: int = 100) -> int:
    decision = limiter.acquire(tenant, rpm, concurrent)
    assert decision.admitted and decision.reason is None, decision
    return decision.lease


def test_the_request_over_the_rate_is_refused_with_when_to_retry(limiter, clock):
    for _ in range(3):
        limiter.release(_admit(limiter))  # released at once: only the rate limit can refuse
        clock.advance(10.0)
    # requests at t=0, 10, 20; now t=30: the 4th in a minute
    refused = limiter.acquire("acme", 3, 100)
    assert not refused.admitted and refused.lease is None
    assert refused.reason == "rate" and refused.limit == 3
    assert refused.retry_after_s == 30  # the oldest (t=0) leaves the window at t=60
    clock.advance(29.5)
    again = limiter.acquire("acme", 3, 100)  # refused requests do not count, and the wait shrinks
    assert again.reason == "rate" and again.retry_after_s == 1
    clock.advance(0.5)  # t=60: the first request is a minute old
    _admit(limiter)
    # now t=10, 20, 60 are in the window: the next slot frees at t=70
    refused = limiter.acquire("acme", 3, 100)
    assert refused.reason == "rate" and refused.retry_after_s == 10


def test_retry_after_rounds_up_and_is_at_least_one_second(limiter, clock):
    _admit(limiter, rpm=1)
    clock.advance(12.75)
    assert limiter.acquire("acme", 1, 100).retry_after_s == 48  # 47.25 s, rounded up
    clock.advance(47.0)
    assert limiter.acquire("acme", 1, 100).retry_after_s == 1  # 0.25 s still counts as a second
    clock.advance(0.25)
    _admit(limiter, rpm=1)


def test_the_window_slides_rather_than_resetting(limiter, clock):
    for _ in range(3):
        _admit(limiter)
        clock.advance(15.0)
    # t=45: three requests in the last minute
    assert limiter.acquire("acme", 3, 100).reason == "rate"
    clock.advance(15.0)  # t=60: the first one left, the other two are still in the window
    _admit(limiter)
    assert limiter.acquire("acme", 3, 100).reason == "rate"
    clock.advance(WINDOW_S)  # a quiet minute: everything left
    for _ in range(3):
        _admit(limiter)


def test_a_lowered_rate_limit_applies_at_once(limiter, clock):
    for _ in range(5):
        _admit(limiter, rpm=10)
        clock.advance(1.0)
    # t=5 with requests at 0..4; the tenant's limit drops to 2: wait until only one is left (t=63)
    refused = limiter.acquire("acme", 2, 100)
    assert refused.reason == "rate" and refused.limit == 2 and refused.retry_after_s == 58
    clock.advance(57.5)
    assert limiter.acquire("acme", 2, 100).reason == "rate"
    clock.advance(0.5)
    _admit(limiter, rpm=2)


def test_concurrency_is_refused_until_a_lease_is_released(limiter):
    first = _admit(limiter, concurrent=2)
    second = _admit(limiter, concurrent=2)
    assert first != second
    refused = limiter.acquire("acme", 100, 2)
    assert not refused.admitted and refused.lease is None
    assert refused.reason == "concurrency" and refused.limit == 2 and refused.retry_after_s == 1
    assert limiter.acquire("acme", 100, 2).reason == "concurrency"  # still held: still refused
    limiter.release(first)
    third = _admit(limiter, concurrent=2)
    assert third not in (first, second)
    assert limiter.acquire("acme", 100, 2).reason == "concurrency"


def test_concurrency_refusals_do_not_use_up_the_rate(limiter):
    lease = _admit(limiter, rpm=2, concurrent=1)
    for _ in range(5):
        assert limiter.acquire("acme", 2, 1).reason == "concurrency"
    limiter.release(lease)
    _admit(limiter, rpm=2, concurrent=1)  # the second request of the minute


def test_an_unreleased_lease_expires_after_lease_s(limiter, clock):
    _admit(limiter, rpm=100, concurrent=1)  # its replica died: never released
    clock.advance(30.0)  # exactly lease_s: still held
    assert limiter.acquire("acme", 100, 1).reason == "concurrency"
    clock.advance(0.1)
    lease = _admit(limiter, rpm=100, concurrent=1)
    assert limiter.acquire("acme", 100, 1).reason == "concurrency"  # the new lease holds the slot
    limiter.release(lease)
    _admit(limiter, rpm=100, concurrent=1)


def test_tenants_are_independent(clock):
    limiter = TenantLimiter(lease_s=600.0, clock=clock)
    held = _admit(limiter, "acme", rpm=1, concurrent=1)
    assert limiter.acquire("acme", 1, 1).admitted is False
    # globex has its own minute and its own slots
    other = _admit(limiter, "globex", rpm=1, concurrent=1)
    assert limiter.acquire("globex", 1, 1).reason == "rate"
    limiter.release(other)
    assert limiter.acquire("acme", 1, 1).reason == "rate"  # releasing globex's lease frees nothing of acme's
    clock.advance(WINDOW_S)
    assert limiter.acquire("acme", 1, 1).reason == "concurrency"  # acme's lease is still held
    limiter.release(held)
    _admit(limiter, "acme", rpm=1, concurrent=1)


def test_releasing_unknown_or_finished_leases_is_harmless(limiter, clock):
    limiter.release(12345)
    lease = _admit(limiter, concurrent=1)
    limiter.release(lease)
    limiter.release(lease)  # twice
    held = _admit(limiter, concurrent=1)
    limiter.release(lease)  # the old lease again: must not free the new one
    assert limiter.acquire("acme", 100, 1).reason == "concurrency"
    clock.advance(31.0)  # `held` expired
    limiter.release(held)  # releasing an expired lease is fine too
    _admit(limiter, rpm=100, concurrent=1)


def test_forget_drops_a_tenants_rate_history(limiter):
    _admit(limiter, rpm=1)
    assert limiter.acquire("acme", 1, 100).reason == "rate"
    limiter.forget("acme")
    limiter.forget("never-seen")
    _admit(limiter, rpm=1)
