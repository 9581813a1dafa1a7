"""Common English abbreviations, expanded by context (St. = Saint or Street, Dr. = Doctor or Drive)."""

from __future__ import annotations

import re

# Titles come before a name: their dot never ends the sentence.
TITLES = {"Mr": "Mister", "Mrs": "Missus", "Ms": "Miz", "Prof": "Professor", "Rev": "Reverend",
          "Gen": "General", "Capt": "Captain", "Sgt": "Sergeant", "Lt": "Lieutenant", "Col": "Colonel",
          "Gov": "Governor", "Sen": "Senator", "Mt": "Mount", "Ft": "Fort", "Hon": "Honorable"}
# Others may end a sentence: their dot is kept when a capitalised word or the end follows.
WORDS = {"etc": "et cetera", "approx": "approximately", "jr": "Junior", "sr": "Senior",
         "inc": "Incorporated", "ltd": "Limited", "corp": "Corporation", "ave": "Avenue",
         "blvd": "Boulevard", "rd": "Road", "dept": "Department"}
# Never at a sentence end: their dot always goes.
INLINE = {"e.g": "for example", "i.e": "that is", "vs": "versus", "cf": "compare", "viz": "namely"}
# Title before a name, place word after one.
PERSON_OR_PLACE = {"St": ("Saint", "Street"), "Dr": ("Doctor", "Drive")}

_TITLE_RE = re.compile(r"\b(" + "|".join(TITLES) + r")(?:\.|(?=\s+[A-Z]))")
_WORD_RE = re.compile(r"(?<![\w.])(" + "|".join(WORDS) + r")\.", re.IGNORECASE)
_INLINE_RE = re.compile(r"(?<![\w.])(" + "|".join(re.escape(w) for w in INLINE) + r")\.(?:\s*,)?",
                        re.IGNORECASE)
_PERSON_OR_PLACE_RE = re.compile(r"\b(St|Dr)\b(\.?)")
_NUMBER_RE = re.compile(r"\b(?:No|no|Nos|nos)\.\s?(?=\d)")
_PREVIOUS_WORD = re.compile(r"(^|[.!?]\s+|\S\s+)([A-Z][A-Za-z']*|\d+(?:st|nd|rd|th)?)\s+$")
_SENTENCE_END_AFTER = re.compile(r"\s*$|\s+[A-Z]")


def _person_or_place(match: re.Match[str]) -> str:
    """St./Dr. after a name or number is Street/Drive ("Main St."); before a name, Saint/Doctor."""
    person, place = PERSON_OR_PLACE[match.group(1)]
    text, dotted = match.string, bool(match.group(2))
    after = text[match.end():]
    previous = _PREVIOUS_WORD.search(text, max(0, match.start() - 60), match.start())
    # After a number, or after a capitalised word that does not start the sentence: a place.
    after_name = previous is not None and (
        previous.group(2)[0].isdigit() or (previous.group(1) != "" and previous.group(1)[0] not in ".!?"))
    next_is_name = re.match(r"\s+[A-Z]", after) is not None
    if next_is_name and not after_name:
        return person
    if not dotted and not after_name:
        return match.group(0)  # a bare "St"/"Dr" that names nothing: leave it
    ends = dotted and (not after.strip() or next_is_name)
    return f"{place}." if ends else place


def _word(match: re.Match[str]) -> str:
    """Expand a sentence-capable abbreviation, keeping its dot where the sentence ends."""
    words = WORDS[match.group(1).lower()]
    return f"{words}." if _SENTENCE_END_AFTER.match(match.string, match.end()) else words


def expand_abbreviations(text: str) -> str:
    """Expand common abbreviations (Dr., Mr., Mrs., Ms., St., e.g., i.e., etc., vs., No. 5)."""
    text = _NUMBER_RE.sub("number ", text)
    text = _PERSON_OR_PLACE_RE.sub(_person_or_place, text)
    text = _TITLE_RE.sub(lambda m: TITLES[m.group(1)], text)
    text = _INLINE_RE.sub(lambda m: INLINE[m.group(1).lower()] + ("," if m.group(0).endswith(",") else ""), text)
    return _WORD_RE.sub(_word, text)
