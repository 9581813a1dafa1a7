"""Generated test speech: espeak-ng voices (CLI subprocess) and the damaged clips a dataset must reject.

Tests and benchmarks build their audio here instead of committing blobs. espeak-ng is GPL-3.0 and
runs only as a separate process.
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import tempfile

import numpy as np
import soundfile as sf

ESPEAK_SAMPLE_RATE = 22050

# Harvard sentences (IEEE 1969 recommended practice, public domain): varied phonemes, 2-3 s each.
SENTENCES = (
    "The birch canoe slid on the smooth planks.",
    "Glue the sheet to the dark blue background.",
    "It's easy to tell the depth of a well.",
    "These days a chicken leg is a rare dish.",
    "Rice is often served in round bowls.",
    "The juice of lemons makes fine punch.",
    "The box was thrown beside the parked truck.",
    "The hogs were fed chopped corn and garbage.",
    "Four hours of steady work faced us.",
    "A large size in stockings is hard to sell.",
    "The boy was there when the sun rose.",
    "A rod is used to catch pink salmon.",
    "The source of the huge river is the clear spring.",
    "Kick the ball straight and follow through.",
    "Help the woman get back to her feet.",
    "A pot of tea helps to pass the evening.",
    "Smoky fires lack flame and heat.",
    "The soft cushion broke the man's fall.",
    "The salt breeze came across from the sea.",
    "The girl at the booth sold fifty bonds.",
)


def espeak_available() -> bool:
    """True when the espeak-ng CLI is on PATH."""
    return shutil.which("espeak-ng") is not None


def espeak_say(
    text: str, voice: str = "en-us", speed_wpm: int = 165, pitch: int = 50, amplitude: int = 100
) -> tuple[np.ndarray, int]:
    """Synthesise `text` with the espeak-ng CLI; returns (float32 mono audio, sample rate)."""
    if not espeak_available():
        raise RuntimeError("espeak-ng CLI not found on PATH (Debian package espeak-ng)")
    # `-w FILE`, not `--stdout`: the streamed header carries no sizes and libsndfile refuses it.
    with tempfile.TemporaryDirectory(prefix="chorus-espeak-") as tmp:
        path = os.path.join(tmp, "say.wav")
        cmd = ["espeak-ng", "-w", path, "-v", voice, "-s", str(speed_wpm), "-p", str(pitch),
               "-a", str(amplitude), text]
        subprocess.run(cmd, check=True, capture_output=True, timeout=60)
        audio, sr = sf.read(path, dtype="float32", always_2d=False)
    return audio, sr


def silence(seconds: float, sr: int = ESPEAK_SAMPLE_RATE, level_db: float = -80.0, seed: int = 0) -> np.ndarray:
    """Near-silence: white noise at `level_db` dBFS RMS (digital zero is unrealistically clean)."""
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(int(seconds * sr)) * 10 ** (level_db / 20)).astype(np.float32)


def long_recording(
    texts: tuple[str, ...] | list[str], gap_s: float = 0.8, voice: str = "en-us", **espeak_kwargs
) -> tuple[np.ndarray, int]:
    """Several sentences spoken one after another with `gap_s` of near-silence between them."""
    parts: list[np.ndarray] = []
    sr = ESPEAK_SAMPLE_RATE
    for i, text in enumerate(texts):
        audio, sr = espeak_say(text, voice=voice, **espeak_kwargs)
        parts.append(silence(gap_s, sr, seed=i))
        parts.append(audio)
    parts.append(silence(gap_s, sr, seed=len(texts)))
    return np.concatenate(parts), sr


def clipped(audio: np.ndarray, gain_db: float = 20.0) -> np.ndarray:
    """Amplify then hard-clip at full scale, as an overdriven recording would be."""
    return np.clip(audio * 10 ** (gain_db / 20), -1.0, 1.0).astype(np.float32)


def undecodable_bytes(size: int = 4096, seed: int = 0) -> bytes:
    """Bytes no audio decoder accepts (a truncated RIFF header followed by noise)."""
    rng = np.random.default_rng(seed)
    return b"RIFF\x00\x00" + rng.integers(0, 256, size, dtype=np.uint8).tobytes()


def encode(audio: np.ndarray, sr: int, fmt: str = "wav") -> bytes:
    """Encode float audio as wav (16-bit), flac, ogg (vorbis) or mp3 bytes with soundfile."""
    subtypes = {"wav": ("WAV", "PCM_16"), "flac": ("FLAC", "PCM_16"), "ogg": ("OGG", "VORBIS"),
                "mp3": ("MP3", "MPEG_LAYER_III")}
    if fmt not in subtypes:
        raise ValueError(f"unknown format {fmt!r}; valid: {sorted(subtypes)}")
    container, subtype = subtypes[fmt]
    buf = io.BytesIO()
    sf.write(buf, audio, sr, format=container, subtype=subtype)
    return buf.getvalue()
