"""Transcript lists as LJSpeech and GPT-SoVITS write them, matched to audio files by path, name or stem."""

from __future__ import annotations

import posixpath
from dataclasses import dataclass

# File names picked up as a transcript list when none is given explicitly.
AUTO_TRANSCRIPT_NAMES = ("metadata.csv", "transcripts.txt", "transcript.txt")
AUTO_TRANSCRIPT_SUFFIX = ".list"  # GPT-SoVITS


class TranscriptError(ValueError):
    """A transcript list line that cannot be parsed."""


@dataclass(frozen=True)
class TranscriptLine:
    """One `file|text` entry and where it came from."""

    file: str
    text: str
    line_no: int


def parse_transcripts(content: str, source: str = "<transcripts>") -> list[TranscriptLine]:
    """Parse a transcript list.

    Accepted line shapes (by field count, `|`-separated):
      2: `file|text`                           (plain)
      3: `id|raw text|normalized text`         (LJSpeech metadata.csv; the normalized text is used,
                                                the raw one when it is empty)
      4: `path|speaker|language|text`          (GPT-SoVITS .list)
    Blank lines and lines starting with `#` are skipped.
    """
    out = []
    for no, raw in enumerate(content.splitlines(), start=1):
        line = raw.strip("\ufeff").rstrip("\r\n")
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        fields = line.split("|")
        if len(fields) == 2:
            file, text = fields
        elif len(fields) == 3:
            file, text = fields[0], fields[2] if fields[2].strip() else fields[1]
        elif len(fields) == 4:
            file, text = fields[0], fields[3]
        else:
            raise TranscriptError(
                f"{source}:{no}: expected 2 (file|text), 3 (LJSpeech) or 4 (GPT-SoVITS) '|'-separated "
                f"fields, got {len(fields)}: {line[:80]!r}"
            )
        if not file.strip():
            raise TranscriptError(f"{source}:{no}: empty file name")
        out.append(TranscriptLine(file.strip().replace("\\", "/"), text.strip(), no))
    return out


def _stem(path: str) -> str:
    base = posixpath.basename(path)
    return base.rsplit(".", 1)[0] if "." in base else base


class TranscriptIndex:
    """Finds the transcript line for an audio file: exact relative path, then file name, then stem."""

    def __init__(self, lines: list[TranscriptLine]):
        self.lines = lines
        self._by_path = {ln.file.removeprefix("./"): ln for ln in lines}
        self._by_name = {posixpath.basename(ln.file): ln for ln in lines}
        self._by_stem = {_stem(ln.file): ln for ln in lines}
        self.used: set[int] = set()

    def lookup(self, rel_path: str) -> TranscriptLine | None:
        """Transcript line for `rel_path` (relative to the dataset root) or None."""
        for table, key in (
            (self._by_path, rel_path),
            (self._by_name, posixpath.basename(rel_path)),
            (self._by_stem, _stem(rel_path)),
        ):
            hit = table.get(key)
            if hit is not None:
                self.used.add(hit.line_no)
                return hit
        return None

    def unused(self) -> list[TranscriptLine]:
        """Lines that matched no audio file."""
        return [ln for ln in self.lines if ln.line_no not in self.used]
