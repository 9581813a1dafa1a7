"""A second, independent target-voice generator: source-filter (LPC) formant warp, TD-PSOLA pitch, resampled tempo.

`chorus.adapters.targets.WorldTarget` re-synthesises the base voice with the WORLD vocoder (CheapTrick
envelope, D4C aperiodicity, WORLD's own excitation). A bench whose voices all come from one vocoder can be
overfitted to that vocoder's fingerprint, so `LpcTarget` makes voices with none of WORLD's parts:

1. **Tempo** by resampling: the rendering is played `tempo` times faster (duration / tempo), which also
   moves pitch and formants by `tempo`; steps 2 and 3 take that move back out of their own factors.
2. **Formants** by warping an LPC envelope: per STFT frame (1024 points, hop 256) an order-24 LPC fit
   of the pre-emphasised frame gives the all-pole envelope 1/|A(f)|; the frame's spectrum is divided by it
   (the residual: harmonics and noise, flat) and multiplied by the envelope read at f / k, so every formant
   moves to k times its frequency while the harmonics stay put. The pre-emphasis keeps the voice's spectral
   tilt out of the warp. k = formant_factor / tempo.
3. **Pitch** by TD-PSOLA (`chorus.adapters.psola`, pYIN marks) by f0_factor / tempo, which keeps the
   (already warped) envelope; grains are not stretched over the gaps a lower pitch leaves (`min_weight=1`).

Everything is deterministic: the only randomness is the base rendering's seeded noise.
"""

from __future__ import annotations

import numpy as np
from chorus.adapters.targets import ShiftedTarget

LPC_ORDER = 24
"""All-pole order at 22,050 Hz (the rule of thumb: sample rate in kHz + 2)."""

N_FFT, HOP = 1024, 256
"""STFT of the envelope warp: 46 ms frames (several periods even at the lowest f0), 75% overlap."""

PRE_EMPHASIS = 0.97
"""First-order pre-emphasis for the LPC fit (the envelope's tilt is left where it is)."""

CALIBRATE_TOLERANCE = 0.02
"""A clip whose measured median f0 is further than this (|log ratio|) from the asked one is PSOLA'd again."""

MAX_GAIN_DB = 40.0
"""Bound on the per-bin envelope ratio, so a formant moved into a spectral hole cannot blow up the noise floor."""


class LpcTarget(ShiftedTarget):
    """A shifted target made by source-filter processing: LPC formant warp, PSOLA pitch, tempo."""


def _lpc_frames(frames: np.ndarray, order: int, sample_rate: int) -> np.ndarray:
    """LPC polynomials A (rows [1, a1..ap]) of windowed frames, by the autocorrelation method.

    A lag window (60 Hz Gaussian) and a -40 dB white-noise floor keep the normal equations well
    conditioned on silent and near-sinusoidal frames.
    """
    n = frames.shape[1]
    spec = np.fft.rfft(frames, 2 * n, axis=1)
    r = np.fft.irfft(np.abs(spec) ** 2, axis=1)[:, : order + 1]
    lags = np.arange(order + 1)
    r = r * np.exp(-0.5 * (2 * np.pi * 60.0 / sample_rate * lags) ** 2)
    r[:, 0] = r[:, 0] * (1 + 1e-4) + 1e-9
    from scipy.linalg import solve_toeplitz

    out = np.empty((len(frames), order + 1))
    out[:, 0] = 1.0
    for i, row in enumerate(r):
        out[i, 1:] = -solve_toeplitz(row[:order], row[1:])
    return out


def lpc_formant_warp(audio: np.ndarray, sample_rate: int, factor: float, order: int = LPC_ORDER) -> np.ndarray:
    """Move the formants by `factor` (> 1 up) keeping harmonics and duration: float32 of the same length."""
    import librosa

    x = np.asarray(audio, dtype=np.float32)
    if abs(factor - 1.0) < 1e-6 or len(x) == 0:
        return x.copy()
    spec = librosa.stft(x, n_fft=N_FFT, hop_length=HOP, window="hann", center=True)
    emph = np.append(x[:1], x[1:] - PRE_EMPHASIS * x[:-1])
    frames = librosa.util.frame(np.pad(emph, N_FFT // 2, mode="reflect"), frame_length=N_FFT, hop_length=HOP).T
    frames = frames[: spec.shape[1]] * np.hanning(N_FFT)
    a = _lpc_frames(frames.astype(np.float64), order, sample_rate)
    inv_env = np.abs(np.fft.rfft(a, N_FFT, axis=1))  # |A(f)|: 1 / envelope, per frame and bin
    bins = np.arange(N_FFT // 2 + 1)
    src = np.clip(bins / factor, 0, N_FFT // 2)
    # log|A| read at f / k: the envelope with its formants moved k times up.
    log_inv = np.log(np.maximum(inv_env, 1e-9))
    lo = np.floor(src).astype(int)
    hi = np.minimum(lo + 1, N_FFT // 2)
    frac = src - lo
    warped_log_inv = log_inv[:, lo] * (1 - frac) + log_inv[:, hi] * frac
    log_gain = np.clip(log_inv - warped_log_inv, -MAX_GAIN_DB / 20 * np.log(10), MAX_GAIN_DB / 20 * np.log(10))
    y = librosa.istft(spec * np.exp(log_gain).T.astype(np.float32), hop_length=HOP, window="hann", center=True,
                      length=len(x))
    return y.astype(np.float32)


def lpc_transform(audio: np.ndarray, sample_rate: int, target: LpcTarget) -> np.ndarray:
    """The base rendering in the target voice: tempo by resampling, LPC formant warp, TD-PSOLA pitch."""
    from chorus.adapters.pitch import median_f0, octave_folded_median, pyin_f0, resample
    from chorus.adapters.psola import psola_shift

    t = target.tempo
    y = resample(audio, sample_rate * t, sample_rate)  # duration / t, pitch and formants * t
    y = lpc_formant_warp(y, sample_rate, target.formant_factor / t)
    factor = target.f0_factor / t
    if abs(factor - 1.0) < 1e-6:
        return y
    f0, _ = pyin_f0(y, sample_rate)
    out = psola_shift(y, sample_rate, factor, f0=f0, min_weight=1.0)
    # pYIN finds fewer voiced frames in lowered speech, and the median of those it finds can sit a few %
    # off the asked one: one corrective pass, so the target's median f0 is what was asked as the bench
    # measures it (pYIN, chorus.adapters.pitch.median_f0).
    asked = octave_folded_median(f0) * factor
    got = median_f0([out], sample_rate)
    if np.isfinite(asked) and np.isfinite(got) and abs(np.log(got / asked)) > CALIBRATE_TOLERANCE:
        out = psola_shift(y, sample_rate, factor * asked / got, f0=f0, min_weight=1.0)
    return out
