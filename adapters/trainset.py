"""Training examples from a prepared dataset: phoneme ids, DTW-aligned durations, model-domain audio."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from chorus.adapters.align import HOP, align_durations
from chorus.adapters.pitch import (PITCH_PATHS, choose_pitch_path, contour_factors, formant_ratio, from_model_domain,
                                    median_f0, pyin_f0, split_factors, to_model_domain)
from chorus.adapters.psola import psola_shift
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
    pitch_path: str = "resample"  # the path used
    formant_ratio: float = float("nan")  # measured for "auto" and "split"
    resample_factor: float = 1.0  # the part of pitch_factor applied by resampling; the rest by PSOLA/WORLD


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


TARGET_PITCH = ("contour", "median", "as-is")
"""How training clips' pitch is brought to the base voice's where the path PSOLAs the output: "contour" moves
each clip's f0 contour onto the base model's own rendering of it (text, aligned durations, no noise),
"median" shifts it by the constant pitch factor, "as-is" leaves it."""


@torch.no_grad()
def render_aligned(model: VitsModel, ids: torch.Tensor, durations: torch.Tensor) -> np.ndarray:
    """The base model's noise-free audio for ids held to the given per-phoneme durations (frames)."""
    enc = model.encode_text(ids.unsqueeze(0), torch.tensor([len(ids)]))
    prior = model.expand_prior(enc.m_p, enc.logs_p, durations.unsqueeze(0))
    z = model.flow_reverse(prior.m_p, prior.y_mask)
    return model.decode(z, prior.y_mask)[0].numpy()


def transplant_contour(audio: np.ndarray, reference: np.ndarray, sample_rate: int) -> np.ndarray:
    """PSOLA `audio` so its f0 contour follows `reference`'s frame by frame (same length, same timing)."""
    f0_audio, _ = pyin_f0(audio, sample_rate)
    f0_ref, _ = pyin_f0(reference, sample_rate)
    return psola_shift(audio, sample_rate, contour_factors(f0_audio, f0_ref), f0=f0_audio)


def build_trainset(clips: list[tuple[str, np.ndarray, int]], model: VitsModel, voice: BaseVoice,
                   pitch_path: str = "auto", target_pitch: str = "contour") -> TrainSet:
    """Fit the profile (pitch factor, formant ratio, length scale) and align every clip in the model domain.

    `pitch_path` (chorus.adapters.pitch.PITCH_PATHS): "auto" measures the formant ratio and picks "psola"
    or "resample" (pitch.choose_pitch_path); "split" slows the clips by the formant ratio alpha;
    "resample" slows them by the pitch factor r; "world" and "psola" leave their timing; "none" fixes r
    at 1. Where the path PSOLAs its output (split, psola), the clips' pitch is then brought to the base
    voice's as `target_pitch` (TARGET_PITCH) says -- by default contour by contour, so that the decoder,
    whose latents come from the base voice's text path and carry its pitch, is compared with target
    audio whose harmonics fall where its own do.
    """
    if pitch_path not in PITCH_PATHS:
        raise ValueError(f"unknown pitch path {pitch_path!r}; valid: {list(PITCH_PATHS)}")
    if target_pitch not in TARGET_PITCH:
        raise ValueError(f"unknown target pitch mode {target_pitch!r}; valid: {list(TARGET_PITCH)}")
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
    alpha, rho, shift = float("nan"), 1.0, 1.0  # formant ratio, resample factor, PSOLA factor
    if pitch_path in ("auto", "split"):
        alpha = formant_ratio([a for _, a, _ in clips[:F0_CLIPS]], [a for a, _ in base[:F0_CLIPS]], sr)
    if pitch_path == "auto":
        pitch_path = choose_pitch_path(r, alpha)
    if pitch_path == "split":
        rho, shift = split_factors(r, alpha)
    elif pitch_path == "resample":
        rho = r
    elif pitch_path == "psola":
        shift = r
    psola_output = pitch_path in ("split", "psola") and shift != 1.0
    out, target_frames, base_frames = [], 0, 0
    for (text, audio, _), seq, (base_audio, base_dur) in zip(clips, ids, base):
        model_audio = to_model_domain(audio, sr, rho)
        if psola_output and target_pitch == "median":
            model_audio = psola_shift(model_audio, sr, 1.0 / shift)
        durations = align_durations(base_audio, base_dur, model_audio, sr)
        target_frames += int(durations.sum())
        base_frames += int(base_dur.sum())
        frames = int(durations.sum())
        seq_t, dur_t = torch.tensor(seq, dtype=torch.long), torch.from_numpy(durations)
        model_audio = model_audio[: frames * HOP]
        if psola_output and target_pitch == "contour":
            model_audio = transplant_contour(model_audio, render_aligned(model, seq_t, dur_t), sr)
        audio_t = torch.from_numpy(np.ascontiguousarray(model_audio, dtype=np.float32))
        out.append(TrainClip(text, seq_t, dur_t, audio_t))
    return TrainSet(out, float(r), target_frames / base_frames, f0_base, f0_target, pitch_path, alpha, float(rho))


__all__ = ["TrainClip", "TrainSet", "build_trainset", "from_model_domain", "load_clips", "render_deterministic",
           "text_ids"]
