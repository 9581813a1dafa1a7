"""Phonemes from the espeak-ng program and Piper-style phoneme ids; bad input and a missing espeak-ng."""

from __future__ import annotations

import logging
import os

import pytest

from chorus.engine.frontend import (
    ESPEAK_PACKAGE,
    EspeakNotFoundError,
    Phonemizer,
    TextFrontEnd,
    phonemes_to_ids,
)
from chorus.engine.voice import load_base_voice


@pytest.fixture(scope="module")
def id_map() -> dict[str, list[int]]:
    return load_base_voice().phoneme_id_map


@pytest.fixture(scope="module")
def front_end() -> TextFrontEnd:
    return TextFrontEnd(load_base_voice())


def test_ids_are_bos_pad_then_phoneme_pad_pairs_then_eos(id_map: dict[str, list[int]]) -> None:
    ids = phonemes_to_ids("həlˈoʊ, wˈɜːld!", id_map)
    symbols = list("həlˈoʊ, wˈɜːld!")
    assert ids[:2] == [*id_map["^"], *id_map["_"]] and ids[-1] == id_map["$"][0]
    assert ids[2:-1:2] == [id_map[s][0] for s in symbols]
    assert set(ids[3:-1:2]) == {id_map["_"][0]}
    assert len(ids) == 2 * len(symbols) + 3


def test_accented_symbols_are_decomposed_as_piper_does(id_map: dict[str, list[int]]) -> None:
    # Piper splits phonemes into NFD codepoints: "ç" is "c" + combining cedilla, not the map's "ç".
    assert phonemes_to_ids("ç", id_map) == [1, 0, id_map["c"][0], 0, id_map["\u0327"][0], 0, 2]


def test_unknown_symbol_is_dropped_with_a_warning(id_map: dict[str, list[int]], caplog) -> None:
    with caplog.at_level(logging.WARNING, logger="chorus.engine.frontend.ids"):
        ids = phonemes_to_ids("aЖb\u263a", id_map)
    assert ids == phonemes_to_ids("ab", id_map)
    assert "'Ж'" in caplog.text and "U+263A" in caplog.text


def test_id_map_without_piper_symbols_is_refused() -> None:
    with pytest.raises(ValueError, match="'\\^'"):
        phonemes_to_ids("a", {"a": [5], "_": [0], "$": [2]})


def test_phonemize_keeps_clause_punctuation_like_piper() -> None:
    phonemizer = Phonemizer()
    assert phonemizer.phonemize("Hello, world!") == "həlˈoʊ, wˈɜːld!"
    # As Piper: a clause-initial "one" keeps its secondary stress.
    assert phonemizer.phonemize("One; two: three") == "wˌʌn; tˈuː: θɹˈiː"
    # espeak-ng 1.52's palatal glide and o@ spelling, which the 1.51 program writes differently.
    assert phonemizer.phonemize("The end of the story.") == "ðɪʲ ˈɛnd ʌvðə stˈɔːɹi."


def test_phonemize_many_uses_one_process_per_call() -> None:
    phonemizer = Phonemizer()
    sentences = [f"Sentence number {n} is here." for n in ("one", "two", "three")] * 20
    assert phonemizer.phonemize_many(sentences) == [phonemizer.phonemize(s) for s in sentences[:3]] * 20


def test_missing_espeak_names_the_package(monkeypatch, tmp_path) -> None:
    with pytest.raises(EspeakNotFoundError, match=f"apt-get install {ESPEAK_PACKAGE}"):
        Phonemizer(program="espeak-ng-is-not-here")
    monkeypatch.setenv("PATH", str(tmp_path))  # a PATH without espeak-ng, as on a bare machine
    with pytest.raises(EspeakNotFoundError, match="espeak-ng"):
        TextFrontEnd(load_base_voice())
    assert os.environ["PATH"] == str(tmp_path)


def test_bad_espeak_voice_name_is_refused() -> None:
    with pytest.raises(ValueError, match="not a valid voice"):
        Phonemizer(voice="en-us; rm -rf /")


@pytest.mark.parametrize("text", ["", "   ", "\n\t "])
def test_empty_text_is_a_clear_error(front_end: TextFrontEnd, text: str) -> None:
    with pytest.raises(ValueError, match="empty"):
        front_end.utterances(text)


@pytest.mark.parametrize("text", ["...", "!?!", " - , ; ", '"()"'])
def test_unspeakable_text_is_a_clear_error(front_end: TextFrontEnd, text: str) -> None:
    with pytest.raises(ValueError, match="nothing speakable"):
        front_end.utterances(text)


def test_non_string_text_is_refused(front_end: TextFrontEnd) -> None:
    with pytest.raises(TypeError, match="str"):
        front_end.utterances(b"bytes")  # type: ignore[arg-type]


def test_utterances_from_voice_or_id_map_agree(front_end: TextFrontEnd, id_map: dict[str, list[int]]) -> None:
    text = "Dr. Smith paid $3.50 on Nov. 26. Was it worth it?"
    from_voice = front_end.utterances(text)
    from_map = TextFrontEnd(id_map).utterances(text)
    assert from_voice == from_map
    assert [u.text for u in from_voice] == [
        "Doctor Smith paid three dollars and fifty cents on November twenty-sixth.", "Was it worth it?"]
    assert from_voice[-1].phonemes.endswith("?")


def test_long_lived_process_matches_one_shot_runs_and_recovers() -> None:
    from chorus.engine.frontend.espeak import SENTINEL

    lines = [
        "Hello there, friend.",
        "Dr. Smith met J. Jones. Then they left.",  # espeak-ng reads this line as three clauses
        SENTINEL,  # the end-of-batch marker itself, as user text
        "The end of the story.",
    ] * 5
    persistent, oneshot = Phonemizer(persistent=True), Phonemizer(persistent=False)
    assert persistent.phonemize_many(lines) == oneshot.phonemize_many(lines)
    assert persistent.phonemize("Still working?") == oneshot.phonemize("Still working?")
    process = persistent.runner._process
    assert process is not None and process.poll() is None
    persistent.close()
    assert process.poll() is not None
    assert persistent.phonemize("Hello.") == "həlˈoʊ."  # starts a new one
    persistent.close()


def test_forked_child_gets_its_own_espeak_process() -> None:
    phonemizer = Phonemizer()
    expected = phonemizer.phonemize("Hello, world!")
    parent_process = phonemizer.runner._process
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: use the inherited phonemizer, report whether it matched, exit at once
        try:
            ok = phonemizer.phonemize("Hello, world!") == expected and phonemizer.runner._process is not parent_process
            phonemizer.close()
            os.write(write_end, b"1" if ok else b"0")
        finally:
            os._exit(0)
    os.close(write_end)
    child_ok = os.read(read_end, 1)
    os.waitpid(pid, 0)
    assert child_ok == b"1"
    assert parent_process.poll() is None and phonemizer.phonemize("Hello, world!") == expected
    phonemizer.close()
