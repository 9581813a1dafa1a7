"""Pitch: f0 contour and median f0 of voiced frames with WORLD (PyPI `pyworld`).

Default method `dio` (+ StoneMask refinement) is about 10x faster than `harvest` and gave the same
median within 1–4% on espeak-ng voices; `harvest` finds more voiced frames, use it for contours.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import BaseModel

from chorus.engine.audio import check_audio

F0_FLOOR = 50.0
F0_CEIL = 600.0
FRAME_MS = 10.0
Method = Literal["dio", "harvest"]


class PitchStats(BaseModel):
    """Summary of an f0 contour over voiced frames (Hz); None when no frame is voiced."""

    median_hz: float | None
    mean_hz: float | None
    p10_hz: float | None
    p90_hz: float | None
    voiced_fraction: float
    """Share of frames with an f0."""


def _pyworld():
    from chorus.quality.compat import import_legacy

    return import_legacy("pyworld")


def f0_contour(audio: np.ndarray, sample_rate: int, *, method: Method = "dio") -> tuple[np.ndarray, np.ndarray]:
    """(frame times in s, f0 in Hz with 0 for unvoiced frames) every 10 ms."""
    if method not in ("dio", "harvest"):
        raise ValueError(f"unknown f0 method {method!r}; valid: dio, harvest")
    pw = _pyworld()
    x = check_audio(audio).astype(np.float64)
    if method == "harvest":
        f0, times = pw.harvest(x, sample_rate, f0_floor=F0_FLOOR, f0_ceil=F0_CEIL, frame_period=FRAME_MS)
        return times, f0
    f0, times = pw.dio(x, sample_rate, f0_floor=F0_FLOOR, f0_ceil=F0_CEIL, frame_period=FRAME_MS)
    return times, pw.stonemask(x, f0, times, sample_rate)


def pitch_stats(audio: np.ndarray, sample_rate: int, *, method: Method = "dio") -> PitchStats:
    """Median, mean and 10th/90th percentiles of f0 over voiced frames."""
    _, f0 = f0_contour(audio, sample_rate, method=method)
    voiced = f0[f0 > 0]
    if voiced.size == 0:
        return PitchStats(median_hz=None, mean_hz=None, p10_hz=None, p90_hz=None, voiced_fraction=0.0)
    p10, p50, p90 = np.percentile(voiced, [10, 50, 90])
    return PitchStats(
        median_hz=float(p50), mean_hz=float(voiced.mean()), p10_hz=float(p10), p90_hz=float(p90),
        voiced_fraction=float(voiced.size / f0.size),
    )


def median_f0(audio: np.ndarray, sample_rate: int, *, method: Method = "dio") -> float:
    """Median f0 in Hz of voiced frames; NaN when nothing is voiced."""
    value = pitch_stats(audio, sample_rate, method=method).median_hz
    return float("nan") if value is None else value
