"""Training examples from a prepared dataset: phoneme ids, DTW-aligned durations, model-domain audio."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from chorus.adapters.align import HOP, align_durations
from chorus.adapters.pitch import (PITCH_PATHS, choose_pitch_path, formant_ratio, from_model_domain, median_f0,
                                    to_model_domain)
from chorus.engine.frontend import Phonemizer, normalize_text, phonemes_to_ids
from chorus.engine.vits import VitsModel
from chorus.engine.voice import BaseVoice


F0_CLIPS = 8
"""Clips used to fit the pitch factor (median f0 of target vs base renderings of the same texts)."""


@dataclass
class TrainClip:
    """One training clip: ids, per-phoneme target durations (frames) and target audio, model domain."""

    text: str
    ids: torch.Tensor  # [T] long
    durations: torch.Tensor  # [T] long, sums to len(audio) // HOP
    audio: torch.Tensor  # [S] float32, model domain


@dataclass
class TrainSet:
    """Aligned clips plus the voice profile fitted from them."""

    clips: list[TrainClip]
    pitch_factor: float
    length_scale: float
    f0_base: float
    f0_target: float
    pitch_path: str = "resample"  # the path used ("auto" resolved)
    formant_ratio: float = float("nan")  # measured for "auto"


@functools.lru_cache(maxsize=4)
def _phonemizer(espeak_voice: str) -> Phonemizer:
    return Phonemizer(espeak_voice)


def text_ids(text: str, voice: BaseVoice) -> list[int]:
    """Phoneme ids for a clip's transcript through the same front end that serves the voice.

    One sequence for the whole clip (it is aligned to one recording): normalised text, espeak-ng
    phonemes with Piper's clause punctuation, Piper's id layout.
    """
    phonemes = _phonemizer(voice.espeak_voice).phonemize(normalize_text(text))
    return phonemes_to_ids(phonemes, voice.phoneme_id_map)


@torch.no_grad()
def render_deterministic(model: VitsModel, ids: list[int], length_scale: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """The base model's noise-free rendering of ids: (audio, durations in frames)."""
    x = torch.tensor([ids], dtype=torch.long)
    out = model.infer(x, torch.tensor([len(ids)]), noise_scale=0.0, length_scale=length_scale, noise_w=0.0)
    n = int(out.audio_lengths[0])
    return out.audio[0, :n].numpy(), out.durations[0].numpy()


def load_clips(root: Path | str) -> list[tuple[str, np.ndarray, int]]:
    """(text, audio, sample rate) for each clip of a prepared dataset (chorus.adapters.prepared)."""
    from chorus.adapters.prepared import load_prepared

    ds = load_prepared(root)
    out = []
    for clip in ds.clips:
        audio, sr = sf.read(ds.path(clip), dtype="float32", always_2d=False)
        out.append((clip.text, audio, sr))
    return out


def build_trainset(clips: list[tuple[str, np.ndarray, int]], model: VitsModel, voice: BaseVoice,
                   pitch_path: str = "resample") -> TrainSet:
    """Fit the profile (pitch factor, length scale) and align every clip in the model domain.

    `pitch_path` (chorus.adapters.pitch.PITCH_PATHS): "resample" trains on clips slowed by the pitch
    factor, "psola"/"world" fit the factor but train on the clips as they are, "none" fixes it at 1,
    "auto" measures the formant ratio and picks "resample" or "psola" (pitch.choose_pitch_path).
    """
    if pitch_path not in PITCH_PATHS:
        raise ValueError(f"unknown pitch path {pitch_path!r}; valid: {list(PITCH_PATHS)}")
    sr = voice.sample_rate
    for text, _, clip_sr in clips:
        if clip_sr != sr:
            raise ValueError(f"clip {text[:30]!r} is at {clip_sr} Hz; prepared datasets are at {sr} Hz")
    ids = [text_ids(text, voice) for text, _, _ in clips]
    base = [render_deterministic(model, i) for i in ids]
    # pYIN is slow on this CPU: a handful of clips pins the median down well enough.
    f0_base = median_f0([a for a, _ in base[:F0_CLIPS]], sr)
    f0_target = median_f0([a for _, a, _ in clips[:F0_CLIPS]], sr)
    r = f0_target / f0_base if pitch_path != "none" and np.isfinite(f0_target / f0_base) else 1.0
    alpha = float("nan")
    if pitch_path == "auto":
        alpha = formant_ratio([a for _, a, _ in clips[:F0_CLIPS]], [a for a, _ in base[:F0_CLIPS]], sr)
        pitch_path = choose_pitch_path(r, alpha)
    out, target_frames, base_frames = [], 0, 0
    for (text, audio, _), seq, (base_audio, base_dur) in zip(clips, ids, base):
        model_audio = to_model_domain(audio, sr, r) if pitch_path == "resample" else audio
        durations = align_durations(base_audio, base_dur, model_audio, sr)
        target_frames += int(durations.sum())
        base_frames += int(base_dur.sum())
        frames = int(durations.sum())
        out.append(TrainClip(text, torch.tensor(seq, dtype=torch.long), torch.from_numpy(durations),
                             torch.from_numpy(model_audio[: frames * HOP].copy())))
    return TrainSet(out, float(r), target_frames / base_frames, f0_base, f0_target, pitch_path, alpha)


__all__ = ["TrainClip", "TrainSet", "build_trainset", "from_model_domain", "load_clips", "render_deterministic",
           "text_ids"]
