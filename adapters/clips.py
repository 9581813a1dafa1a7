"""Signal helpers for dataset preparation: decode, resample, energy frames, slicing, clipping, loudness."""

from __future__ import annotations

import io
from dataclasses import dataclass
from math import gcd

import numpy as np
import soundfile as sf
from scipy.signal import resample_poly

FRAME_S = 0.02  # energy frame length (20 ms)
HOP_S = 0.01  # energy frame hop (10 ms)
_EPS = 1e-10


class DecodeError(ValueError):
    """The bytes are not audio any decoder here can read."""


def decode(data: bytes) -> tuple[np.ndarray, int]:
    """Decode wav/flac/ogg/mp3 bytes (libsndfile) to float32 mono; raises DecodeError."""
    try:
        audio, sr = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
    except Exception as exc:  # libsndfile reports every malformed input as a plain error
        raise DecodeError(str(exc).strip() or type(exc).__name__) from exc
    if audio.shape[0] == 0:
        raise DecodeError("no audio frames")
    return audio.mean(axis=1).astype(np.float32), int(sr)


def resample(audio: np.ndarray, sr_in: int, sr_out: int) -> np.ndarray:
    """Polyphase resampling (scipy) from sr_in to sr_out."""
    if sr_in == sr_out:
        return audio.astype(np.float32, copy=False)
    g = gcd(sr_in, sr_out)
    return resample_poly(audio, sr_out // g, sr_in // g).astype(np.float32)


def frame_db(audio: np.ndarray, sr: int) -> np.ndarray:
    """RMS level in dBFS of each 20 ms frame, hop 10 ms."""
    frame, hop = int(FRAME_S * sr), int(HOP_S * sr)
    if len(audio) < frame:
        audio = np.pad(audio, (0, frame - len(audio)))
    n = 1 + (len(audio) - frame) // hop
    idx = np.arange(frame)[None, :] + hop * np.arange(n)[:, None]
    power = np.mean(audio[idx].astype(np.float64) ** 2, axis=1)
    return 10 * np.log10(power + _EPS)


def speech_mask(levels_db: np.ndarray, relative_db: float, floor_db: float) -> np.ndarray:
    """Frames louder than both `floor_db` dBFS and (loudest frame - relative_db)."""
    threshold = max(floor_db, float(levels_db.max()) - relative_db)
    return levels_db > threshold


@dataclass(frozen=True)
class Span:
    """A stretch of a recording, in seconds."""

    start: float
    end: float

    @property
    def duration(self) -> float:
        """Length in seconds."""
        return self.end - self.start


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """[start, end) index runs where mask is True."""
    padded = np.concatenate([[False], mask, [False]]).astype(np.int8)
    edges = np.flatnonzero(np.diff(padded))
    return list(zip(edges[0::2].tolist(), edges[1::2].tolist()))


def speech_regions(
    audio: np.ndarray, sr: int, relative_db: float, floor_db: float, min_silence_s: float, pad_s: float
) -> list[Span]:
    """Speech stretches separated by silences of at least `min_silence_s`, each padded by `pad_s`."""
    levels = frame_db(audio, sr)
    mask = speech_mask(levels, relative_db, floor_db)
    # Bridge silences shorter than min_silence_s: they are pauses inside speech, not cut points.
    gaps = _runs(~mask)
    min_gap = int(round(min_silence_s / HOP_S))
    for a, b in gaps:
        if a > 0 and b < len(mask) and b - a < min_gap:
            mask[a:b] = True
    total = len(audio) / sr
    spans = []
    for a, b in _runs(mask):
        start = max(0.0, a * HOP_S - pad_s)
        end = min(total, b * HOP_S + FRAME_S + pad_s)
        spans.append(Span(start, end))
    return spans


def _split_long(audio: np.ndarray, sr: int, span: Span, min_s: float, max_s: float) -> list[Span]:
    """Cut a span longer than max_s at its quietest frame between min_s and max_s, repeatedly."""
    out = []
    while span.duration > max_s:
        a = int((span.start + min_s) * sr)
        b = int((span.start + max_s) * sr)
        levels = frame_db(audio[a:b], sr)
        cut = span.start + min_s + int(np.argmin(levels)) * HOP_S + FRAME_S / 2
        out.append(Span(span.start, cut))
        span = Span(cut, span.end)
    out.append(span)
    return out


def slice_at_silences(
    audio: np.ndarray,
    sr: int,
    *,
    relative_db: float,
    floor_db: float,
    min_silence_s: float,
    pad_s: float,
    min_clip_s: float,
    target_clip_s: float,
    max_clip_s: float,
) -> list[Span]:
    """Group speech regions into clips of about target_clip_s, never over max_clip_s.

    Regions are merged greedily while the clip is shorter than target_clip_s; a region longer than
    max_clip_s (no usable silence) is cut at its quietest frames. Short leftovers are returned as they
    are so the caller can reject them as too short.
    """
    regions = speech_regions(audio, sr, relative_db, floor_db, min_silence_s, pad_s)
    pieces = [p for r in regions for p in _split_long(audio, sr, r, min_clip_s, max_clip_s)]
    clips: list[Span] = []
    for piece in pieces:
        if clips:
            last = clips[-1]
            merged = Span(last.start, piece.end)
            if last.duration < target_clip_s and merged.duration <= max_clip_s:
                clips[-1] = merged
                continue
        clips.append(piece)
    return clips


def clipped_fraction(audio: np.ndarray, level: float = 0.99, min_run: int = 3) -> float:
    """Fraction of samples inside runs of >= min_run consecutive samples at or above |level|."""
    hot = np.abs(audio) >= level
    if not hot.any():
        return 0.0
    total = sum(b - a for a, b in _runs(hot) if b - a >= min_run)
    return total / len(audio)


def active_level_db(audio: np.ndarray, sr: int, relative_db: float = 35.0, floor_db: float = -70.0) -> float:
    """Active-speech RMS level in dBFS: RMS over frames within relative_db of the loudest frame.

    A simple stand-in for ITU-T P.56 active speech level (not LUFS): pauses do not pull the level down.
    """
    levels = frame_db(audio, sr)
    active = levels[speech_mask(levels, relative_db, floor_db)]
    if active.size == 0:
        return float(levels.max())
    return float(10 * np.log10(np.mean(10 ** (active / 10)) + _EPS))


def normalize_loudness(
    audio: np.ndarray, sr: int, target_db: float, peak_limit_db: float
) -> tuple[np.ndarray, float]:
    """Scale to `target_db` active-speech RMS, lowered if needed so the peak stays under peak_limit_db.

    Returns (audio, gain in dB applied).
    """
    gain_db = target_db - active_level_db(audio, sr)
    peak = float(np.abs(audio).max()) + _EPS
    max_gain_db = peak_limit_db - 20 * np.log10(peak)
    gain_db = min(gain_db, max_gain_db)
    return (audio * 10 ** (gain_db / 20)).astype(np.float32), gain_db
