"""The Speaker's decoder windows (chorus.serving.speaker): small while the listener has nothing, then as large as
the decoder's measured speed allows within the audio the listener has buffered; a short tail joins its window."""

from __future__ import annotations

import threading

import pytest

from chorus.serving.speaker import WINDOW_SAFETY, Speaker


def _speaker(first: int = 24) -> Speaker:
    speaker = Speaker.__new__(Speaker)  # the window policy only: no model
    speaker.first_window, speaker._frame_s, speaker._speed_lock = first, None, threading.Lock()
    return speaker


def test_first_window_until_speed_and_audio_are_known():
    speaker = _speaker()
    assert speaker._window_end(0, 600, buffered_s=0.0) == 24
    assert speaker._window_end(0, 600, buffered_s=1.0) == 24  # decoder speed not measured yet
    speaker._measure(24, 0.024)  # 1 ms per frame
    assert speaker._window_end(24, 600, buffered_s=0.0) == 48  # nothing buffered: the small window again
    assert speaker._window_end(24, 600, buffered_s=-0.5) == 48  # the listener already ran dry


def test_window_takes_its_share_of_the_buffered_audio():
    speaker = _speaker()
    speaker._measure(100, 0.1)  # 1 ms per frame
    end = speaker._window_end(24, 10_000, buffered_s=0.5)
    assert end - 24 == int(WINDOW_SAFETY * 0.5 / 0.001)
    slower = _speaker()
    slower._measure(100, 0.4)  # a loaded machine: 4 ms per frame -> a quarter of the window
    assert slower._window_end(24, 10_000, buffered_s=0.5) - 24 == pytest.approx((end - 24) / 4, abs=1)
    assert speaker._window_end(24, 600, buffered_s=10.0) == 600  # enough buffered: the rest at once
    assert speaker._window_end(24, 300 + 24 + 10, buffered_s=0.5) == 334  # a tail under 24 frames joins


def test_speed_is_a_moving_average():
    speaker = _speaker()
    speaker._measure(10, 0.01)
    speaker._measure(10, 0.03)
    assert speaker._frame_s == pytest.approx(0.7 * 0.001 + 0.3 * 0.003)
