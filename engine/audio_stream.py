"""Streaming encoders: bytes for each chunk of audio as it is synthesised (wav, pcm, mp3, ogg, opus).

A streamed WAV carries 0xFFFFFFFF as its RIFF and data sizes (length unknown when the header
goes out); libsndfile, ffmpeg and browsers read such a file to its end. MP3 frames come from LAME
(PyPI `lameenc`, LGPL, a separate library) and carry no gapless tag, so a decoder returns the
encoder delay and padding as well: up to about 1,600 extra samples at 22.05 kHz. Ogg Vorbis and
Ogg Opus come from libsndfile, which writes Ogg pages strictly in order (checked: it never seeks
back), so each chunk's finished pages can be sent at once; pages close about once a second of
audio, so an Ogg stream lags the synthesis by up to ~1 s. Opus is resampled to 48 kHz with a
streaming resampler (soxr) so chunk edges leave no seams.
"""

from __future__ import annotations

import io
import struct
from collections.abc import Iterable, Iterator

import numpy as np

from chorus.engine.audio import OPUS_RATE, AudioError, check_rate, check_audio, get_format, to_pcm16

STREAMABLE = ("wav", "pcm", "mp3", "ogg", "opus")
"""Formats that can be produced chunk by chunk (FLAC needs the whole signal: its header is rewritten at the end)."""

_UNKNOWN = 0xFFFFFFFF


def wav_stream_header(sample_rate: int) -> bytes:
    """A 44-byte RIFF/WAVE header for 16-bit mono PCM whose length is not known yet."""
    fmt = struct.pack("<IHHIIHH", 16, 1, 1, sample_rate, sample_rate * 2, 2, 16)
    return b"RIFF" + struct.pack("<I", _UNKNOWN) + b"WAVE" + b"fmt " + fmt + b"data" + struct.pack("<I", _UNKNOWN)


class _AppendOnlySink(io.RawIOBase):
    """A file object for libsndfile that hands out what was written and refuses to rewrite it."""

    def __init__(self) -> None:
        self._pending = bytearray()
        self._pos = 0

    def writable(self) -> bool:
        return True

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def write(self, data) -> int:
        self._pending += bytes(data)
        self._pos += len(data)
        return len(data)

    def read(self, size: int = -1) -> bytes:
        return b""

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = 0) -> int:
        target = {0: offset, 1: self._pos + offset, 2: self._pos + offset}[whence]
        if target != self._pos:
            raise OSError("streaming encoder cannot seek: the codec tried to rewrite sent bytes")
        return self._pos

    def take(self) -> bytes:
        """Bytes written since the last call."""
        out, self._pending = bytes(self._pending), bytearray()
        return out


class StreamEncoder:
    """Encode audio chunk by chunk: `encode(chunk)` returns bytes to send, `finish()` the tail."""

    def __init__(self, fmt: str, sample_rate: int, *, mp3_bitrate: int = 64) -> None:
        spec = get_format(fmt)
        if spec.name not in STREAMABLE:
            raise AudioError(f"format {spec.name!r} cannot be streamed; streamable formats: {', '.join(STREAMABLE)}")
        self.fmt = spec.name
        self.sample_rate = check_rate(sample_rate)
        self.mime = spec.mime
        self.output_rate = OPUS_RATE if self.fmt == "opus" else self.sample_rate
        """Sample rate of the encoded stream (Opus: always 48 kHz)."""
        self._started = False
        self._finished = False
        self._lame = None
        self._sndfile = None
        self._resampler = None
        if self.fmt in ("ogg", "opus"):
            import soundfile as sf

            rate = self.output_rate
            if rate != self.sample_rate:
                import soxr

                self._resampler = soxr.ResampleStream(self.sample_rate, rate, 1, dtype="float32", quality="HQ")
            self._sink = _AppendOnlySink()
            self._sndfile = sf.SoundFile(self._sink, "w", rate, 1, format="OGG", subtype=spec.subtype)
        elif self.fmt == "mp3":
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
        if self._sndfile is not None:
            return self._write_ogg(check_audio(chunk, allow_empty=True), last=False)
        pcm = to_pcm16(chunk).tobytes()
        head = b""
        if not self._started:
            self._started = True
            head = wav_stream_header(self.sample_rate) if self.fmt == "wav" else b""
        if self._lame is not None:
            return bytes(self._lame.encode(pcm)) if pcm else b""
        return head + pcm

    def finish(self) -> bytes:
        """The last bytes of the stream (buffered MP3 frames, the last Ogg pages; a header if nothing was sent)."""
        if self._finished:
            return b""
        if self._sndfile is not None:
            tail = self._write_ogg(np.zeros(0, dtype=np.float32), last=True)
            self._sndfile.close()
            self._finished = True
            return tail + self._sink.take()
        tail = b"" if self._started or self.fmt != "wav" else wav_stream_header(self.sample_rate)
        self._started = self._finished = True
        if self._lame is not None:
            return bytes(self._lame.flush())
        return tail


    def _write_ogg(self, samples: np.ndarray, *, last: bool) -> bytes:
        if self._resampler is not None:
            samples = np.clip(self._resampler.resample_chunk(samples, last=last), -1.0, 1.0)
        if samples.size:
            self._sndfile.write(samples)
        return self._sink.take()


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
