"""Fast, streaming voice-profile pitch path (chorus.adapters.profile): f0 against pYIN, streamed output equal to
whole-signal output for every path, pitch moved by the factor, passthrough, time scale, bad input."""

from __future__ import annotations

import numpy as np
import pytest

from chorus.adapters.pitch import from_model_domain, median_f0, octave_folded_median, pyin_f0
from chorus.adapters.profile import ProfileStream, _Wsola, apply_profile_fast, fast_f0
from chorus.adapters.targets import HELDOUT_SENTENCES, render_ids
from chorus.adapters.train import VoiceProfile
from chorus.adapters.trainset import text_ids

SR = 22050
PSOLA_UP = VoiceProfile(pitch_method="psola", pitch_factor=1.4)
PSOLA_DOWN = VoiceProfile(pitch_method="psola", pitch_factor=0.8)
RESAMPLE = VoiceProfile(pitch_method="resample", pitch_factor=1.4)
RESAMPLE_DOWN = VoiceProfile(pitch_method="resample", pitch_factor=0.8)
SPLIT = VoiceProfile(pitch_method="split", pitch_factor=1.4, resample_factor=1.1)


@pytest.fixture(scope="module")
def speech(voice) -> np.ndarray:
    """Two base-voice sentences (engine output with the voice's noise, seed 0) with a sentence silence between."""
    parts = [render_ids(text_ids(text, voice), voice, seed=0)[0] for text in HELDOUT_SENTENCES[:2]]
    return np.concatenate([parts[0], np.zeros(int(0.2 * SR), dtype=np.float32), parts[1]])


@pytest.fixture(scope="module")
def speech_pyin(speech) -> np.ndarray:
    return pyin_f0(speech, SR)[0]


def _stream(profile: VoiceProfile, audio: np.ndarray, seed: int = 0) -> tuple[np.ndarray, float]:
    """Output of random 0.3-1.5 s chunks (with an empty and a few tiny ones), and the most input held back (s)."""
    rng = np.random.default_rng(seed)
    stream, pieces, pos, held = ProfileStream(profile, SR), [], 0, 0.0
    sizes = [0, 1, 7, 300]
    while pos < len(audio):
        size = sizes.pop(0) if sizes else int(rng.uniform(0.3, 1.5) * SR)
        pieces.append(stream.process(audio[pos:pos + size], final=pos + size >= len(audio)))
        assert pieces[-1].dtype == np.float32
        pos += size
        if pos < len(audio):
            held = max(held, (pos - stream.samples_out / stream.time_scale) / SR)
    return np.concatenate(pieces), held


def test_fast_f0_agrees_with_pyin(speech, speech_pyin):
    f0, times = fast_f0(speech, SR)
    assert len(f0) == len(speech_pyin) and times[1] == pytest.approx(256 / SR)
    both = np.isfinite(f0) & np.isfinite(speech_pyin)
    assert both.sum() >= 0.6 * np.isfinite(speech_pyin).sum(), "too few frames voiced in both"
    log_ratio = np.abs(np.log(f0[both] / speech_pyin[both]))
    assert np.median(log_ratio) < 0.03, f"median |log ratio| {np.median(log_ratio):.3f}"
    assert np.mean(log_ratio > np.log(1.5)) < 0.02, "octave errors"
    assert np.nanmin(f0) >= 60 and np.nanmax(f0) <= 200


@pytest.mark.parametrize("profile", [PSOLA_UP, PSOLA_DOWN, RESAMPLE, RESAMPLE_DOWN, SPLIT],
                         ids=["psola1.4", "psola0.8", "resample1.4", "resample0.8", "split"])
def test_streamed_output_equals_whole_signal_output(speech, profile):
    whole = apply_profile_fast(speech, SR, profile)
    streamed, held = _stream(profile, speech)
    assert len(streamed) == len(whole)
    assert np.max(np.abs(streamed - whole)) < 1e-5
    limit = 0.15 if profile is SPLIT else 0.1  # split chains PSOLA (~55 ms) and soxr (~40 ms)
    assert held <= limit, f"held back {held * 1000:.0f} ms of input"
    assert held <= ProfileStream(profile, SR).lookahead_s + 0.01


def test_psola_moves_pitch_by_the_factor_and_keeps_length(speech, speech_pyin):
    f0_in = octave_folded_median(speech_pyin)  # as median_f0 measures the output
    for profile in (PSOLA_UP, PSOLA_DOWN):
        out = apply_profile_fast(speech, SR, profile)
        assert len(out) == len(speech) and np.isfinite(out).all()
        ratio = median_f0([out], SR) / f0_in
        assert abs(ratio / profile.pitch_factor - 1) < 0.05, f"f0 ratio {ratio:.3f}, expected {profile.pitch_factor}"
        # Voiced frames are moved throughout, not only where pYIN finds voicing.
        f_in, f_out = fast_f0(speech, SR)[0], fast_f0(out, SR)[0]
        both = np.isfinite(f_in) & np.isfinite(f_out)
        assert np.mean(np.abs(f_out[both] / f_in[both] - 1) < 0.05) < 0.1


def test_resample_and_split_paths(speech, speech_pyin):
    # Lowered: the engine renders r times as long and soxr plays it back r times faster (apply_profile's path).
    out = apply_profile_fast(speech, SR, RESAMPLE_DOWN)
    reference = from_model_domain(speech, SR, 0.8)
    assert abs(len(out) - len(reference)) <= 1
    n = min(len(out), len(reference))
    assert np.max(np.abs(out[:n] - reference[:n])) < 1e-3
    # Raised: the engine renders 1/r as long (base cost), WSOLA stretches by r, soxr plays back r times faster:
    # same length as the engine's audio, pitch (and formants) times r.
    assert ProfileStream(RESAMPLE, SR).model_length == pytest.approx(1 / 1.4)
    out = apply_profile_fast(speech, SR, RESAMPLE)
    assert abs(len(out) - len(speech)) <= 2
    ratio = median_f0([out], SR) / octave_folded_median(speech_pyin)
    assert abs(ratio / 1.4 - 1) < 0.05, f"f0 ratio {ratio:.3f}"
    split = apply_profile_fast(speech, SR, SPLIT)
    assert abs(len(split) - len(speech)) <= 2
    ratio = median_f0([split], SR) / octave_folded_median(speech_pyin)
    assert abs(ratio / 1.4 - 1) < 0.05, f"f0 ratio {ratio:.3f}"


def test_wsola_stretches_time_and_keeps_pitch(speech, speech_pyin):
    for stretch in (1.2, 1.7):
        out = _Wsola(SR, stretch).push(speech.astype(np.float64), final=True)
        assert len(out) == round(len(speech) * stretch)
        ratio = median_f0([out.astype(np.float32)], SR) / octave_folded_median(speech_pyin)
        assert abs(ratio - 1) < 0.03, f"stretch {stretch}: f0 moved by {ratio:.3f}"
        # Energy follows the input (Hann grains half overlapping sum to 1; no dropped or doubled stretches).
        rms_in, rms_out = np.sqrt(np.mean(speech ** 2)), np.sqrt(np.mean(out ** 2))
        assert abs(rms_out / rms_in - 1) < 0.1
    tone = np.sin(2 * np.pi * 110 * np.arange(SR) / SR)
    out = _Wsola(SR, 1.3).push(tone, final=True)
    # A periodic input continues without seams: every grain lands in phase, so the output stays a clean sine.
    mid = out[2000:-2000]
    assert np.max(np.abs(mid)) < 1.02 and np.sqrt(np.mean(mid ** 2)) == pytest.approx(np.sqrt(0.5), rel=0.02)


def test_time_scale_and_passthrough(speech):
    assert ProfileStream(PSOLA_UP, SR).time_scale == 1.0
    assert ProfileStream(RESAMPLE, SR).time_scale == 1.0  # raised: WSOLA's stretch undoes the resampling's
    assert ProfileStream(RESAMPLE_DOWN, SR).time_scale == pytest.approx(1 / 0.8)
    assert ProfileStream(RESAMPLE_DOWN, SR).model_length == 1.0
    assert ProfileStream(SPLIT, SR).time_scale == 1.0
    for profile in (VoiceProfile(pitch_method="psola", pitch_factor=1.0), VoiceProfile(pitch_method="resample"),
                    VoiceProfile(pitch_method="split", pitch_factor=1.2, resample_factor=1.2)):
        out = apply_profile_fast(speech, SR, profile)
        if profile.pitch_method == "split":  # PSOLA factor 1: resampling only
            assert np.array_equal(out, apply_profile_fast(speech, SR, VoiceProfile(pitch_factor=1.2)))
        else:
            assert out.dtype == np.float32 and np.array_equal(out, speech)
            assert ProfileStream(profile, SR).time_scale == 1.0


def test_silence_and_short_input():
    for n in (0, 100, SR):
        silent = np.zeros(n, dtype=np.float32)
        assert np.array_equal(apply_profile_fast(silent, SR, PSOLA_UP), silent)
    tone = np.sin(2 * np.pi * 100 * np.arange(SR // 2) / SR).astype(np.float32)
    out = apply_profile_fast(tone, SR, PSOLA_UP)
    f0 = fast_f0(out[2000:-2000], SR)[0]
    assert len(out) == len(tone) and np.nanmedian(f0) == pytest.approx(140, rel=0.03)


def test_bad_input_is_refused_clearly():
    stream = ProfileStream(PSOLA_UP, SR)
    assert stream.process(np.zeros(0, dtype=np.float32)).size == 0
    with pytest.raises(ValueError, match="NaN"):
        stream.process(np.array([0.1, np.nan], dtype=np.float32))
    with pytest.raises(ValueError, match="mono"):
        stream.process(np.zeros((2, 100), dtype=np.float32))
    with pytest.raises(ValueError, match="NaN"):
        apply_profile_fast(np.full(1000, np.inf, dtype=np.float32), SR, RESAMPLE)
    with pytest.raises(ValueError, match="NaN"):
        fast_f0(np.full(1000, np.nan), SR)
    stream.process(np.zeros(10, dtype=np.float32), final=True)
    with pytest.raises(RuntimeError, match="finished"):
        stream.process(np.zeros(10, dtype=np.float32))
    with pytest.raises(ValueError, match="world"):
        ProfileStream(VoiceProfile(pitch_method="world", pitch_factor=1.2), SR)
