"""The voice profile's pitch path: a pitch factor applied by pure resampling (no vocoder artefacts).

VITS has no f0 input, and a LoRA on its decoder learns timbre but leaves pitch where the base voice
has it. Playing audio faster by a factor r raises pitch and formants by r and shortens it by r; so a
voice whose median f0 is r times the base voice's is synthesised with durations stretched by r and
then resampled as if it were recorded at `sr * r` Hz (`from_model_domain`). Training happens in the
"model domain": the target clips are slowed by r (`to_model_domain`), which brings their pitch to the
base voice's, and the LoRA only learns the remaining timbre and formant difference.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

PITCH_PATHS = ("auto", "resample", "psola", "world", "none")
"""How a voice's pitch factor is applied: resampling (training in the model domain), TD-PSOLA or WORLD
f0 shifting of the output (formants kept, some artefacts added), or not at all; "auto" picks resample or
psola from the measured pitch and formant ratios (choose_pitch_path)."""

MIN_F0, MAX_F0 = 50.0, 500.0
"""pYIN search range (Hz)."""


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



def _pyin(audio: np.ndarray, sample_rate: int) -> tuple[np.ndarray, np.ndarray]:
    """pYIN f0 (Hz, NaN unvoiced) and frame times (s)."""
    import librosa

    hop = 256
    f0, voiced, _ = librosa.pyin(np.asarray(audio, dtype=np.float32), fmin=MIN_F0, fmax=MAX_F0, sr=sample_rate,
                                 frame_length=2048, hop_length=hop)
    f0 = np.where(voiced, f0, np.nan)
    return f0, np.arange(len(f0)) * hop / sample_rate


def f0_track(audio: np.ndarray, sample_rate: int) -> np.ndarray:
    """Voiced-frame f0 values (Hz) from pYIN: one estimator for profile fitting and evaluation alike.

    WORLD's Harvest and DIO jump octaves on the base voice (medians 107-168 Hz); pYIN gives a tight
    79-103 Hz (10th-90th percentile), so ratios between voices mean what they say.
    """
    f0, _ = _pyin(audio, sample_rate)
    return f0[np.isfinite(f0)]


def f0_contour(audio: np.ndarray, sample_rate: int, times: np.ndarray) -> np.ndarray:
    """pYIN f0 sampled at `times` (s), 0 where unvoiced (the layout WORLD expects)."""
    f0, t = _pyin(audio, sample_rate)
    idx = np.clip(np.round(times * sample_rate / 256).astype(int), 0, len(f0) - 1)
    out = f0[idx]
    return np.where(np.isfinite(out), out, 0.0).astype(np.float64)


def median_f0(clips: list[np.ndarray], sample_rate: int) -> float:
    """Median f0 over the voiced frames of all clips (Hz); NaN when nothing is voiced."""
    voiced = np.concatenate([f0_track(c, sample_rate) for c in clips] or [np.zeros(0)])
    return float(np.median(voiced)) if len(voiced) else float("nan")


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


def world_pitch_shift(audio: np.ndarray, sample_rate: int, factor: float, frame_period: float = 5.0) -> np.ndarray:
    """Multiply f0 by `factor` with WORLD (pYIN contour, spectral envelope and timing kept)."""
    if abs(factor - 1.0) < 1e-6:
        return np.asarray(audio, dtype=np.float32)
    pw = _pyworld()
    x = np.asarray(audio, dtype=np.float64)
    t = np.arange(int(len(x) / sample_rate * 1000 / frame_period) + 1) * frame_period / 1000
    f0 = np.ascontiguousarray(f0_contour(audio, sample_rate, t))
    sp = pw.cheaptrick(x, f0, t, sample_rate)
    ap = pw.d4c(x, f0, t, sample_rate)
    y = pw.synthesize(f0 * factor, sp, ap, sample_rate, frame_period)[: len(x)]
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


RESAMPLE_MARGIN = 0.05
"""How much more formant shift (in |log ratio|) the resample path may leave to the LoRA than PSOLA's
path and still be chosen: PSOLA adds some artefacts of its own (measured: low voice 81% gap closed with
resampling, 60% with PSOLA; high voice -27% vs 55-64%)."""


def choose_pitch_path(pitch_factor: float, formants: float) -> str:
    """'resample' when the formant shift left to the LoRA after resampling is about as small as without."""
    after_resample = abs(np.log(formants / pitch_factor))
    without = abs(np.log(formants))
    return "resample" if after_resample <= without + RESAMPLE_MARGIN else "psola"
