"""Pitch: f0 contour and median f0 of voiced frames.

Default method `pyin` (librosa's probabilistic YIN). WORLD's estimators (PyPI `pyworld`: `dio`
with StoneMask, `harvest`) are offered too, but they lock onto the second harmonic when the
fundamental is weak: on a synthetic tone with harmonics 2–11 of 100 Hz pyin gives 100 Hz, dio
204 and harvest 200; on the base Piper voice (whose fundamental is weak: harmonic spacing 85–105
Hz) pyin gives 88 Hz, harvest 129 and dio 175. On espeak-ng voices (strong fundamental) all
three agree within 5%. pyin costs ~0.06 CPU-s per second of audio after a one-time numba warm-up.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import BaseModel

from chorus.engine.audio import check_audio, resample

F0_FLOOR = 50.0
F0_CEIL = 600.0
FRAME_MS = 10.0
PYIN_RATE = 22_050
PYIN_FRAME = 2048  # 93 ms at 22.05 kHz: at least four periods of the 50 Hz floor
Method = Literal["pyin", "harvest", "dio"]
METHODS = ("pyin", "harvest", "dio")


class PitchStats(BaseModel):
    """Summary of an f0 contour over voiced frames (Hz); None when no frame is voiced."""

    median_hz: float | None
    mean_hz: float | None
    p10_hz: float | None
    p90_hz: float | None
    voiced_fraction: float
    """Share of frames with an f0."""
    method: str
    """Estimator used."""


def _pyworld():
    from chorus.quality.compat import import_legacy

    return import_legacy("pyworld")


def f0_contour(audio: np.ndarray, sample_rate: int, *, method: Method = "pyin") -> tuple[np.ndarray, np.ndarray]:
    """(frame times in s, f0 in Hz with 0 for unvoiced frames); 10 ms frames for WORLD, ~11.6 ms for pyin."""
    if method not in METHODS:
        raise ValueError(f"unknown f0 method {method!r}; valid: {', '.join(METHODS)}")
    x = check_audio(audio)
    if method == "pyin":
        import librosa

        y = resample(x, sample_rate, PYIN_RATE)
        f0, voiced, _ = librosa.pyin(y, fmin=F0_FLOOR, fmax=F0_CEIL, sr=PYIN_RATE, frame_length=PYIN_FRAME)
        f0 = np.where(voiced & np.isfinite(f0), f0, 0.0)
        times = librosa.times_like(f0, sr=PYIN_RATE, hop_length=PYIN_FRAME // 4)
        return times, f0
    pw = _pyworld()
    xd = x.astype(np.float64)
    if method == "harvest":
        f0, times = pw.harvest(xd, sample_rate, f0_floor=F0_FLOOR, f0_ceil=F0_CEIL, frame_period=FRAME_MS)
        return times, f0
    f0, times = pw.dio(xd, sample_rate, f0_floor=F0_FLOOR, f0_ceil=F0_CEIL, frame_period=FRAME_MS)
    return times, pw.stonemask(xd, f0, times, sample_rate)


def pitch_stats(audio: np.ndarray, sample_rate: int, *, method: Method = "pyin") -> PitchStats:
    """Median, mean and 10th/90th percentiles of f0 over voiced frames."""
    _, f0 = f0_contour(audio, sample_rate, method=method)
    voiced = f0[f0 > 0]
    if voiced.size == 0:
        return PitchStats(median_hz=None, mean_hz=None, p10_hz=None, p90_hz=None, voiced_fraction=0.0, method=method)
    p10, p50, p90 = np.percentile(voiced, [10, 50, 90])
    return PitchStats(
        median_hz=float(p50), mean_hz=float(voiced.mean()), p10_hz=float(p10), p90_hz=float(p90),
        voiced_fraction=float(voiced.size / f0.size), method=method,
    )


def median_f0(audio: np.ndarray, sample_rate: int, *, method: Method = "pyin") -> float:
    """Median f0 in Hz of voiced frames; NaN when nothing is voiced."""
    value = pitch_stats(audio, sample_rate, method=method).median_hz
    return float("nan") if value is None else value
