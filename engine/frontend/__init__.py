"""Chorus's text front end: normalisation, sentence splitting, espeak-ng phonemes and Piper phoneme ids."""

from .ids import BOS, EOS, PAD, phonemes_to_ids, split_phonemes
from .normalize import normalize_text
from .numbers import cardinal, ordinal, year
from .espeak import EspeakError
from .phonemize import ESPEAK_PACKAGE, EspeakNotFoundError, Phonemizer
from .sentences import Clause, split_clauses, split_sentences
from .utterances import MAX_PHONEME_IDS, TextFrontEnd, Utterance

__all__ = [
    "BOS", "EOS", "PAD", "ESPEAK_PACKAGE", "MAX_PHONEME_IDS", "Clause", "EspeakError", "EspeakNotFoundError",
    "Phonemizer", "TextFrontEnd", "Utterance", "cardinal", "normalize_text", "ordinal", "phonemes_to_ids",
    "split_clauses", "split_phonemes", "split_sentences", "year",
]
