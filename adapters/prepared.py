"""Reading a prepared dataset back (verified), and the human-readable preparation report."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from chorus.adapters.dataset import (
    DATASET_FILE,
    METADATA_FILE,
    ClipRecord,
    DatasetError,
    DatasetReport,
    dataset_hash,
)


@dataclass(frozen=True)
class PreparedDataset:
    """A prepared dataset directory: its clips and the content hash the manifest records."""

    root: Path
    clips: list[ClipRecord]
    dataset_hash: str
    sample_rate: int

    @property
    def seconds(self) -> float:
        """Total clip duration."""
        return sum(c.duration for c in self.clips)

    def path(self, clip: ClipRecord) -> Path:
        """Absolute path of a clip's wav file."""
        return self.root / clip.file


def load_prepared(root: str | Path, verify: bool = True) -> PreparedDataset:
    """Read metadata.jsonl and dataset.json; with verify, re-hash every clip (DatasetError on mismatch)."""
    root = Path(root)
    meta, info = root / METADATA_FILE, root / DATASET_FILE
    for needed in (meta, info):
        if not needed.is_file():
            raise DatasetError(f"{str(root)!r} is not a prepared dataset: {needed.name} is missing")
    clips = [ClipRecord.model_validate_json(line) for line in meta.read_text("utf-8").splitlines() if line.strip()]
    recorded = json.loads(info.read_text("utf-8"))
    if verify:
        for c in clips:
            f = root / c.file
            if not f.is_file():
                raise DatasetError(f"clip {c.file} listed in {METADATA_FILE} is missing")
            actual = hashlib.sha256(f.read_bytes()).hexdigest()
            if actual != c.sha256:
                raise DatasetError(f"clip {c.file} is corrupted: sha256 {actual}, expected {c.sha256}")
        actual_hash = dataset_hash(clips)
        if actual_hash != recorded["dataset_hash"]:
            raise DatasetError(
                f"{METADATA_FILE} does not match {DATASET_FILE}: hash {actual_hash}, "
                f"expected {recorded['dataset_hash']}")
    return PreparedDataset(root, clips, recorded["dataset_hash"], int(recorded["sample_rate"]))


def format_report(report: DatasetReport) -> str:
    """A plain-text table of rejected clips plus a summary line."""
    rows = [("source", "start", "end", "reason", "message")]
    for r in report.rejected:
        rows.append((r.source, "" if r.start is None else f"{r.start:.2f}", "" if r.end is None else f"{r.end:.2f}",
                     r.reason, r.message))
    widths = [min(max(len(row[i]) for row in rows), 48) for i in range(4)]
    lines = []
    if report.rejected:
        for row in rows:
            cells = [row[i][: widths[i]].ljust(widths[i]) for i in range(4)]
            lines.append("  ".join(cells + [row[4]]))
    by_reason = ", ".join(f"{k} {v}" for k, v in sorted(report.by_reason().items())) or "none"
    status = "OK" if report.usable_seconds >= report.required_seconds else "TOO LITTLE SPEECH"
    lines.append(
        f"{len(report.clips)} clips kept, {report.usable_seconds:.1f} s usable of {report.required_seconds:.1f} s "
        f"needed ({status}); rejected {len(report.rejected)} ({by_reason})"
    )
    if report.dataset_hash:
        lines.append(f"dataset hash {report.dataset_hash}")
    return "\n".join(lines)


def split_prepared(root: str | Path, train_dir: str | Path, heldout_dir: str | Path, heldout: int) -> None:
    """Split a prepared dataset into two prepared datasets: `heldout` clips spread over it, the rest to train.

    The held-out clips are every k-th clip in id order (deterministic, and spread over the recordings
    rather than taken from one end); each part gets its own metadata.jsonl and dataset.json, so both
    load and verify like any prepared dataset.
    """
    import shutil

    src = load_prepared(root)
    if not 2 <= heldout <= len(src.clips) - 2:
        raise DatasetError(f"cannot hold out {heldout} of {len(src.clips)} clips: training and the gate "
                           "each need at least 2")
    step = len(src.clips) / heldout
    picked = {int(i * step + step / 2) for i in range(heldout)}
    parts = ((Path(heldout_dir), [c for i, c in enumerate(src.clips) if i in picked]),
             (Path(train_dir), [c for i, c in enumerate(src.clips) if i not in picked]))
    for out, clips in parts:
        (out / "clips").mkdir(parents=True, exist_ok=True)
        for clip in clips:
            shutil.copyfile(src.path(clip), out / clip.file)
        with open(out / METADATA_FILE, "w", encoding="utf-8") as fh:
            for clip in clips:
                fh.write(json.dumps(clip.model_dump(mode="json"), ensure_ascii=False, sort_keys=True) + "\n")
        info = {"dataset_hash": dataset_hash(clips), "sample_rate": src.sample_rate, "clips": len(clips),
                "seconds": round(sum(c.duration for c in clips), 2), "split_from": src.dataset_hash}
        (out / DATASET_FILE).write_text(json.dumps(info, indent=2, sort_keys=True) + "\n", encoding="utf-8")
