"""PeeringGate: the child watches act only on the replica kopf peering would make active."""

from __future__ import annotations

import datetime as dt

from chorus.operator.childwatch import PeeringGate

NOW = dt.datetime(2026, 1, 1, 12, 0, tzinfo=dt.timezone.utc)


def peer(priority: int, seen_s_ago: float = 1, lifetime: int = 60) -> dict:
    return {"priority": priority, "lifetime": lifetime, "lastseen": (NOW - dt.timedelta(seconds=seen_s_ago)).isoformat()}


def gate(priority: int = 10) -> PeeringGate:
    return PeeringGate(kube=None, peering_name="p", identity="me", priority=priority)  # type: ignore[arg-type]


def test_standalone_is_always_active_and_peered_starts_paused():
    assert PeeringGate(kube=None, peering_name=None, identity="me", priority=1).active  # type: ignore[arg-type]
    assert not gate().active


def test_highest_live_priority_is_active():
    g = gate(10)
    g.update({"status": {"me": peer(10), "other": peer(5)}}, NOW)
    assert g.active
    g.update({"status": {"me": peer(10), "other": peer(20)}}, NOW)
    assert not g.active


def test_equal_priority_pauses_and_dead_peers_do_not_count():
    g = gate(10)
    g.update({"status": {"me": peer(10), "twin": peer(10)}}, NOW)
    assert not g.active
    g.update({"status": {"me": peer(10), "old": peer(50, seen_s_ago=120)}}, NOW)
    assert g.active


def test_naive_timestamps_and_garbage():
    g = gate(10)
    naive = (NOW - dt.timedelta(seconds=1)).replace(tzinfo=None).isoformat()
    g.update({"status": {"other": {"priority": 20, "lifetime": 60, "lastseen": naive}}}, NOW)
    assert not g.active
    g.update({"status": {"other": {"priority": 20, "lastseen": "not a date"}}}, NOW)
    assert not g.active  # unreadable peers count as alive
    g.update(None, NOW)
    assert g.active
