"""Audio codecs: encode float32 mono to wav/flac/ogg/opus/pcm/mp3 bytes, decode, resample, load.

Everything goes through libsndfile (PyPI `soundfile`, whose wheel bundles libsndfile 1.2 with
Vorbis, Opus and MPEG support), so encoding and decoding need no external program.
"""

from __future__ import annotations

import io
import logging
import math
from pathlib import Path

import numpy as np
import soundfile as sf
from pydantic import BaseModel, ConfigDict

log = logging.getLogger(__name__)

OPUS_RATE = 48_000
"""Opus only codes 8/12/16/24/48 kHz: Chorus always resamples to 48 kHz (the rate Opus decoders output)."""

MP3_RATES = (8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000)
"""Sample rates MPEG-1/2/2.5 layer III can carry; any other rate is resampled to 48 kHz."""


class AudioError(ValueError):
    """Bad audio input or bytes that cannot be decoded (a client's mistake: map it to 4xx)."""


class AudioFormat(BaseModel):
    """One output format: its name, HTTP media type and how libsndfile writes it."""

    model_config = ConfigDict(frozen=True)

    name: str
    """Short name used on the CLI and in requests."""
    mime: str
    """Media type for HTTP Content-Type."""
    extension: str
    """File name extension, with the dot."""
    container: str | None
    """libsndfile major format (None: headerless raw PCM)."""
    subtype: str
    """libsndfile subtype (codec)."""
    lossless: bool
    """True when decoding gives back the 16-bit samples exactly."""
    description: str
    """One line for help texts."""


FORMATS: dict[str, AudioFormat] = {
    f.name: f
    for f in (
        AudioFormat(name="wav", mime="audio/wav", extension=".wav", container="WAV", subtype="PCM_16",
                    lossless=True, description="RIFF WAVE, 16-bit PCM"),
        AudioFormat(name="flac", mime="audio/flac", extension=".flac", container="FLAC", subtype="PCM_16",
                    lossless=True, description="FLAC, 16-bit"),
        AudioFormat(name="ogg", mime="audio/ogg", extension=".ogg", container="OGG", subtype="VORBIS",
                    lossless=False, description="Ogg Vorbis at the input rate"),
        AudioFormat(name="opus", mime="audio/opus", extension=".opus", container="OGG", subtype="OPUS",
                    lossless=False, description="Ogg Opus, resampled to 48 kHz"),
        # audio/L16 (RFC 2586) formally means big-endian samples; Chorus sends little-endian, the
        # order every common client (ffmpeg s16le, Web Audio) expects, and says so in `description`.
        AudioFormat(name="pcm", mime="audio/L16", extension=".pcm", container=None, subtype="PCM_16",
                    lossless=True, description="raw signed 16-bit little-endian mono, no header"),
        AudioFormat(name="mp3", mime="audio/mpeg", extension=".mp3", container="MP3",
                    subtype="MPEG_LAYER_III", lossless=False, description="MPEG-1/2 layer III"),
    )
}

_EXTENSIONS = {f.extension: f.name for f in FORMATS.values()} | {".raw": "pcm", ".oga": "ogg"}


def get_format(fmt: str) -> AudioFormat:
    """Look a format up by name (case-insensitive); unknown names raise AudioError listing the valid ones."""
    spec = FORMATS.get(str(fmt).lower().lstrip("."))
    if spec is None:
        raise AudioError(f"unknown audio format {fmt!r}; valid formats: {', '.join(FORMATS)}")
    return spec


def format_for_path(path: str | Path) -> str | None:
    """The format name a file name's extension implies, or None when it implies none."""
    return _EXTENSIONS.get(Path(str(path)).suffix.lower())


def mime_type(fmt: str, sample_rate: int | None = None) -> str:
    """Content-Type for a format; raw PCM carries its rate and channel count as parameters."""
    spec = get_format(fmt)
    if spec.name == "pcm" and sample_rate:
        return f"{spec.mime}; rate={int(sample_rate)}; channels=1"
    return spec.mime


def output_rate(fmt: str, sample_rate: int) -> int:
    """The sample rate `encode` writes for this format and input rate."""
    name = get_format(fmt).name
    if name == "opus":
        return OPUS_RATE
    if name == "mp3" and sample_rate not in MP3_RATES:
        return 48_000
    return sample_rate


def check_audio(audio: np.ndarray, *, allow_empty: bool = False) -> np.ndarray:
    """Validate mono float audio and return it as float32 clipped to [-1, 1]; NaN/inf raise AudioError."""
    arr = np.asarray(audio)
    if arr.ndim == 2 and 1 in arr.shape:
        arr = arr.reshape(-1)
    if arr.ndim != 1:
        raise AudioError(f"audio must be mono (1-D), got shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.floating):
        raise AudioError(f"audio must be floating point in [-1, 1], got dtype {arr.dtype}")
    if arr.size == 0 and not allow_empty:
        raise AudioError("audio is empty (0 samples)")
    bad = ~np.isfinite(arr)
    if bad.any():
        raise AudioError(
            f"audio contains {int(bad.sum())} non-finite samples (NaN/inf), first at index {int(np.argmax(bad))}"
        )
    peak = float(np.max(np.abs(arr))) if arr.size else 0.0
    if peak > 1.0:
        log.debug("clipping %d samples (peak %.3f) to [-1, 1]", int((np.abs(arr) > 1).sum()), peak)
    return np.clip(arr, -1.0, 1.0).astype(np.float32, copy=False)


def check_rate(sample_rate: int, what: str = "sample_rate") -> int:
    """The rate as an int; AudioError unless it is a positive whole number of Hz."""
    try:
        ok = not isinstance(sample_rate, bool) and int(sample_rate) == sample_rate and sample_rate > 0
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise AudioError(f"{what} must be a positive integer in Hz, got {sample_rate!r}")
    return int(sample_rate)


def to_pcm16(audio: np.ndarray) -> np.ndarray:
    """Float32 in [-1, 1] to little-endian int16 (round to nearest, symmetric scale 32767)."""
    return np.round(check_audio(audio, allow_empty=True) * 32767.0).astype("<i2")


def encode(audio: np.ndarray, sample_rate: int, fmt: str = "wav") -> bytes:
    """Encode float32 mono audio to the bytes of one format (opus, and mp3 at odd rates, are resampled)."""
    spec = get_format(fmt)
    sample_rate = check_rate(sample_rate)
    samples = check_audio(audio)
    rate = output_rate(spec.name, sample_rate)
    if rate != sample_rate:
        samples = np.clip(resample(samples, sample_rate, rate), -1.0, 1.0)
    if spec.container is None:
        return to_pcm16(samples).tobytes()
    data = to_pcm16(samples) if spec.lossless else samples
    buf = io.BytesIO()
    try:
        sf.write(buf, data, rate, format=spec.container, subtype=spec.subtype)
    except (sf.SoundFileError, RuntimeError) as exc:
        reason = getattr(exc, "error_string", None) or str(exc)
        raise AudioError(f"could not encode {samples.size} samples at {rate} Hz as {spec.name}: {reason}") from exc
    return buf.getvalue()


_CONTAINER_ALIASES = {"WAV": {"WAV", "WAVEX", "RF64", "W64"}}


def _container_matches(spec: AudioFormat, info) -> bool:
    return info.format in _CONTAINER_ALIASES.get(spec.container, {spec.container})


def decode(data: bytes, fmt: str | None = None, *, sample_rate: int | None = None) -> tuple[np.ndarray, int]:
    """Decode bytes to (float32 mono audio, sample rate); the format is detected unless `fmt` says it.

    Raw PCM (`fmt="pcm"`) has no header, so it needs `sample_rate`. Multi-channel audio is mixed down.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise AudioError(f"audio data must be bytes, got {type(data).__name__}")
    data = bytes(data)
    if not data:
        raise AudioError("audio data is empty (0 bytes)")
    spec = get_format(fmt) if fmt is not None else None
    if spec is not None and spec.container is None:
        if sample_rate is None:
            raise AudioError("raw pcm has no header: pass sample_rate to decode it")
        if len(data) % 2:
            raise AudioError(f"raw 16-bit pcm must have an even number of bytes, got {len(data)}")
        pcm = np.frombuffer(data, dtype="<i2")
        return pcm.astype(np.float32) / 32768.0, check_rate(sample_rate)  # the scale libsndfile reads with
    what = spec.name if spec else "any known format (wav, flac, ogg, opus, mp3)"
    try:
        info = sf.info(io.BytesIO(data))
        audio, rate = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
    except (sf.SoundFileError, RuntimeError) as exc:
        reason = getattr(exc, "error_string", None) or str(exc)
        raise AudioError(f"could not decode {len(data)} bytes as {what}: {reason}") from exc
    if spec is not None and not _container_matches(spec, info):
        raise AudioError(f"data is {info.format} ({info.subtype}), not {spec.name} as requested")
    mono = audio.mean(axis=1) if audio.shape[1] > 1 else audio[:, 0]
    return np.ascontiguousarray(mono, dtype=np.float32), int(rate)


def resample(audio: np.ndarray, sr_in: int, sr_out: int) -> np.ndarray:
    """Resample mono float audio (soxr high quality when installed, else scipy's polyphase filter)."""
    sr_in, sr_out = check_rate(sr_in, "sr_in"), check_rate(sr_out, "sr_out")
    x = np.asarray(audio, dtype=np.float32)
    if sr_in == sr_out or x.size == 0:
        return x.copy()
    try:
        import soxr
    except ImportError:  # soxr comes with librosa; scipy is the always-present fallback
        from scipy.signal import resample_poly

        g = math.gcd(sr_in, sr_out)
        return resample_poly(x, sr_out // g, sr_in // g).astype(np.float32)
    return soxr.resample(x, sr_in, sr_out, quality="HQ").astype(np.float32, copy=False)


def load_audio(
    source: str | Path,
    target_sr: int | None = None,
    *,
    sample_rate: int | None = None,
    storage_options: dict | None = None,
) -> tuple[np.ndarray, int]:
    """Read a local path or fsspec URI (file://, s3://, memory://, ...) to (float32 mono, rate).

    `target_sr` resamples; `sample_rate` is only for headerless .pcm/.raw files;
    `storage_options` go to fsspec (e.g. an s3 endpoint_url).
    """
    import fsspec

    uri = str(source)
    try:
        with fsspec.open(uri, "rb", **(storage_options or {})) as fh:
            data = fh.read()
    except FileNotFoundError as exc:
        raise AudioError(f"no such audio file: {uri}") from exc
    except (OSError, ValueError, ImportError) as exc:
        raise AudioError(f"could not read audio from {uri}: {exc}") from exc
    fmt = format_for_path(uri)
    try:
        audio, rate = decode(data, "pcm" if fmt == "pcm" else None, sample_rate=sample_rate)
    except AudioError as exc:
        raise AudioError(f"{uri}: {exc}") from exc
    if audio.size == 0:
        raise AudioError(f"{uri}: the file holds no samples")
    if target_sr is not None and target_sr != rate:
        audio, rate = resample(audio, rate, target_sr), int(target_sr)
    return audio, rate


def save_audio(
    dest: str | Path, audio: np.ndarray, sample_rate: int, fmt: str | None = None, *, storage_options: dict | None = None
) -> str:
    """Encode and write to a local path or fsspec URI; the format defaults to the extension's (else wav).

    Returns the format name written.
    """
    import fsspec

    name = fmt or format_for_path(dest) or "wav"
    data = encode(audio, sample_rate, name)
    with fsspec.open(str(dest), "wb", **(storage_options or {})) as fh:
        fh.write(data)
    return name
