"""IPA phonemes from Debian's espeak-ng program, run as a separate process (GPL-3.0 stays out of ours)."""

from __future__ import annotations

import re
import shutil
from collections.abc import Sequence

from .espeak import EspeakRunner
from .sentences import Clause, split_clauses, split_words

ESPEAK_PROGRAM = "espeak-ng"
ESPEAK_PACKAGE = "espeak-ng"
"""The Debian/Ubuntu package that provides the program."""

MAX_LINE_CHARS = 300
"""Longest clause sent as one line: espeak-ng cuts lines near 800 characters into clauses itself."""

# espeak-ng marks words read in another language: "(fr)kafe(en)"; Piper removes the marks.
_LANGUAGE_SWITCH = re.compile(r"\([^)]+\)")
SEPARATOR = "_"
"""Phoneme separator asked of espeak-ng: it shows the phonemes that have no IPA symbol in 1.51."""
SPEED = "440"
"""Words per minute asked of espeak-ng: phonemes do not depend on it (checked on 18,000 lines); cost does."""
GLIDE = "ʲ"
"""espeak-ng 1.52 (Piper's) writes its palatal glide phoneme `;` as this; 1.51 writes nothing."""
RENAMED = (("oːɹ", "ɔːɹ"),)
"""IPA spellings that changed from espeak-ng 1.51 to 1.52 for en-us (phoneme `o@`)."""
STRESS_ANCHOR = "thing"
"""Stressed word put before a clause read again: 1.51 forces a stress onto unstressed clauses, 1.52 not."""
_STRESS_ANCHOR_IPA = "θˈɪŋ "
_VOWELS = frozenset("aeiouæɑɐɒɔəɚɛɜɝɪʊʌᵻɘɞɤɵɨœøɶʏy")

# Characters that must not reach espeak-ng inside a line: each input line is one clause.
_LINE_BREAKS = re.compile(r"[\r\n\v\f\u0085\u2028\u2029]+")


class EspeakNotFoundError(RuntimeError):
    """The espeak-ng program is not installed."""


def clause_suffix(terminator: str, last: bool) -> str:
    """What follows a clause's phonemes: its terminator, plus a space unless it ends the utterance."""
    # Piper appends the terminator, and a space after , : ; (which never end a sentence).
    return terminator if last else f"{terminator} "


class Phonemizer:
    """Text to IPA phonemes with the espeak-ng command-line program, the way Piper phonemizes."""

    def __init__(self, voice: str = "en-us", program: str = ESPEAK_PROGRAM, timeout_s: float = 60.0,
                 persistent: bool = True):
        """Find the program; raise EspeakNotFoundError naming the package to install when it is missing."""
        path = shutil.which(program)
        if path is None:
            raise EspeakNotFoundError(
                f"the espeak-ng program {program!r} was not found on PATH; Chorus runs it as a separate "
                f"process to phonemize text: install the {ESPEAK_PACKAGE!r} package "
                f"(Debian/Ubuntu: apt-get install {ESPEAK_PACKAGE})"
            )
        if not re.fullmatch(r"[A-Za-z0-9_+\-]+", voice):
            raise ValueError(f"espeak voice {voice!r} is not a valid voice name (e.g. 'en-us')")
        self.voice = voice
        self.program = path
        # -q still synthesises audio, and that is most of espeak-ng's time: at its fastest rate
        # without the sonic speed-up (-s 440) it makes half the samples, for the same phonemes.
        command = [path, "-q", "--ipa", f"--sep={SEPARATOR}", "-s", SPEED, "-b", "1", "-v", voice]
        # persistent: one long-lived process read line by line (~1 ms a line, no start-up per call).
        self.runner = EspeakRunner(command, timeout_s=timeout_s, persistent=persistent)

    def phonemize(self, sentence: str) -> str:
        """IPA phonemes of one sentence, with clause punctuation kept as Piper keeps it."""
        return self.phonemize_many([sentence])[0]

    def phonemize_many(self, sentences: Sequence[str]) -> list[str]:
        """Phonemize several sentences in one batch (one round trip to espeak-ng, two at most)."""
        clause_lists = [split_clauses(s) for s in sentences]
        phonemes = self.phonemize_clauses([c for clauses in clause_lists for c in clauses])
        out: list[str] = []
        position = 0
        for clauses in clause_lists:
            parts = phonemes[position:position + len(clauses)]
            position += len(clauses)
            out.append(join_clause_phonemes(clauses, parts))
        return out

    def phonemize_clauses(self, clauses: Sequence[Clause]) -> list[str]:
        """Phonemes of each clause's words (without its terminator), all clauses in one batch."""
        lines: list[str] = []
        owners: list[int] = []
        for index, clause in enumerate(clauses):
            text = _LINE_BREAKS.sub(" ", clause.text)
            pieces = split_words(text, MAX_LINE_CHARS) if len(text) > MAX_LINE_CHARS else [text]
            for number, piece in enumerate(pieces):
                # The terminator goes to espeak-ng too ("Dr." reads as an abbreviation), on the last piece.
                last = number == len(pieces) - 1
                lines.append(f"{piece}{clause.terminator}" if last else piece)
                owners.append(index)
        plain = [_clean(raw) for raw in self.runner.run(lines)] if lines else []
        # Lines with a single primary stress may carry 1.51's promotion: read them again after a
        # stressed anchor word, in a second round (most clauses of running text need not).
        suspects = [n for n, phonemes in enumerate(plain) if phonemes.count("ˈ") == 1]
        if suspects:
            anchored = self.runner.run([f"{STRESS_ANCHOR} {lines[n]}" for n in suspects])
            for n, raw in zip(suspects, anchored):
                plain[n] = _unpromote(plain[n], _strip_anchor(_clean(raw)))
        merged: list[list[str]] = [[] for _ in clauses]
        for owner, phonemes in zip(owners, plain):
            if phonemes:
                merged[owner].append(phonemes)
        return [" ".join(parts) for parts in merged]

    def close(self) -> None:
        """Stop the long-lived espeak-ng process (a later call starts another)."""
        self.runner.close()


def _clean(line: str) -> str:
    """One output line of `espeak-ng --ipa --sep=_` as the IPA Piper's espeak-ng 1.52 would give."""
    tokens: list[str] = []
    for word in _LANGUAGE_SWITCH.sub("", line).split():
        if tokens:
            tokens.append(" ")
        tokens.extend(word.split(SEPARATOR))
    out = []
    for index, token in enumerate(tokens):
        if token:
            out.append(token)
        elif _is_glide(tokens, index):
            out.append(GLIDE)
    phonemes = "".join(out).strip()
    for old, new in RENAMED:
        phonemes = phonemes.replace(old, new)
    return phonemes


def _strip_anchor(phonemes: str) -> str | None:
    """The clause's part of an anchored line; None when espeak-ng did not keep the anchor apart."""
    if phonemes == _STRESS_ANCHOR_IPA.strip():
        return ""
    if phonemes.startswith(_STRESS_ANCHOR_IPA):
        return phonemes[len(_STRESS_ANCHOR_IPA):].strip()
    return None


def _unpromote(plain: str, anchored: str | None) -> str:
    """Undo 1.51's stress promotion: a clause without primary stress gets one there, not in 1.52.

    The anchored reading (after a stressed word) has no promotion, but the anchor changes how a
    clause's first word is stressed; so only the promoted word is taken from it.
    """
    if anchored is None or plain.count("ˈ") != 1 or "ˈ" in anchored:
        return plain
    plain_words, anchored_words = plain.split(" "), anchored.split(" ")
    if len(plain_words) != len(anchored_words):
        return anchored
    return " ".join(a if "ˈ" in p else p for p, a in zip(plain_words, anchored_words))


def _is_glide(tokens: list[str], index: int) -> bool:
    """Whether an empty (IPA-less) phoneme is the palatal glide: after an i-vowel, before a vowel."""
    before = next((t for t in reversed(tokens[:index]) if t.strip()), "")
    after = next((t for t in tokens[index + 1:] if t.strip()), "").lstrip("ˈˌ")
    return before.rstrip("ː")[-1:] in ("i", "ɪ") and after[:1] in _VOWELS


def join_clause_phonemes(clauses: Sequence[Clause], phonemes: Sequence[str]) -> str:
    """Put clause phonemes and their terminators together as Piper does ("həlˈoʊ, wˈɜːld!")."""
    parts = []
    for number, (clause, ph) in enumerate(zip(clauses, phonemes)):
        parts.append(ph + clause_suffix(clause.terminator, number == len(clauses) - 1))
    return "".join(parts).rstrip(" ")
