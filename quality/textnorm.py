"""English text normaliser for WER: both reference and transcript go through the same steps.

Whisper writes digits ("42", "$5", "3:30", "1st"), a TTS reference often spells them out, so every
number is turned into words on both sides; case, punctuation and hyphens are dropped, and a few
abbreviations Whisper likes are expanded.
"""

from __future__ import annotations

import re
import unicodedata

_ONES = ("zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
         "fifteen sixteen seventeen eighteen nineteen").split()
_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()
_SCALES = ((10**12, "trillion"), (10**9, "billion"), (10**6, "million"), (1000, "thousand"), (100, "hundred"))
_ORDINAL_WORDS = {"one": "first", "two": "second", "three": "third", "five": "fifth", "eight": "eighth",
                  "nine": "ninth", "twelve": "twelfth"}
_ABBREVIATIONS = {"mr": "mister", "mrs": "missus", "dr": "doctor", "vs": "versus", "etc": "et cetera",
                  "ok": "okay", "st": "saint"}
_CURRENCY = {"$": "dollars", "£": "pounds", "€": "euros"}


def number_to_words(n: int) -> str:
    """Spell a non-negative integer in English words, without 'and' (e.g. 105 -> 'one hundred five')."""
    if n < 0:
        return "minus " + number_to_words(-n)
    if n < 20:
        return _ONES[n]
    if n < 100:
        tens, rest = divmod(n, 10)
        return _TENS[tens] + ("" if rest == 0 else " " + _ONES[rest])
    for value, name in _SCALES:
        if n >= value:
            head, rest = divmod(n, value)
            words = number_to_words(head) + " " + name
            return words if rest == 0 else words + " " + number_to_words(rest)
    raise AssertionError(n)  # unreachable: scales cover every n >= 100


def ordinal_to_words(n: int) -> str:
    """Spell an ordinal (21 -> 'twenty first')."""
    words = number_to_words(n).split()
    last = words[-1]
    if last in _ORDINAL_WORDS:
        words[-1] = _ORDINAL_WORDS[last]
    elif last.endswith("y"):
        words[-1] = last[:-1] + "ieth"
    else:
        words[-1] = last + "th"
    return " ".join(words)


def _decimal(match: re.Match) -> str:
    whole, frac = match.group(1).replace(",", ""), match.group(2)
    return number_to_words(int(whole)) + " point " + " ".join(_ONES[int(d)] for d in frac)


def _integer(match: re.Match) -> str:
    return " " + number_to_words(int(match.group(0).replace(",", ""))) + " "


def _currency(match: re.Match) -> str:
    symbol, amount = match.group(1), match.group(2).replace(",", "")
    whole, _, cents = amount.partition(".")
    if len(cents) == 2:  # $5.50 -> five dollars fifty cents
        return f" {whole} {_CURRENCY[symbol]} {int(cents)} cents "
    return f" {amount} {_CURRENCY[symbol]} "


def _time(match: re.Match) -> str:
    hours, minutes = int(match.group(1)), int(match.group(2))
    if minutes == 0:
        return f" {number_to_words(hours)} o'clock "
    spoken = number_to_words(minutes) if minutes >= 10 else "oh " + number_to_words(minutes)
    return f" {number_to_words(hours)} {spoken} "


def normalize_for_wer(text: str) -> str:
    """Lowercase, spell numbers, drop punctuation: the canonical form both WER sides are compared in."""
    s = unicodedata.normalize("NFKC", text).lower()
    s = s.replace("’", "'").replace("‘", "'")
    s = s.replace("&", " and ").replace("%", " percent ")
    s = re.sub(r"(\d+)(?:st|nd|rd|th)\b", lambda m: " " + ordinal_to_words(int(m.group(1))) + " ", s)
    s = re.sub(r"([$£€])\s?(\d[\d,]*(?:\.\d+)?)", _currency, s)
    s = re.sub(r"\b(\d{1,2}):(\d{2})\b", _time, s)
    s = re.sub(r"(\d[\d,]*)\.(\d+)", _decimal, s)
    s = re.sub(r"\d{1,3}(?:,\d{3})+|\d+", _integer, s)
    s = s.replace("hundred and ", "hundred ").replace("thousand and ", "thousand ")
    s = re.sub(r"[-–—/]", " ", s)
    s = re.sub(r"[^\w\s']", " ", s)
    s = re.sub(r"(?<!\w)'|'(?!\w)", " ", s)  # quotes, keep apostrophes inside words (don't)
    words = [_ABBREVIATIONS.get(w, w) for w in s.split()]
    return " ".join(words)
