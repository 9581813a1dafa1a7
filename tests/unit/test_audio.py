"""chorus.engine.audio: every format round-trips to the right length and content; bad input fails clearly.

Length tolerances (what the codecs give through libsndfile 1.2): wav, flac, pcm and Ogg Vorbis decode
to exactly the input length; Ogg Opus to the input length at 48 kHz within 2 samples; MP3 (libsndfile
writes a LAME gapless tag) within one 1,152-sample frame. The lameenc stream carries no gapless tag:
decoder delay plus padding, at most two frames. Streamed Ogg Vorbis/Opus decode to the same lengths as
whole-file encoding.
"""

from __future__ import annotations

import subprocess
import uuid

import numpy as np
import pytest

from chorus.engine import audio as A
from chorus.engine.audio_stream import STREAMABLE, StreamEncoder, iter_encode

SR = 22_050
SENTENCE = "Chorus turns text into speech for every tenant, one small adapter at a time."
LENGTH_TOLERANCE = {"wav": 0, "flac": 0, "pcm": 0, "ogg": 0, "opus": 2, "mp3": 1152}
MIN_CORRELATION = {"wav": 0.9999, "flac": 0.9999, "pcm": 0.9999, "ogg": 0.95, "opus": 0.9, "mp3": 0.9}


@pytest.fixture(scope="module")
def speech() -> np.ndarray:
    """About 4 s of real speech at 22.05 kHz from Debian's espeak-ng (run as a separate process)."""
    wav = subprocess.run(["espeak-ng", "--stdout", "-v", "en-us", SENTENCE], capture_output=True, check=True).stdout
    audio, sr = A.decode(wav)
    assert sr == SR
    return audio


def _correlation(a: np.ndarray, b: np.ndarray) -> float:
    n = min(a.size, b.size)
    return float(np.corrcoef(a[:n], b[:n])[0, 1])


def _best_lag_correlation(ref: np.ndarray, out: np.ndarray, max_lag: int = 2400) -> float:
    """Correlation after aligning `out` to `ref` at the best lag in 0..max_lag (stream mp3 is delayed)."""
    from scipy.signal import correlate

    xc = correlate(out[: ref.size + max_lag], ref, mode="full", method="fft")[ref.size - 1 :][:max_lag]
    return _correlation(ref, out[int(np.argmax(xc)) :])


@pytest.mark.parametrize("fmt", list(A.FORMATS))
def test_every_format_round_trips(speech: np.ndarray, fmt: str) -> None:
    data = A.encode(speech, SR, fmt)
    assert isinstance(data, bytes) and len(data) > 100
    out, rate = A.decode(data, fmt, sample_rate=SR if fmt == "pcm" else None)
    assert out.dtype == np.float32 and out.ndim == 1
    assert rate == A.output_rate(fmt, SR)
    expected = round(speech.size * rate / SR)
    assert abs(out.size - expected) <= LENGTH_TOLERANCE[fmt], (fmt, out.size, expected)
    back = A.resample(out, rate, SR) if rate != SR else out
    assert _correlation(speech, back) >= MIN_CORRELATION[fmt]
    if A.FORMATS[fmt].lossless:
        assert np.max(np.abs(out - speech)) <= 1.0 / 32767 + 1e-6


def test_formats_detected_without_a_hint(speech: np.ndarray) -> None:
    for fmt in ("wav", "flac", "ogg", "opus", "mp3"):
        out, rate = A.decode(A.encode(speech, SR, fmt))
        assert rate == A.output_rate(fmt, SR) and out.size > 0


def test_compressed_formats_are_smaller(speech: np.ndarray) -> None:
    sizes = {fmt: len(A.encode(speech, SR, fmt)) for fmt in A.FORMATS}
    assert sizes["flac"] < sizes["wav"]
    for lossy in ("ogg", "opus", "mp3"):
        assert sizes[lossy] < sizes["flac"] / 2, sizes


def test_mime_types() -> None:
    assert {f: A.FORMATS[f].mime for f in A.FORMATS} == {
        "wav": "audio/wav", "flac": "audio/flac", "ogg": "audio/ogg", "opus": "audio/opus",
        "pcm": "audio/L16", "mp3": "audio/mpeg",
    }
    assert A.mime_type("pcm", SR) == "audio/L16; rate=22050; channels=1"
    assert A.mime_type("MP3") == "audio/mpeg"


def test_out_of_range_samples_are_clipped() -> None:
    loud = np.array([2.0, -3.0, 0.5, 1.0], dtype=np.float32)
    out, _ = A.decode(A.encode(loud, SR, "wav"))
    np.testing.assert_allclose(out, [1.0, -1.0, 0.5, 1.0], atol=1e-4)


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (np.array([0.1, np.nan, 0.2], dtype=np.float32), "non-finite samples .* index 1"),
        (np.array([0.1, np.inf], dtype=np.float32), "non-finite"),
        (np.zeros(0, dtype=np.float32), "empty"),
        (np.zeros((2, 100), dtype=np.float32), "mono"),
        (np.zeros(100, dtype=np.int16), "floating point"),
    ],
)
def test_bad_audio_is_rejected(bad: np.ndarray, message: str) -> None:
    with pytest.raises(A.AudioError, match=message):
        A.encode(bad, SR, "wav")


def test_unknown_format_lists_valid_ones(speech: np.ndarray) -> None:
    with pytest.raises(A.AudioError, match=r"unknown audio format 'aac'; valid formats: wav, flac, ogg, opus, pcm, mp3"):
        A.encode(speech, SR, "aac")


@pytest.mark.parametrize("rate", [0, -8000, 22050.5, True, "fast", None])
def test_bad_sample_rate(speech: np.ndarray, rate) -> None:
    with pytest.raises(A.AudioError, match="sample_rate must be a positive integer"):
        A.encode(speech, rate, "wav")


def test_undecodable_bytes_give_clear_errors(speech: np.ndarray) -> None:
    with pytest.raises(A.AudioError, match=r"could not decode 19 bytes as any known format.*Format not recognised"):
        A.decode(b"this is not audio!!")
    with pytest.raises(A.AudioError, match="empty"):
        A.decode(b"")
    with pytest.raises(A.AudioError, match="must be bytes"):
        A.decode("RIFF....")  # type: ignore[arg-type]
    with pytest.raises(A.AudioError, match="not mp3"):
        A.decode(A.encode(speech, SR, "wav"), "mp3")
    truncated = A.encode(speech, SR, "flac")[:30]
    with pytest.raises(A.AudioError, match="could not decode 30 bytes as flac"):
        A.decode(truncated, "flac")


def test_raw_pcm_needs_rate_and_even_length() -> None:
    with pytest.raises(A.AudioError, match="pass sample_rate"):
        A.decode(b"\x00\x01", "pcm")
    with pytest.raises(A.AudioError, match="even number of bytes, got 3"):
        A.decode(b"\x00\x01\x02", "pcm", sample_rate=SR)


def test_resample_keeps_frequency_and_duration() -> None:
    t = np.arange(SR) / SR
    tone = (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    out = A.resample(tone, SR, 16_000)
    assert out.dtype == np.float32 and out.size == 16_000
    peak_hz = np.argmax(np.abs(np.fft.rfft(out))) * 16_000 / out.size
    assert abs(peak_hz - 440) <= 1
    same = A.resample(tone, SR, SR)
    assert same is not tone and np.array_equal(same, tone)
    with pytest.raises(A.AudioError, match="sr_out must be a positive integer"):
        A.resample(tone, SR, 0)


def test_load_and_save_local_file_and_uris(speech: np.ndarray, tmp_path) -> None:
    path = tmp_path / "clip.flac"
    assert A.save_audio(path, speech, SR) == "flac"
    for source in (path, str(path), f"file://{path}"):
        audio, rate = A.load_audio(source)
        assert rate == SR and audio.size == speech.size
    audio16, rate16 = A.load_audio(path, target_sr=16_000)
    assert rate16 == 16_000 and abs(audio16.size - round(speech.size * 16_000 / SR)) <= 1
    mem = f"memory://chorus-test/{uuid.uuid4().hex}/clip.mp3"
    assert A.save_audio(mem, speech, SR) == "mp3"
    audio, rate = A.load_audio(mem)
    assert rate == SR and abs(audio.size - speech.size) <= LENGTH_TOLERANCE["mp3"]
    raw = tmp_path / "clip.pcm"
    A.save_audio(raw, speech, SR)
    audio, rate = A.load_audio(raw, sample_rate=SR)
    assert rate == SR and audio.size == speech.size


def test_load_errors_name_the_source(tmp_path) -> None:
    missing = tmp_path / "nope.wav"
    with pytest.raises(A.AudioError, match=f"no such audio file: {missing}"):
        A.load_audio(missing)
    junk = tmp_path / "junk.wav"
    junk.write_bytes(b"definitely not a wave file")
    with pytest.raises(A.AudioError, match=f"{junk}: could not decode"):
        A.load_audio(junk)


def test_load_from_s3(speech: np.ndarray, s3_endpoint: str) -> None:
    """A real S3 API (moto's server in a thread) read through s3fs."""
    boto3 = pytest.importorskip("boto3")

    creds = {"aws_access_key_id": "test", "aws_secret_access_key": "test", "region_name": "us-east-1"}
    bucket = f"voices-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=s3_endpoint, **creds).create_bucket(Bucket=bucket)
    opts = {"key": "test", "secret": "test", "client_kwargs": {"endpoint_url": s3_endpoint, "region_name": "us-east-1"}}
    A.save_audio(f"s3://{bucket}/t1/clip.ogg", speech, SR, storage_options=opts)
    audio, rate = A.load_audio(f"s3://{bucket}/t1/clip.ogg", storage_options=opts)
    assert rate == SR and audio.size == speech.size
    with pytest.raises(A.AudioError, match=f"no such audio file: s3://{bucket}/t1/missing.wav"):
        A.load_audio(f"s3://{bucket}/t1/missing.wav", storage_options=opts)


@pytest.mark.parametrize("fmt", ["wav", "pcm"])
def test_stream_matches_whole_encoding(speech: np.ndarray, fmt: str) -> None:
    chunks = np.array_split(speech, 7)
    streamed = b"".join(iter_encode(chunks, SR, fmt))
    out, rate = A.decode(streamed, fmt, sample_rate=SR)
    whole, _ = A.decode(A.encode(speech, SR, fmt), fmt, sample_rate=SR)
    assert rate == SR and np.array_equal(out, whole)


def test_stream_mp3(speech: np.ndarray) -> None:
    enc = StreamEncoder("mp3", SR)
    parts = [enc.encode(c) for c in np.array_split(speech, 5)] + [enc.finish()]
    out, rate = A.decode(b"".join(parts), "mp3")
    assert rate == SR
    assert speech.size <= out.size <= speech.size + 2 * 1152
    assert _best_lag_correlation(speech, out) >= 0.9


@pytest.mark.parametrize("fmt", ["ogg", "opus"])
def test_stream_ogg_pages_arrive_while_encoding(speech: np.ndarray, fmt: str) -> None:
    enc = StreamEncoder(fmt, SR)
    parts = [enc.encode(c) for c in np.array_split(speech, 8)]
    assert sum(1 for p in parts if p) >= 2  # pages go out before the end, not all at finish()
    out, rate = A.decode(b"".join(parts) + enc.finish(), fmt)
    assert rate == enc.output_rate == A.output_rate(fmt, SR)
    expected = A.resample(speech, SR, rate)
    assert abs(out.size - expected.size) <= LENGTH_TOLERANCE[fmt]
    assert _correlation(expected, out) >= MIN_CORRELATION[fmt]


def test_stream_errors(speech: np.ndarray) -> None:
    assert STREAMABLE == ("wav", "pcm", "mp3", "ogg", "opus")
    with pytest.raises(A.AudioError, match="cannot be streamed; streamable formats: wav, pcm, mp3, ogg, opus"):
        StreamEncoder("flac", SR)
    with pytest.raises(A.AudioError, match="mp3 cannot carry 22051 Hz"):
        StreamEncoder("mp3", 22_051)
    enc = StreamEncoder("wav", SR)
    header = enc.finish()
    assert len(header) == 44  # nothing sent: the tail is a header, a valid empty stream
    with pytest.raises(A.AudioError, match="already finished"):
        enc.encode(speech)
    with pytest.raises(A.AudioError, match="non-finite"):
        StreamEncoder("pcm", SR).encode(np.array([np.nan], dtype=np.float32))
