"""serving.timestamps: each word's span is exactly the frames of its phoneme symbols (and their pads), on real
front-end output with synthetic durations; offset and time scale apply; espeak-ng's merged words still give
one span per text word; ids off the symbol layout fall back to one span."""

from __future__ import annotations

import numpy as np
import pytest

from chorus.engine.frontend import TextFrontEnd, phonemes_to_ids, split_phonemes
from chorus.serving.timestamps import word_times

HOP = 0.01  # seconds per frame: frames read straight off the expected times
BREAKS = set(" ,.!?;:")
SENTENCES = [
    "Hello, world!",
    "I'll go to New York at 5:30 pm.",
    "It's 2024 and Mr. O'Neil's car (red) costs $5.50!",
    "The U.S.A. is big; e.g. Texas.",
]


@pytest.fixture(scope="module")
def frontend(voice) -> TextFrontEnd:
    return TextFrontEnd(voice)


def _utterance(frontend, text):
    (utterance,) = frontend.utterances(text)
    return utterance


def _layout_durations(ids: list[int]) -> np.ndarray:
    """^ lasts 3 frames, the pad after it 5, each symbol 2 and each pad after a symbol 1, $ 7.

    So symbol i covers frames [8 + 3i, 10 + 3i) and its pad [10 + 3i, 11 + 3i): a word of symbols a..b
    spans [8 + 3a, 11 + 3b), and a pad/symbol mix-up by the code under test moves a boundary by a frame.
    """
    n = (len(ids) - 3) // 2
    return np.array([3, 5, *([2, 1] * n), 7])


def _spans(words):
    return [(w.word, w.start, w.end) for w in words]


def test_word_spans_by_hand(frontend):
    u = _utterance(frontend, "Hello, world!")
    assert u.phonemes == "həlˈoʊ, wˈɜːld!"  # h ə l ˈ o ʊ , ␣ w ˈ ɜ ː l d !: symbols 0-5 and 8-13
    words = word_times(u.text, u.phonemes, _layout_durations(u.ids), HOP)
    assert _spans(words) == [("Hello", 0.08, 0.26), ("world", 0.32, 0.50)]


def test_merged_phoneme_word_is_split_between_its_text_words_in_order(frontend):
    """espeak-ng writes "of the" as one word (ʌvðə): its span is shared by letters, "of" first."""
    u = _utterance(frontend, "a test of the streaming voice")
    assert u.phonemes == "ɐ tˈɛst ʌvðə stɹˈiːmɪŋ vˈɔɪs"  # ɐ 0 | t-t 2-6 | ʌ-ə 8-11 | s-ŋ 13-21 | v-s 23-27
    words = word_times(u.text, u.phonemes, _layout_durations(u.ids), HOP)
    # ʌvðə spans frames [32, 44): "of" gets 2/5 of it (32 + 4.8, rounded), "the" the rest
    assert _spans(words) == [("a", 0.08, 0.11), ("test", 0.14, 0.29), ("of", 0.32, 0.37), ("the", 0.37, 0.44),
                             ("streaming", 0.47, 0.74), ("voice", 0.77, 0.92)]


def _expected_frames(phonemes: str, durations: np.ndarray) -> list[tuple[int, int]]:
    """Frames of each phoneme word: from its first symbol's start to its last symbol's pad's end."""
    bounds = np.concatenate([[0], np.cumsum(durations)])
    out, first = [], None
    symbols = split_phonemes(phonemes)
    for i, symbol in enumerate([*symbols, " "]):
        if symbol in BREAKS and first is not None:
            out.append((int(bounds[2 + 2 * first]), int(bounds[2 + 2 * (i - 1) + 2])))
            first = None
        elif symbol not in BREAKS and first is None:
            first = i
    return out


@pytest.mark.parametrize("text", SENTENCES)
def test_each_word_spans_exactly_its_symbols_frames(frontend, text):
    u = _utterance(frontend, text)
    durations = np.random.default_rng(len(text)).integers(1, 9, size=len(u.ids))
    words = word_times(u.text, u.phonemes, durations, HOP)
    expected = _expected_frames(u.phonemes, durations)
    assert [w.word for w in words] == [w.strip(".,!?;:()'") for w in u.text.split()]
    assert len(words) == len(expected)  # these sentences keep espeak-ng's words one to one
    assert [(w.start, w.end) for w in words] == [(round(a * HOP, 4), round(b * HOP, 4)) for a, b in expected]
    assert all(w.start < w.end for w in words)
    assert all(a.end <= b.start for a, b in zip(words, words[1:]))  # in order, never overlapping
    assert words[-1].end <= durations.sum() * HOP


def test_offset_and_time_scale(frontend):
    u = _utterance(frontend, "Hello, world!")
    durations = _layout_durations(u.ids)
    plain = word_times(u.text, u.phonemes, durations, HOP)
    shifted = word_times(u.text, u.phonemes, durations, HOP, offset=2.5)
    scaled = word_times(u.text, u.phonemes, durations, HOP, offset=2.5, time_scale=0.5)
    assert _spans(shifted) == [("Hello", 2.58, 2.76), ("world", 2.82, 3.0)]
    # model time is scaled (a voice resampled to run faster); the offset is already output time
    assert _spans(scaled) == [("Hello", 2.54, 2.63), ("world", 2.66, 2.75)]
    assert [w.word for w in plain] == [w.word for w in scaled]
    # the same for the merged-words path
    u = _utterance(frontend, "a test of the streaming voice")
    merged = word_times(u.text, u.phonemes, _layout_durations(u.ids), HOP, offset=1.0, time_scale=2.0)
    assert [(w.word, w.start, w.end) for w in merged][2:4] == [("of", 1.64, 1.74), ("the", 1.74, 1.88)]


def test_ids_off_the_symbol_layout_fall_back_to_one_span(frontend, voice):
    u = _utterance(frontend, "Hello, world!")
    phonemes = u.phonemes.replace("w", "Ωw")  # Ω is not in the voice's id map: the ids drop it
    assert "Ω" not in voice.phoneme_id_map
    ids = phonemes_to_ids(phonemes, voice.phoneme_id_map)
    assert ids == u.ids
    durations = _layout_durations(ids)
    words = word_times(u.text, phonemes, durations, HOP, offset=1.0)
    assert _spans(words) == [("Hello, world!", 1.0, round(1.0 + durations.sum() * HOP, 4))]
    # durations that do not match the ids at all fall back the same way
    assert len(word_times(u.text, u.phonemes, durations[:-1], HOP)) == 1


def test_nothing_to_time():
    assert word_times("   ", "", np.array([3, 5, 7]), HOP) == []
    # punctuation only: no phoneme words, so one span for the whole text
    (only,) = word_times("...", "...", np.array([3, 5, 2, 1, 2, 1, 2, 1, 7]), HOP)
    assert (only.word, only.start, only.end) == ("...", 0.0, 0.24)
