"""Streaming encoders: bytes for each chunk of audio as it is synthesised (wav, pcm, mp3).

A streamed WAV carries 0xFFFFFFFF as its RIFF and data sizes (length unknown when the header
goes out); libsndfile, ffmpeg and browsers read such a file to its end. MP3 frames come from LAME
(PyPI `lameenc`, LGPL, a separate library) and carry no gapless tag, so a decoder returns the
encoder delay and padding as well: up to about 1,600 extra samples at 22.05 kHz.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator

import numpy as np

from chorus.engine.audio import AudioError, get_format, to_pcm16

STREAMABLE = ("wav", "pcm", "mp3")
"""Formats that can be produced chunk by chunk (Ogg and FLAC need the whole signal here)."""

_UNKNOWN = 0xFFFFFFFF


def wav_stream_header(sample_rate: int) -> bytes:
    """A 44-byte RIFF/WAVE header for 16-bit mono PCM whose length is not known yet."""
    fmt = struct.pack("<IHHIIHH", 16, 1, 1, sample_rate, sample_rate * 2, 2, 16)
    return b"RIFF" + struct.pack("<I", _UNKNOWN) + b"WAVE" + b"fmt " + fmt + b"data" + struct.pack("<I", _UNKNOWN)


class StreamEncoder:
    """Encode audio chunk by chunk: `encode(chunk)` returns bytes to send, `finish()` the tail."""

    def __init__(self, fmt: str, sample_rate: int, *, mp3_bitrate: int = 64) -> None:
        spec = get_format(fmt)
        if spec.name not in STREAMABLE:
            raise AudioError(f"format {spec.name!r} cannot be streamed; streamable formats: {', '.join(STREAMABLE)}")
        if isinstance(sample_rate, bool) or int(sample_rate) != sample_rate or sample_rate <= 0:
            raise AudioError(f"sample_rate must be a positive integer in Hz, got {sample_rate!r}")
        self.fmt = spec.name
        self.sample_rate = int(sample_rate)
        self.mime = spec.mime
        self._started = False
        self._finished = False
        self._lame = None
        if self.fmt == "mp3":
            import lameenc

            from chorus.engine.audio import MP3_RATES

            if self.sample_rate not in MP3_RATES:
                raise AudioError(f"mp3 cannot carry {self.sample_rate} Hz; valid rates: {MP3_RATES}")
            self._lame = lameenc.Encoder()
            self._lame.set_bit_rate(mp3_bitrate)
            self._lame.set_in_sample_rate(self.sample_rate)
            self._lame.set_channels(1)
            self._lame.set_quality(2)

    def encode(self, chunk: np.ndarray) -> bytes:
        """Bytes for one chunk (the first call also returns the WAV header); empty chunks are allowed."""
        if self._finished:
            raise AudioError("stream already finished")
        pcm = to_pcm16(chunk).tobytes()
        head = b""
        if not self._started:
            self._started = True
            head = wav_stream_header(self.sample_rate) if self.fmt == "wav" else b""
        if self._lame is not None:
            return bytes(self._lame.encode(pcm)) if pcm else b""
        return head + pcm

    def finish(self) -> bytes:
        """The last bytes of the stream (buffered MP3 frames; a header if nothing was sent)."""
        if self._finished:
            return b""
        tail = b"" if self._started or self.fmt != "wav" else wav_stream_header(self.sample_rate)
        self._started = self._finished = True
        if self._lame is not None:
            return bytes(self._lame.flush())
        return tail


def iter_encode(chunks: Iterable[np.ndarray], sample_rate: int, fmt: str = "wav") -> Iterator[bytes]:
    """Yield encoded bytes for each chunk of float32 mono audio, then the stream's tail."""
    enc = StreamEncoder(fmt, sample_rate)
    for chunk in chunks:
        data = enc.encode(chunk)
        if data:
            yield data
    tail = enc.finish()
    if tail:
        yield tail
