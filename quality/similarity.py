"""Speaker similarity: Resemblyzer d-vectors (weights bundled in the wheel, CPU) and cosine scores.

Embeddings are L2-normalised 256-d vectors, so cosine similarity is a dot product. A voice
given by several reference clips is their mean embedding, renormalised (Resemblyzer's
`embed_speaker`).
"""

from __future__ import annotations

import threading
import warnings
from collections.abc import Sequence

import numpy as np

from chorus.engine.audio import check_audio, resample
from chorus.quality.errors import QualityModelError

ENCODER_RATE = 16_000
_lock = threading.Lock()
_encoder = None

Clip = tuple[np.ndarray, int]
"""(mono float audio, sample rate)."""


def get_encoder():
    """The shared Resemblyzer VoiceEncoder on CPU (loaded on first use)."""
    global _encoder
    with _lock:
        if _encoder is None:
            from chorus.quality.compat import import_legacy

            try:
                import_legacy("webrtcvad")
                with warnings.catch_warnings():  # resemblyzer imports scipy.ndimage.morphology (deprecated)
                    warnings.simplefilter("ignore", DeprecationWarning)
                    from resemblyzer import VoiceEncoder
            except ImportError as exc:
                raise QualityModelError(f"Resemblyzer not importable (install PyPI 'resemblyzer'): {exc}") from exc
            _encoder = VoiceEncoder(device="cpu", verbose=False)
        return _encoder


def embed_speaker(audio: np.ndarray, sample_rate: int) -> np.ndarray:
    """256-d unit-norm speaker embedding of one clip (resampled to 16 kHz, long silences trimmed)."""
    encoder = get_encoder()
    from resemblyzer import preprocess_wav

    wav = preprocess_wav(resample(check_audio(audio), sample_rate, ENCODER_RATE))
    if wav.size < ENCODER_RATE // 10:
        raise ValueError("no speech to embed: the clip is (nearly) silent after trimming silences")
    return np.asarray(encoder.embed_utterance(wav), dtype=np.float32)


embed = embed_speaker


def embed_voice(clips: Sequence[Clip]) -> np.ndarray:
    """Unit-norm mean embedding of a set of reference clips of one voice."""
    if not clips:
        raise ValueError("no reference clips given")
    mean = np.mean([embed_speaker(audio, sr) for audio, sr in clips], axis=0)
    return (mean / np.linalg.norm(mean)).astype(np.float32)


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine similarity of two embeddings."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"embedding shapes differ: {a.shape} vs {b.shape}")
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


similarity = cosine


def as_embedding(ref: np.ndarray | Clip | Sequence[Clip]) -> np.ndarray:
    """An embedding from an embedding (1-D array), one (audio, sr) clip, or a list of clips."""
    if isinstance(ref, np.ndarray) and ref.ndim == 1 and ref.dtype.kind == "f" and ref.size == 256:
        return ref.astype(np.float32)
    if isinstance(ref, tuple) and len(ref) == 2 and np.isscalar(ref[1]):
        return embed_speaker(*ref)
    return embed_voice(list(ref))


def speaker_similarity(audio: np.ndarray, sample_rate: int, refs: np.ndarray | Clip | Sequence[Clip]) -> float:
    """Cosine similarity of a clip's speaker to a reference voice (embedding, clip or clips)."""
    return cosine(embed_speaker(audio, sample_rate), as_embedding(refs))
