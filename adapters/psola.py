"""TD-PSOLA pitch shifting: move f0 by a factor, keeping duration and the spectral envelope (formants).

Pitch-synchronous overlap-add: analysis marks one period apart (snapped to the waveform's local peak)
in voiced regions, 5 ms apart in unvoiced ones; two-period Hann-windowed grains around the nearest
analysis mark are overlap-added at synthesis marks spaced period / factor apart. Measured on base-voice
sentences, DNSMOS OVRL 3.23 -> 2.81-2.97 at x1.45 and 2.73-3.10 at x0.8, where WORLD gave 2.01 and 1.89.
"""

from __future__ import annotations

import numpy as np

from chorus.adapters.pitch import F0_HOP, pyin_f0

UNVOICED_STEP_S = 0.005
"""Grain spacing in unvoiced regions (copied unchanged)."""


def _analysis_marks(x: np.ndarray, period_at) -> tuple[np.ndarray, np.ndarray]:
    """Mark positions and their grain half-widths (samples)."""
    marks, widths, t, n = [], [], 0, len(x)
    while t < n:
        period = period_at(t)
        if period:
            lo, hi = max(0, t - period // 4), min(n, t + period // 4 + 1)
            if marks and hi > lo:
                t = lo + int(np.argmax(x[lo:hi]))
            marks.append(t)
            widths.append(period)
            t += period
        else:
            step = period_at.unvoiced
            marks.append(t)
            widths.append(step)
            t += step
    return np.array(marks), np.array(widths)


def psola_shift(audio: np.ndarray, sample_rate: int, factor: float | np.ndarray,
                f0: np.ndarray | None = None, min_weight: float = 1e-3) -> np.ndarray:
    """Multiply f0 by `factor` (duration and formants kept); float32 of the same length.

    `factor` is one number or one per pYIN frame (256 samples, as `f0`); `f0` (Hz, NaN or 0 unvoiced) saves
    re-estimating the pitch when the caller has it. The output is divided by the summed grain windows where
    they exceed `min_weight`; 1.0 keeps the gaps between grains when pitch goes down (classic TD-PSOLA:
    pYIN then finds ~75% of the voiced frames at x0.7 where the default, which fills them, leaves ~45%).
    """
    x = np.asarray(audio, dtype=np.float64)
    factors = np.atleast_1d(np.asarray(factor, dtype=np.float64))
    if np.all(np.abs(factors - 1.0) < 1e-6) or len(x) == 0:
        return x.astype(np.float32)
    if f0 is None:
        f0, _ = pyin_f0(audio, sample_rate)
    hop = F0_HOP
    f0 = np.where(np.isfinite(f0), f0, 0.0)

    def factor_at(i: int) -> float:
        return float(factors[min(int(round(i / hop)), len(factors) - 1)]) if len(factors) > 1 else float(factors[0])

    def period_at(i: int) -> int:
        f = f0[min(int(round(i / hop)), len(f0) - 1)]
        return int(sample_rate / f) if f > 0 else 0

    period_at.unvoiced = max(1, int(UNVOICED_STEP_S * sample_rate))
    marks, widths = _analysis_marks(x, period_at)
    n = len(x)
    out, weight = np.zeros(n), np.zeros(n)
    windows: dict[int, np.ndarray] = {}
    s = 0.0
    while s < n:
        i = int(round(s))
        period = period_at(i)
        k = int(np.searchsorted(marks, i))
        if k == len(marks) or (k > 0 and i - marks[k - 1] <= marks[k] - i):
            k -= 1
        c, w = int(marks[k]), int(widths[k])
        window = windows.get(w)
        if window is None:
            window = windows[w] = np.hanning(2 * w + 1)
        lo, hi = max(0, c - w), min(n, c + w + 1)
        start = i - (c - lo)
        stop = start + (hi - lo)
        if start >= 0 and stop <= n:
            win = window[lo - (c - w):hi - (c - w)]
            out[start:stop] += x[lo:hi] * win
            weight[start:stop] += win
        s += period / factor_at(i) if period else period_at.unvoiced
    # Grains overlap more densely when pitch goes up: normalise by the summed windows.
    return np.where(weight > min_weight, out / np.maximum(weight, min_weight), out).astype(np.float32)
