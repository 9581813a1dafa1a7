"""Sentence and clause splitting, and long texts cut into utterances under the phoneme-id limit."""

from __future__ import annotations

import random
import time

import pytest

from chorus.engine.frontend import MAX_PHONEME_IDS, Clause, TextFrontEnd, split_clauses, split_sentences
from chorus.engine.frontend.sentences import split_words
from chorus.engine.voice import load_base_voice


@pytest.fixture(scope="module")
def front_end() -> TextFrontEnd:
    return TextFrontEnd(load_base_voice())


@pytest.mark.parametrize(
    ("text", "sentences"),
    [
        ("One. Two! Three? Four", ["One.", "Two!", "Three?", "Four"]),
        ("Dr. Smith paid 3.5 dollars. He left.", ["Dr. Smith paid 3.5 dollars.", "He left."]),
        ("Fruit, e.g. apples. Done.", ["Fruit, e.g. apples.", "Done."]),
        ("Mr. and Mrs. Smith met St. John.", ["Mr. and Mrs. Smith met St. John."]),
        ("J. Smith wrote it. The U.S. is big.", ["J.", "Smith wrote it.", "The U.S. is big."]),  # as espeak-ng
        ("Apples, pears, etc. and more. Next.", ["Apples, pears, etc. and more.", "Next."]),
        ("It cost 1,000 dollars at 3:45, then rose.", ["It cost 1,000 dollars at 3:45, then rose."]),
        ('He said "stop." Then he left.', ['He said "stop."', "Then he left."]),
        ("(See the notes.) Then go.", ["(See the notes.)", "Then go."]),
        ("Really?! Yes.", ["Really?", "Yes."]),
        ("", []),
    ],
)
def test_split_sentences(text: str, sentences: list[str]) -> None:
    assert split_sentences(text) == sentences


def test_split_clauses_keeps_terminators() -> None:
    assert split_clauses("Hello, world: one; two! Three") == [
        Clause("Hello", ","), Clause("world", ":"), Clause("one", ";"), Clause("two", "!"), Clause("Three", ""),
    ]


def test_split_words_respects_limit_and_cuts_giant_words() -> None:
    pieces = split_words("aa bb cc " + "x" * 25 + " dd", 10)
    assert all(len(p) <= 10 for p in pieces)
    assert "".join(pieces).replace(" ", "") == ("aabbcc" + "x" * 25 + "dd")


def test_long_sentence_is_cut_at_commas_first(front_end: TextFrontEnd) -> None:
    clause = "the quick brown fox jumps over the lazy dog again and again"
    text = ", ".join([clause] * 12) + "."
    utterances = front_end.utterances(text)
    assert len(utterances) > 1
    assert all(len(u.ids) <= MAX_PHONEME_IDS for u in utterances)
    assert all(u.text.endswith((",", ".")) for u in utterances)  # cut at clause ends, not inside
    assert sum(u.text.count("fox") for u in utterances) == 12


def test_sentence_without_punctuation_is_cut_at_words(front_end: TextFrontEnd) -> None:
    words = ["word%d" % (i % 10) for i in range(400)]
    utterances = front_end.utterances(" ".join(words).replace("0", "zero"))
    assert len(utterances) > 1
    assert all(len(u.ids) <= MAX_PHONEME_IDS for u in utterances)
    assert sum(len(u.text.split()) for u in utterances) >= 400


def test_max_ids_is_configurable(front_end: TextFrontEnd) -> None:
    small = TextFrontEnd(load_base_voice(), max_ids=60, phonemizer=front_end.phonemizer)
    utterances = small.utterances("The quick brown fox jumps over the lazy dog, and then it runs away.")
    assert len(utterances) > 1 and all(len(u.ids) <= 60 for u in utterances)
    with pytest.raises(ValueError, match="max_ids"):
        TextFrontEnd(load_base_voice(), max_ids=3)


def _long_text(chars: int, seed: int = 0) -> str:
    """Sentences of varied length, run-ons with commas, and a long stretch with no punctuation."""
    rng = random.Random(seed)
    words = ("the quick brown fox jumps over lazy dogs while seven tired wizards quietly read ancient "
             "books about Dr. Smith who paid $3.50 on 2026-11-26 at 3:45 pm").split()
    parts: list[str] = []
    while sum(len(p) + 1 for p in parts) < chars * 0.6:
        if rng.random() < 0.2:
            body = ", ".join(" ".join(rng.choices(words, k=rng.randint(5, 30))) for _ in range(6))
        else:
            body = " ".join(rng.choices(words, k=rng.randint(3, 40)))
        parts.append(body[0].upper() + body[1:] + rng.choice(".!?"))
    run_on = " ".join(rng.choices(words, k=chars // 5))
    return (" ".join(parts) + " " + run_on)[:chars]


def test_100k_characters_become_bounded_utterances_quickly(front_end: TextFrontEnd) -> None:
    text = _long_text(100_000)
    assert len(text) == 100_000
    start = time.perf_counter()
    utterances = front_end.utterances(text)
    elapsed = time.perf_counter() - start
    assert len(utterances) > 300
    assert max(len(u.ids) for u in utterances) <= MAX_PHONEME_IDS
    assert all(u.ids[0] == 1 and u.ids[-1] == 2 and len(u.ids) > 3 for u in utterances)
    # Every word of the normalised text is in some utterance (nothing lost at the cuts).
    from chorus.engine.frontend import normalize_text

    expected = len(normalize_text(text).split())
    assert sum(len(u.text.split()) for u in utterances) == expected
    # espeak-ng costs ~0.2-0.3 ms of CPU per word; the bound leaves room for a loaded 2-core machine.
    assert elapsed < 90, f"100k characters took {elapsed:.1f} s"
