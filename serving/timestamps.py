"""Word timestamps from the durations the model already computes: each word's start and end in the audio.

An utterance's ids are `^ _` then each phoneme symbol followed by `_`, then `$` (chorus.engine.frontend.ids),
and the text graph gives every id a whole number of latent frames (256 samples each). A word is a run
of phoneme symbols between spaces and punctuation; it starts where its first symbol's frames start
and ends where its last symbol's pad ends. So the times are exact against the model's audio (to one
sample) by construction; the profile's time scale (resampling voices run faster) is applied on top.
Words are matched to the utterance's (normalised) text word for word; when espeak-ng merged or split
words so the counts differ, text words are spread over the phoneme words by position.
"""

from __future__ import annotations

import unicodedata

import numpy as np
from pydantic import BaseModel

from chorus.engine.frontend.ids import split_phonemes

_BREAKS = frozenset(" ,.!?;:")
_STRIP = ".,!?;:\"'()[]{}“”‘’«»"


class WordTime(BaseModel):
    """One spoken word and its time span in the response's audio (seconds)."""

    word: str
    start: float
    end: float


def _phoneme_words(phonemes: str) -> list[tuple[int, int]]:
    """(first, last) symbol index of each word in the utterance's symbol list."""
    spans, first = [], None
    symbols = split_phonemes(phonemes)
    for i, symbol in enumerate(symbols):
        if symbol in _BREAKS:
            if first is not None:
                spans.append((first, i - 1))
                first = None
        elif first is None:
            first = i
    if first is not None:
        spans.append((first, len(symbols) - 1))
    return spans


def _text_words(text: str) -> list[str]:
    words = [w.strip(_STRIP) for w in unicodedata.normalize("NFC", text).split()]
    return [w for w in words if w]


def word_times(text: str, phonemes: str, durations: np.ndarray, hop_seconds: float, offset: float = 0.0,
               time_scale: float = 1.0) -> list[WordTime]:
    """Word spans of one utterance whose ids lasted `durations` frames, shifted by `offset` seconds.

    `hop_seconds` is one frame's duration in the model's audio; `time_scale` maps model-domain time
    to output time (1 / resample factor for voices that resample). Falls back to one span for the
    whole utterance when the ids do not follow the symbol layout (an unknown symbol was dropped).
    """
    durations = np.asarray(durations, dtype=np.int64)
    symbols = split_phonemes(phonemes)
    ends = np.cumsum(durations)
    starts = ends - durations
    words = _text_words(text)
    spans = _phoneme_words(phonemes)

    def at(frame: int) -> float:
        return round(offset + frame * hop_seconds * time_scale, 4)

    if len(durations) != 2 * len(symbols) + 3 or not spans or not words:
        return [WordTime(word=text.strip(), start=at(int(starts[0]) if len(starts) else 0),
                         end=at(int(ends[-1]) if len(ends) else 0))] if text.strip() else []
    # symbol i sits at id 2 + 2i, its pad at 2 + 2i + 1
    frames = [(int(starts[2 + 2 * a]), int(ends[3 + 2 * b])) for a, b in spans]
    if len(words) == len(frames):
        return [WordTime(word=w, start=at(s), end=at(e)) for w, (s, e) in zip(words, frames)]
    sizes = [b - a + 1 for a, b in spans]
    out = []
    for (w0, w1), (p0, p1) in _align([len(w) for w in words], sizes):
        lo, hi = frames[p0][0], frames[p1 - 1][1]
        letters = [len(w) for w in words[w0:w1]]
        edges = np.round(lo + (hi - lo) * np.cumsum([0, *letters]) / max(1, sum(letters))).astype(int)
        out.extend(WordTime(word=w, start=at(int(a)), end=at(int(b)))
                   for w, a, b in zip(words[w0:w1], edges[:-1], edges[1:]))
    return out


_STEPS = ((1, 1, 0.0), (2, 1, 0.3), (1, 2, 0.3), (3, 1, 0.6), (1, 3, 0.6))
"""(text words, phoneme words, penalty) groupings the alignment may use: espeak-ng joins short words
("of the" -> ʌvðə) and may split long ones."""


def _align(letters: list[int], symbols: list[int]) -> list[tuple[tuple[int, int], tuple[int, int]]]:
    """Monotone grouping of text words with phoneme words, matching lengths (letters ~ symbols)."""
    n, m = len(letters), len(symbols)
    inf = float("inf")
    cost = np.full((n + 1, m + 1), inf)
    back: dict[tuple[int, int], tuple[int, int]] = {}
    cost[0, 0] = 0.0
    for i in range(n + 1):
        for j in range(m + 1):
            if cost[i, j] == inf:
                continue
            for di, dj, penalty in _STEPS:
                a, b = i + di, j + dj
                if a > n or b > m:
                    continue
                c = cost[i, j] + penalty + abs(np.log((sum(letters[i:a]) + 1) / (sum(symbols[j:b]) + 1)))
                if c < cost[a, b]:
                    cost[a, b] = c
                    back[a, b] = (i, j)
    if cost[n, m] == inf:  # counts too far apart for the steps: one group for everything
        return [((0, n), (0, m))]
    groups, at = [], (n, m)
    while at != (0, 0):
        prev = back[at]
        groups.append(((prev[0], at[0]), (prev[1], at[1])))
        at = prev
    return groups[::-1]
