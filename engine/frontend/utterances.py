"""The text front end: normalise, split, phonemize and map to ids, one utterance per model call."""

from __future__ import annotations

import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .ids import IdMap, phonemes_to_ids, split_phonemes
from .normalize import normalize_text
from .phonemize import Phonemizer, join_clause_phonemes
from .sentences import Clause, group_sentences, join_clauses, split_clauses, split_words

MAX_PHONEME_IDS = 400
"""Longest utterance in phoneme ids (~200 phonemes, ~12-15 s of speech).

Piper synthesises a sentence per call. The text encoder's self-attention is O(T^2) in time and
memory, the decoder's memory grows with the audio length, and the voice was trained on
sentence-sized clips: far longer inputs cost more per phoneme and drift out of what it learned.
400 ids covers nearly all ordinary sentences whole, so only run-on ones are cut, and keeps the
first audio of a long text (streaming) under a second of compute.
"""
MIN_PHONEME_IDS = 16
_PUNCTUATION = frozenset(",.!?;: ")


@dataclass(frozen=True)
class Utterance:
    """One model input: its text, its phonemes (as Piper writes them) and their ids."""

    text: str
    phonemes: str
    ids: list[int]


def _speakable(phonemes: str) -> bool:
    """Whether phonemes hold anything besides punctuation and spaces."""
    return any(ch not in _PUNCTUATION for ch in phonemes)


def _cost(phonemes: str, terminator: str) -> int:
    """Symbols a clause adds to an utterance (its phonemes, terminator and a space)."""
    return len(split_phonemes(phonemes)) + len(terminator) + 1


class TextFrontEnd:
    """Text to utterances for a Piper voice: a voice config (phoneme_id_map, espeak_voice) or an id map."""

    def __init__(
        self,
        voice: Any,
        *,
        max_ids: int = MAX_PHONEME_IDS,
        normalize: bool = True,
        phonemizer: Phonemizer | None = None,
    ):
        """Build the front end; the espeak-ng program is looked for now (EspeakNotFoundError if absent)."""
        if isinstance(voice, Mapping):
            id_map, espeak_voice = voice, "en-us"
        else:
            id_map, espeak_voice = voice.phoneme_id_map, voice.espeak_voice
        if max_ids < MIN_PHONEME_IDS:
            raise ValueError(f"max_ids must be at least {MIN_PHONEME_IDS}, got {max_ids}")
        self.id_map: IdMap = id_map
        self.max_ids = max_ids
        self.normalize = normalize
        self.phonemizer = phonemizer or Phonemizer(voice=espeak_voice)

    def utterances(self, text: str) -> list[Utterance]:
        """Normalise text, split it into sentences (long ones into chunks) and phonemize all at once."""
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, got {type(text).__name__}")
        if not text.strip():
            raise ValueError("text is empty or only whitespace: there is nothing to synthesise")
        prepared = normalize_text(text) if self.normalize else unicodedata.normalize("NFC", text)
        clauses = self._presplit(split_clauses(prepared))
        phonemes = self.phonemizer.phonemize_clauses(clauses)
        out: list[Utterance] = []
        position = 0
        for sentence in group_sentences(clauses):
            parts = phonemes[position:position + len(sentence)]
            position += len(sentence)
            for chunk in self._chunks(sentence, parts):
                out.append(self._utterance(chunk))
        if not out:
            raise ValueError(f"text has nothing speakable (no words after normalisation): {text[:80]!r}")
        return out

    def _presplit(self, clauses: list[Clause]) -> list[Clause]:
        """Cut clauses too long for one utterance at words before phonemizing (English IPA runs
        about one symbol per letter), so long texts are phonemized once; rare misses are cut later."""
        max_chars = max(8, self._budget() * 3 // 4)
        out: list[Clause] = []
        for clause in clauses:
            if len(clause.text) <= max_chars:
                out.append(clause)
                continue
            pieces = split_words(clause.text, max_chars)
            out.extend(Clause(piece, "") for piece in pieces[:-1])
            out.append(Clause(pieces[-1], clause.terminator, clause.closing))
        return out

    def _utterance(self, chunk: Sequence[tuple[Clause, str]]) -> Utterance:
        """Build one utterance from (clause, phonemes) pairs."""
        clauses = [c for c, _ in chunk]
        phonemes = join_clause_phonemes(clauses, [p for _, p in chunk])
        return Utterance(join_clauses(clauses), phonemes, phonemes_to_ids(phonemes, self.id_map))

    def _budget(self) -> int:
        """Most phoneme symbols that fit: ^ _ then two ids per symbol, then $."""
        return (self.max_ids - 3) // 2

    def _chunks(self, sentence: list[Clause], parts: list[str]) -> list[list[tuple[Clause, str]]]:
        """Cut a sentence into runs of clauses under the id limit (too long clauses cut at words)."""
        budget = self._budget()
        fitted: list[tuple[Clause, str]] = []
        for clause, ph in zip(sentence, parts):
            if not _speakable(ph):
                continue
            if _cost(ph, clause.terminator) > budget:
                fitted.extend(self._split_clause(clause))
            else:
                fitted.append((clause, ph))
        chunks: list[list[tuple[Clause, str]]] = []
        current: list[tuple[Clause, str]] = []
        used = 0
        for clause, ph in fitted:
            cost = _cost(ph, clause.terminator)
            if current and used + cost > budget:
                chunks.append(current)
                current, used = [], 0
            current.append((clause, ph))
            used += cost
        if current:
            chunks.append(current)
        return chunks

    def _split_clause(self, clause: Clause) -> list[tuple[Clause, str]]:
        """Halve a clause at word boundaries until each piece fits (the last keeps the terminator)."""
        words = clause.text.split()
        if len(words) >= 2:
            half = len(words) // 2
            head, tail = " ".join(words[:half]), " ".join(words[half:])
        elif len(clause.text) >= 2:  # one enormous "word": cut it by characters
            half = len(clause.text) // 2
            head, tail = clause.text[:half], clause.text[half:]
        else:
            return []
        pieces = [Clause(head, ""), Clause(tail, clause.terminator, clause.closing)]
        out: list[tuple[Clause, str]] = []
        for piece, ph in zip(pieces, self.phonemizer.phonemize_clauses(pieces)):
            if not _speakable(ph):
                continue
            if _cost(ph, piece.terminator) > self._budget():
                out.extend(self._split_clause(piece))
            else:
                out.append((piece, ph))
        return out
