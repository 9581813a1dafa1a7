"""Phoneme strings to the voice's phoneme ids, the way Piper builds them."""

from __future__ import annotations

import logging
import unicodedata
from collections.abc import Iterable, Mapping, Sequence

_LOGGER = logging.getLogger(__name__)

PAD = "_"
"""Padding symbol (id 0 in Piper voices), put after every phoneme."""
BOS = "^"
"""Beginning of an utterance."""
EOS = "$"
"""End of an utterance."""

IdMap = Mapping[str, Sequence[int]]


def split_phonemes(phonemes: str) -> list[str]:
    """Split a phoneme string into Piper's symbols: NFD unicode codepoints."""
    # Piper decomposes espeak's output (NFD) so accents are symbols of their own;
    # the voice's id map has single-codepoint keys only.
    return list(unicodedata.normalize("NFD", phonemes))


def phonemes_to_ids(phonemes: str | Iterable[str], id_map: IdMap) -> list[int]:
    """Map phonemes to ids: ^ _, then each phoneme followed by _, then $; drop unknowns with a warning."""
    for needed in (PAD, BOS, EOS):
        if needed not in id_map:
            raise ValueError(f"phoneme id map has no {needed!r} symbol; it cannot be a Piper id map")
    symbols = split_phonemes(phonemes) if isinstance(phonemes, str) else list(phonemes)
    pad = list(id_map[PAD])
    ids: list[int] = [*id_map[BOS], *pad]
    unknown: dict[str, int] = {}
    for symbol in symbols:
        mapped = id_map.get(symbol)
        if mapped is None:
            unknown[symbol] = unknown.get(symbol, 0) + 1
            continue
        ids.extend(mapped)
        ids.extend(pad)
    ids.extend(id_map[EOS])
    if unknown:
        named = ", ".join(f"{s!r} (U+{ord(s[0]):04X}) x{n}" for s, n in unknown.items())
        _LOGGER.warning("dropped phonemes missing from the voice's id map: %s", named)
    return ids
