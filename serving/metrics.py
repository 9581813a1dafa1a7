"""Prometheus metrics of the serving tier (prometheus-client, one registry per ingress replica).

Request metrics are counted where requests are answered (the ingress); the voice cache's counters
live in the synthesis replicas and arrive with each response's last item, labelled by replica. Texts
and keys never become labels; tenant names do where a per-tenant view is useful.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1, 1.5, 2, 3, 5, 8, 13, 21, 34)
RTF_BUCKETS = (0.02, 0.04, 0.06, 0.08, 0.1, 0.15, 0.2, 0.3, 0.5, 1, 2)
CACHE_FIELDS = ("hits", "misses", "loads", "failures", "evictions")


class Metrics:
    """The serving metrics; `exposition()` is the /metrics body."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("chorus_requests_total", "Speech API requests by tenant, endpoint and HTTP status",
                                ("tenant", "endpoint", "status"), registry=r)
        self.latency = Histogram("chorus_request_seconds", "Time from request to last byte", ("tenant",),
                                 buckets=LATENCY_BUCKETS, registry=r)
        self.ttfb = Histogram("chorus_time_to_first_byte_seconds", "Time from request to first audio byte",
                              ("tenant",), buckets=LATENCY_BUCKETS, registry=r)
        self.audio_seconds = Counter("chorus_audio_seconds_total", "Seconds of audio synthesised",
                                     ("tenant",), registry=r)
        self.rtf = Histogram("chorus_rtf", "Real-time factor of each request (compute time / audio time)",
                             buckets=RTF_BUCKETS, registry=r)
        self.in_flight = Gauge("chorus_requests_in_flight", "Speech requests being answered by this ingress",
                               registry=r)
        self.rejected = Counter("chorus_rejected_total", "Requests refused by a limit, by tenant and reason",
                                ("tenant", "reason"), registry=r)
        self.cache = Gauge("chorus_voice_cache", "Voice cache counters of each synthesis replica "
                           "(hits, misses, loads, failures, evictions, bytes, voices)", ("replica", "field"),
                           registry=r)

    def observe_cache(self, replica: str, stats: dict) -> None:
        """Record a synthesis replica's latest cache counters."""
        for field in (*CACHE_FIELDS, "bytes", "voices", "capacity_bytes"):
            if field in stats:
                self.cache.labels(replica, field).set(stats[field])

    def exposition(self) -> bytes:
        """The Prometheus text format of every metric."""
        return generate_latest(self.registry)
