"""Sentence and clause splitting, with espeak-ng's clause rules and abbreviation guards."""

from __future__ import annotations

import re
from typing import NamedTuple

CLAUSE_TERMINATORS = ",.!?;:"
"""Punctuation that ends a clause (espeak-ng's set for English; Piper keeps it as a phoneme)."""
SENTENCE_TERMINATORS = ".!?"
"""Clause terminators that also end a sentence."""

# A run of clause punctuation, then closing quotes/brackets, then whitespace or the end.
# Like espeak-ng, punctuation glued to the next character ("1,000", "3.5", "a:b") ends nothing.
_BOUNDARY = re.compile(r"([,.!?;:])[,.!?;:]*([\"'\u201d\u2019)\]}\u00bb]*)(?=\s|$)")
_WORD_BEFORE = re.compile(r"([A-Za-z][A-Za-z.]*)$")
_NEXT_CHAR = re.compile(r"\s*(\S)")

# Words whose trailing dot is not a sentence end even before a capital ("Dr. Smith").
# Lower-case next words need no list: espeak-ng (and so Piper) never ends a sentence there.
PROTECTED_ABBREVIATIONS = frozenset(
    {"dr", "mr", "mrs", "ms", "prof", "st", "mt", "ft", "rev", "gen", "col", "lt", "sgt",
     "capt", "gov", "sen", "rep", "hon", "vs", "e.g", "i.e", "cf", "approx", "vol", "fig"}
)


class Clause(NamedTuple):
    """A clause's text (without its terminator) and its terminator ("" at an open end)."""

    text: str
    terminator: str
    closing: str = ""
    """Closing quotes or brackets written after the terminator ('"stop."'); not spoken."""


def _is_boundary(text: str, match: re.Match[str]) -> bool:
    """Whether a punctuation run really ends a clause (the dot rules of espeak-ng, plus abbreviations)."""
    if match.group(1) != ".":
        return True
    after = _NEXT_CHAR.match(text, match.end())
    if after and not match.group(2) and after.group(1).islower():
        return False  # "etc. and", "U.S. is": espeak-ng reads on, so must we
    word = _WORD_BEFORE.search(text, 0, match.start())
    if word is None:
        return True
    token = word.group(1)
    if token.lower() in PROTECTED_ABBREVIATIONS:
        return after is None
    return True


def split_clauses(text: str) -> list[Clause]:
    """Split text into clauses at clause punctuation, keeping each clause's terminator."""
    clauses: list[Clause] = []
    start = 0
    for match in _BOUNDARY.finditer(text):
        if not _is_boundary(text, match):
            continue
        body = text[start:match.start()].strip()
        if body:
            clauses.append(Clause(body, match.group(1), match.group(2)))
        start = match.end()
    tail = text[start:].strip()
    if tail:
        clauses.append(Clause(tail, ""))
    return [c for c in clauses if c.text]


def join_clauses(clauses: list[Clause]) -> str:
    """Text of clauses put back together ("a, b.")."""
    return " ".join(f"{c.text}{c.terminator}{c.closing}" for c in clauses).strip()


def group_sentences(clauses: list[Clause]) -> list[list[Clause]]:
    """Group clauses into sentences: a sentence ends after . ! or ?."""
    sentences: list[list[Clause]] = []
    current: list[Clause] = []
    for clause in clauses:
        current.append(clause)
        if clause.terminator in SENTENCE_TERMINATORS:
            sentences.append(current)
            current = []
    if current:
        sentences.append(current)
    return sentences


def split_sentences(text: str) -> list[str]:
    """Split text into sentences; "Dr.", "e.g.", "3.5" and initials do not end one."""
    out = []
    for sentence in group_sentences(split_clauses(text)):
        out.append(join_clauses(sentence))
    return out


def split_words(text: str, max_chars: int) -> list[str]:
    """Split text at spaces into pieces of at most max_chars (words longer than that are cut)."""
    if max_chars < 1:
        raise ValueError(f"max_chars must be at least 1, got {max_chars}")
    pieces: list[str] = []
    current = ""
    for word in text.split():
        while len(word) > max_chars:
            if current:
                pieces.append(current)
                current = ""
            pieces.append(word[:max_chars])
            word = word[max_chars:]
        if not word:
            continue
        if current and len(current) + 1 + len(word) > max_chars:
            pieces.append(current)
            current = word
        else:
            current = f"{current} {word}" if current else word
    if current:
        pieces.append(current)
    return pieces
