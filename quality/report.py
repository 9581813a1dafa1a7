"""One quality report per clip: WER, DNSMOS, speaker similarity and f0, as a table or JSON."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence

import numpy as np
from pydantic import BaseModel, Field

from chorus.engine.audio import check_audio
from chorus.quality.dnsmos import DnsmosScores

METRICS = ("wer", "dnsmos", "similarity", "f0")
"""Metric groups `evaluate` can compute; wer needs text, similarity needs references."""


class QualityReport(BaseModel):
    """Quality of one clip; a metric is None when it was not asked for or had no input."""

    name: str | None = None
    """Label of the clip (file name or system)."""
    duration_s: float
    """Clip length in seconds."""
    sample_rate: int
    text: str | None = None
    """Reference text."""
    transcript: str | None = None
    """Whisper tiny.en transcript."""
    wer: float | None = None
    """Word error rate against `text` (0–1+)."""
    dnsmos: DnsmosScores | None = None
    similarity: float | None = None
    """Cosine similarity of the speaker to the reference voice."""
    f0_median_hz: float | None = None
    """Median f0 of voiced frames."""
    seconds: dict[str, float] = Field(default_factory=dict)
    """Wall time of each metric."""
    errors: dict[str, str] = Field(default_factory=dict)
    """Metrics that could not be computed for this audio (e.g. silence), with the reason."""


def _check_metrics(metrics: Sequence[str]) -> tuple[str, ...]:
    bad = [m for m in metrics if m not in METRICS]
    if bad:
        raise ValueError(f"unknown metric(s) {', '.join(bad)}; valid: {', '.join(METRICS)}")
    return tuple(metrics)


def evaluate(
    audio: np.ndarray,
    sample_rate: int,
    text: str | None = None,
    refs=None,
    *,
    name: str | None = None,
    metrics: Sequence[str] = METRICS,
    threads: int = 2,
) -> QualityReport:
    """Measure one clip; `refs` is a reference embedding, an (audio, sr) clip or a list of clips."""
    wanted = _check_metrics(metrics)
    samples = check_audio(audio)
    report = QualityReport(name=name, duration_s=samples.size / sample_rate, sample_rate=sample_rate, text=text)

    def measure(metric: str, fn) -> None:
        # Bad audio (silence, no speech) marks the metric with its reason; a missing model still raises.
        t0 = time.perf_counter()
        try:
            fn()
        except ValueError as exc:
            report.errors[metric] = str(exc)
        report.seconds[metric] = time.perf_counter() - t0

    if "wer" in wanted and text is not None:
        from chorus.quality.whisper import transcribe, wer

        def run_wer() -> None:
            report.transcript = transcribe(samples, sample_rate, threads=threads)
            report.wer = wer(text, report.transcript)

        measure("wer", run_wer)
    if "dnsmos" in wanted:
        from chorus.quality.dnsmos import dnsmos

        measure("dnsmos", lambda: setattr(report, "dnsmos", dnsmos(samples, sample_rate, threads=threads)))
    if "similarity" in wanted and refs is not None:
        from chorus.quality.similarity import speaker_similarity

        measure("similarity", lambda: setattr(report, "similarity", speaker_similarity(samples, sample_rate, refs)))
    if "f0" in wanted:
        from chorus.quality.pitch import median_f0

        def run_f0() -> None:
            f0 = median_f0(samples, sample_rate)
            report.f0_median_hz = None if math.isnan(f0) else f0

        measure("f0", run_f0)
    return report


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def render_table(reports: Sequence[QualityReport]) -> str:
    """A fixed-width text table: one row per clip."""
    header = ("clip", "dur s", "WER %", "OVRL", "SIG", "BAK", "P808", "sim", "f0 Hz")
    rows = [header]
    for r in reports:
        d = r.dnsmos
        rows.append((
            r.name or "-",
            _fmt(r.duration_s, ".2f"),
            _fmt(None if r.wer is None else 100 * r.wer, ".1f"),
            _fmt(d and d.ovrl, ".2f"),
            _fmt(d and d.sig, ".2f"),
            _fmt(d and d.bak, ".2f"),
            _fmt(d and d.p808, ".2f"),
            _fmt(r.similarity, ".3f"),
            _fmt(r.f0_median_hz, ".1f"),
        ))
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths)))
             for row in rows]
    return "\n".join(lines)


def to_json(reports: Sequence[QualityReport]) -> str:
    """JSON list of the reports."""
    return json.dumps([r.model_dump(mode="json") for r in reports], indent=2)


def summarize(reports: Sequence[QualityReport]) -> dict[str, float | None]:
    """Mean of each metric over the clips that have it (for benchmarks and manifests)."""
    columns = {
        "wer": [r.wer for r in reports],
        "dnsmos_ovrl": [r.dnsmos.ovrl if r.dnsmos else None for r in reports],
        "dnsmos_sig": [r.dnsmos.sig if r.dnsmos else None for r in reports],
        "dnsmos_bak": [r.dnsmos.bak if r.dnsmos else None for r in reports],
        "dnsmos_p808": [r.dnsmos.p808 if r.dnsmos else None for r in reports],
        "similarity": [r.similarity for r in reports],
        "f0_median_hz": [r.f0_median_hz for r in reports],
    }
    out: dict[str, float | None] = {}
    for key, values in columns.items():
        present = [v for v in values if v is not None]
        out[key] = float(np.mean(present)) if present else None
    return out
