"""The pitch factor a tenant voice is fitted with (the ratio of the target's to the base voice's median
f0, chorus.adapters.pitch.median_f0) survives an f0 tracker's octave errors and voices whose f0
ranges widely: the voice-reach issue's far voices (x0.7-x2.5 of the base) depend on it."""

from __future__ import annotations

import numpy as np
import pytest

from chorus.adapters import pitch
from chorus.adapters.targets import TRAIN_SENTENCES, _pyworld, render_base
from chorus.engine.voice import load_base_voice

CLIPS = 4


@pytest.fixture(scope="module")
def base_clips() -> tuple[list[np.ndarray], int]:
    voice = load_base_voice()
    return [render_base(t, voice, seed=i) for i, t in enumerate(TRAIN_SENTENCES[:CLIPS])], voice.sample_rate


def _jumping(tracker, fraction: float, jump: float, seed: int = 0):
    """`tracker` with runs of 8 frames moved by `jump` (x2 or x0.5), each run with probability `fraction`."""
    rng = np.random.default_rng(seed)

    def track(audio, sample_rate):
        f0, times = tracker(audio, sample_rate)
        f0 = f0.copy()
        for start in range(0, len(f0), 8):
            if rng.random() < fraction:
                f0[start:start + 8] *= jump
        return f0, times

    return track


@pytest.mark.parametrize("fraction", [0.3, 0.4])
@pytest.mark.parametrize("jump", [2.0, 0.5])
def test_octave_errors_of_the_tracker_do_not_move_the_fitted_median(base_clips, monkeypatch, fraction, jump):
    clips, sr = base_clips
    clean = pitch.median_f0(clips, sr)
    clean_plain = float(np.median(np.concatenate([pitch.f0_track(c, sr) for c in clips])))
    monkeypatch.setattr(pitch, "pyin_f0", _jumping(pitch.pyin_f0, fraction, jump))
    jumped_plain = float(np.median(np.concatenate([pitch.f0_track(c, sr) for c in clips])))
    jumped = pitch.median_f0(clips, sr)
    # A plain median is dragged by the errors (the check has teeth); the folded one much less.
    plain_error, folded_error = abs(jumped_plain / clean_plain - 1), abs(jumped / clean - 1)
    assert plain_error > 0.04, (jumped_plain, clean_plain)
    assert folded_error < 0.03 and folded_error < plain_error / 2, (folded_error, plain_error)


@pytest.mark.parametrize("factor", [0.7, 2.0, 2.5])
def test_voices_with_a_wide_f0_range_fit_their_pitch_factor(base_clips, factor):
    """Targets at `factor` x the base voice's pitch, its log-contour stretched 1.8x around the median (WORLD;
    measured p10-p90 range at least 1.4x the base voice's in octaves)."""
    clips, sr = base_clips

    def shifted(audio):
        f0, sp, ap = pitch.world_analysis(audio, sr, 5.0)
        voiced = f0 > 0
        median = np.median(f0[voiced])
        f0 = f0.copy()
        f0[voiced] = median * factor * (f0[voiced] / median) ** 1.8
        return _pyworld().synthesize(f0, sp, ap, sr, 5.0).astype(np.float32)

    targets = [shifted(a) for a in clips]
    track = np.concatenate([pitch.f0_track(a, sr) for a in targets])
    base_track = np.concatenate([pitch.f0_track(a, sr) for a in clips])
    spread = np.log2(np.percentile(track, 90) / np.percentile(track, 10))
    assert spread > 1.4 * np.log2(np.percentile(base_track, 90) / np.percentile(base_track, 10))
    fitted = pitch.median_f0(targets, sr) / pitch.median_f0(clips, sr)
    # Within 7% of the asked factor, inside the 10% the f0 check allows: re-tracking the stretched contour
    # reads ~3% high even at x1.0, and at x0.7 its lowest frames near pYIN's 50 Hz floor read high too.
    assert fitted == pytest.approx(factor, rel=0.07)
