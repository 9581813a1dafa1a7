"""The voice profile's pitch path: the target's pitch (and, optionally, formant) ratio applied around the engine.

VITS has no f0 input: its latents come from the text path and carry the base voice's pitch, and a LoRA
on the decoder learns timbre and formants but leaves pitch where it is. Two DSP moves give the profile
an f0 path:
- TD-PSOLA (chorus.adapters.psola) moves pitch alone, keeping duration and formants, with mild
  artefacts that grow with the factor;
- resampling by rho (play the audio as if recorded at `sr * rho` Hz) moves pitch AND formants by rho
  and shortens the audio by rho, with no artefacts at all.
Paths (PITCH_PATHS): "auto" (default) picks "resample" or "psola" from the measured pitch and formant
ratios (`choose_pitch_path`); "psola" PSOLAs the output by the pitch factor r and leaves formants and
timbre to the LoRA, which trains on clips whose f0 contour was moved onto the base model's own rendering
(chorus.adapters.trainset); "resample" trains on clips slowed by r (pitch and formants at the base
voice's when the target's formants moved with its pitch) and speeds the output up by r; "split"
resamples by the measured formant ratio alpha and PSOLAs by r / alpha (`split_factors`), so DSP also
does the formants; "world" shifts f0 with the WORLD vocoder; "none" leaves pitch alone.

Measured on the bench's high voice (f0 x1.4, formants x1.10; 12 held-out clips, bench/results/): the
split path alone, without any LoRA, closes 60% of the speaker-similarity gap, and a LoRA trained on top
of it does not add to that (41-57%); PSOLA + a LoRA trained on contour-matched clips closes 73-74%. On
the low voice (f0 x0.8, formants x0.92) the same recipe closes 52%, resampling 76-81%.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

PITCH_PATHS = ("auto", "psola", "resample", "split", "world", "none")
"""How a voice's pitch factor is applied (see above); the first is the default."""

MIN_F0, MAX_F0 = 50.0, 500.0
"""pYIN search range (Hz)."""

F0_HOP = 256
"""pYIN frame hop in samples (the engine's frame: one f0 value per latent frame)."""


def _pyworld():
    """The pyworld extension module.

    pyworld 0.3.5's `__init__` imports `pkg_resources` only to read its version, and setuptools >= 81
    no longer ships it: load the compiled extension inside the package directly when that import fails.
    """
    try:
        import pyworld
    except ModuleNotFoundError as exc:
        if exc.name != "pkg_resources":
            raise
        import importlib.machinery
        import importlib.util

        spec = importlib.util.find_spec("pyworld")
        folder = Path(spec.submodule_search_locations[0])
        ext = next(p for p in folder.iterdir() if p.name.startswith("pyworld.") and p.suffix in (".so", ".pyd"))
        loader = importlib.machinery.ExtensionFileLoader("pyworld.pyworld", str(ext))
        mod_spec = importlib.util.spec_from_file_location("pyworld.pyworld", ext, loader=loader)
        pyworld = importlib.util.module_from_spec(mod_spec)
        loader.exec_module(pyworld)
    return pyworld



def pyin_f0(audio: np.ndarray, sample_rate: int) -> tuple[np.ndarray, np.ndarray]:
    """pYIN f0 (Hz, NaN unvoiced) and frame times (s)."""
    import librosa

    f0, voiced, _ = librosa.pyin(np.asarray(audio, dtype=np.float32), fmin=MIN_F0, fmax=MAX_F0, sr=sample_rate,
                                 frame_length=2048, hop_length=F0_HOP)
    f0 = np.where(voiced, f0, np.nan)
    return f0, np.arange(len(f0)) * F0_HOP / sample_rate


def f0_track(audio: np.ndarray, sample_rate: int) -> np.ndarray:
    """Voiced-frame f0 values (Hz) from pYIN: one estimator for profile fitting and evaluation alike.

    WORLD's Harvest and DIO jump octaves on the base voice (medians 107-168 Hz); pYIN gives a tight
    79-103 Hz (10th-90th percentile), so ratios between voices mean what they say.
    """
    f0, _ = pyin_f0(audio, sample_rate)
    return f0[np.isfinite(f0)]


def f0_contour(audio: np.ndarray, sample_rate: int, times: np.ndarray) -> np.ndarray:
    """pYIN f0 sampled at `times` (s), 0 where unvoiced (the layout WORLD expects)."""
    f0, t = pyin_f0(audio, sample_rate)
    idx = np.clip(np.round(times * sample_rate / F0_HOP).astype(int), 0, len(f0) - 1)
    out = f0[idx]
    return np.where(np.isfinite(out), out, 0.0).astype(np.float64)


def contour_factors(f0_from: np.ndarray, f0_to: np.ndarray, smooth: int = 5) -> np.ndarray:
    """Per-frame factors that move contour `f0_from` onto `f0_to` (NaN = unvoiced in either).

    Frames voiced in both get f0_to / f0_from; the others are interpolated between their nearest such
    frames (held at the ends), so PSOLA does not jump where voicing starts and ends; then a median over
    `smooth` frames removes one-frame pYIN jumps. All ones when no frame is voiced in both.
    """
    n = min(len(f0_from), len(f0_to))
    ratio = f0_to[:n] / f0_from[:n]
    ok = np.flatnonzero(np.isfinite(ratio) & (ratio > 0))
    if len(ok) == 0:
        return np.ones(n)
    ratio = np.interp(np.arange(n), ok, ratio[ok])
    if smooth > 1:
        from scipy.ndimage import median_filter

        ratio = median_filter(ratio, size=smooth, mode="nearest")
    return ratio


OCTAVE_FOLD_BEYOND = 0.75
"""Octaves from the median beyond which an f0 value counts as a tracker's octave error. A real voice's
accents reach ~0.7 octave above its median (the base voice's 95th percentile: +0.66), a halved or
doubled frame lands near a whole octave."""


def octave_folded_median(f0: np.ndarray, rounds: int = 2) -> float:
    """The median of f0 values (Hz) after folding octave errors: each value further than
    OCTAVE_FOLD_BEYOND from the median is moved by whole octaves towards it, and the median is taken
    again (`rounds` times).

    A tracker that halves or doubles f0 on some frames (creak, breathy onsets, a strong second
    harmonic) drags a plain median towards the error: with 30% of the frames an octave off it moved
    5%, with 40% 7-9% (tests/unit/test_pitch_fit.py). Folded, it stays within 2.5%, while a voice's real
    range is left as it is.
    """
    f0 = np.asarray(f0, dtype=np.float64)
    f0 = f0[np.isfinite(f0) & (f0 > 0)]
    if not len(f0):
        return float("nan")
    median = float(np.median(f0))
    for _ in range(rounds):
        octaves = np.log2(median / f0)
        fold = np.where(np.abs(octaves) > OCTAVE_FOLD_BEYOND, np.round(octaves), 0.0)
        median = float(np.median(f0 * 2.0 ** fold))
    return median


def median_f0(clips: list[np.ndarray], sample_rate: int) -> float:
    """Median f0 over the voiced frames of all clips (Hz), octave errors folded; NaN when nothing is voiced."""
    voiced = np.concatenate([f0_track(c, sample_rate) for c in clips] or [np.zeros(0)])
    return octave_folded_median(voiced)


def resample(audio: np.ndarray, rate_in: float, rate_out: float) -> np.ndarray:
    """Band-limited resampling between arbitrary (non-integer) rates with soxr."""
    import soxr

    if abs(rate_in - rate_out) < 1e-9:
        return np.asarray(audio, dtype=np.float32)
    return soxr.resample(np.asarray(audio, dtype=np.float32), rate_in, rate_out, quality="HQ").astype(np.float32)


def to_model_domain(audio: np.ndarray, sample_rate: int, pitch_factor: float) -> np.ndarray:
    """Slow a target clip down by `pitch_factor` (pitch and formants / r, duration * r)."""
    return resample(audio, sample_rate, sample_rate * pitch_factor)


def from_model_domain(audio: np.ndarray, sample_rate: int, pitch_factor: float) -> np.ndarray:
    """Speed model output up by `pitch_factor` (pitch and formants * r, duration / r)."""
    return resample(audio, sample_rate * pitch_factor, sample_rate)


def world_analysis(audio: np.ndarray, sample_rate: int,
                   frame_period: float = 5.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """WORLD's (f0, spectral envelope, aperiodicity) per `frame_period` ms, with pYIN's f0 contour.

    pYIN, not WORLD's own Harvest/DIO, which jump octaves on the base voice (see f0_track).
    """
    pw = _pyworld()
    x = np.asarray(audio, dtype=np.float64)
    t = np.arange(int(len(x) / sample_rate * 1000 / frame_period) + 1) * frame_period / 1000
    f0 = np.ascontiguousarray(f0_contour(audio, sample_rate, t))
    return f0, pw.cheaptrick(x, f0, t, sample_rate), pw.d4c(x, f0, t, sample_rate)


def world_pitch_shift(audio: np.ndarray, sample_rate: int, factor: float, frame_period: float = 5.0) -> np.ndarray:
    """Multiply f0 by `factor` with WORLD (pYIN contour, spectral envelope and timing kept)."""
    if abs(factor - 1.0) < 1e-6:
        return np.asarray(audio, dtype=np.float32)
    f0, sp, ap = world_analysis(audio, sample_rate, frame_period)
    y = _pyworld().synthesize(f0 * factor, sp, ap, sample_rate, frame_period)[: len(audio)]
    return y.astype(np.float32)


def _envelope_ltas(clips: list[np.ndarray], sample_rate: int, n_fft: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """Long-term average log spectrum of the louder frames, smoothed over ~300 Hz (harmonics removed)."""
    import librosa

    frames = []
    for clip in clips:
        mag = np.abs(librosa.stft(np.asarray(clip, dtype=np.float32), n_fft=n_fft, hop_length=256))
        energy = mag.sum(0)
        frames.append(np.log(mag[:, energy > 0.1 * energy.max()] + 1e-6))
    ltas = np.concatenate(frames, axis=1).mean(1)
    width = max(3, int(300 / (sample_rate / n_fft)))
    smooth = np.convolve(ltas, np.ones(width) / width, mode="same")
    return smooth, np.fft.rfftfreq(n_fft, 1 / sample_rate)


def formant_ratio(target: list[np.ndarray], base: list[np.ndarray], sample_rate: int) -> float:
    """Frequency-warp factor that best maps the base voice's average spectral envelope onto the target's."""
    lt, freqs = _envelope_ltas(target, sample_rate)
    lb, _ = _envelope_ltas(base, sample_rate)
    band = (freqs > 200) & (freqs < 5000)
    best, best_cost = 1.0, np.inf
    for alpha in np.arange(0.70, 1.51, 0.01):
        warped = np.interp(freqs / alpha, freqs, lb)
        diff = lt[band] - warped[band]
        cost = float(np.abs(diff - diff.mean()).mean())
        if cost < best_cost:
            best, best_cost = float(alpha), cost
    return best


SNAP = 0.02
"""A resample or PSOLA factor within 2% of 1 is dropped (its move is left to the LoRA): PSOLA at ~1.0 only adds
artefacts, and a formant ratio that close is within the LTAS fit's precision."""

MIN_RESAMPLE, MAX_RESAMPLE = 0.7, 1.5
"""Bounds of the resampling factor (the formant ratio search range)."""


def split_factors(pitch_factor: float, formants: float) -> tuple[float, float]:
    """(resample factor rho, PSOLA factor) whose product is `pitch_factor`, rho taken from the formant ratio."""
    rho = float(np.clip(formants, MIN_RESAMPLE, MAX_RESAMPLE)) if np.isfinite(formants) else 1.0
    if abs(np.log(pitch_factor / rho)) < SNAP:
        rho = pitch_factor
    elif abs(np.log(rho)) < SNAP:
        rho = 1.0
    return rho, pitch_factor / rho


RESAMPLE_MARGIN = 0.05
"""How much more formant shift (|log ratio|) the resample path may leave to the LoRA than the PSOLA path
does and still be chosen: PSOLA adds artefacts of its own. Measured: low voice 76-81% of the similarity gap
with resampling, 52% with PSOLA; high voice -27% with resampling, 73-74% with PSOLA."""


def choose_pitch_path(pitch_factor: float, formants: float) -> str:
    """'resample' when the formant shift left to the LoRA after resampling is about as small as without."""
    if not np.isfinite(formants):
        return "psola"
    after_resample = abs(np.log(formants / pitch_factor))
    without = abs(np.log(formants))
    return "resample" if after_resample <= without + RESAMPLE_MARGIN else "psola"
