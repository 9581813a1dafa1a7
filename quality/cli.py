"""`chorus eval AUDIO... [--text T | --texts FILE] [--ref CLIP...] [--json]`: quality of audio files."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from chorus.quality.report import METRICS


def register(subparsers) -> None:
    """Add the `eval` subcommand."""
    p = subparsers.add_parser(
        "eval",
        help="measure WER, DNSMOS, speaker similarity and f0 of audio files",
        description="Quality of audio files (local paths or fsspec URIs): WER against a text (Whisper "
        "tiny.en), DNSMOS, speaker similarity to reference clips (Resemblyzer), median f0.",
    )
    p.add_argument("audio", nargs="+", metavar="AUDIO", help="audio files or URIs (wav, flac, ogg, opus, mp3)")
    texts = p.add_mutually_exclusive_group()
    texts.add_argument("--text", help="reference text, the same for every clip")
    texts.add_argument(
        "--texts", metavar="FILE",
        help="reference texts: lines 'AUDIO|text' (matched by path or file name), or one text per line in AUDIO order",
    )
    p.add_argument("--ref", nargs="+", default=None, metavar="CLIP", help="reference clips of the target voice")
    p.add_argument("--metrics", default=",".join(METRICS), help=f"comma-separated subset of {','.join(METRICS)}")
    p.add_argument("--threads", type=int, default=2, help="CPU threads per model (default 2)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--plot", metavar="PNG", help="also write a bar chart of the metrics")
    p.set_defaults(func=run)


def read_texts(path: str, audio: list[str]) -> list[str | None]:
    """Texts for each audio file from a 'file|text' list, or one text per line in order."""
    lines = [ln.rstrip("\n") for ln in Path(path).read_text(encoding="utf-8").splitlines() if ln.strip()]
    if lines and all("|" in ln for ln in lines):
        table: dict[str, str] = {}
        for ln in lines:
            key, text = ln.split("|", 1)
            table[key.strip()] = text.strip()
        out = []
        for a in audio:
            text = table.get(a, table.get(Path(a).name, table.get(Path(a).stem)))
            if text is None:
                raise ValueError(f"{path}: no text for {a!r} (keys are paths, file names or stems)")
            out.append(text)
        return out
    if len(lines) != len(audio):
        raise ValueError(f"{path} has {len(lines)} non-empty lines but {len(audio)} audio files were given")
    return list(lines)


def run(args: argparse.Namespace) -> int:
    """Evaluate each file and print a table or JSON."""
    from chorus.engine.audio import load_audio
    from chorus.quality.report import evaluate, render_table, to_json

    metrics = [m.strip() for m in args.metrics.split(",") if m.strip()]
    if args.threads < 1:
        raise ValueError(f"--threads must be at least 1, got {args.threads}")
    if args.texts:
        texts = read_texts(args.texts, args.audio)
    else:
        texts = [args.text] * len(args.audio)
    refs = None
    if args.ref and "similarity" in metrics:
        from chorus.quality.similarity import embed_voice

        refs = embed_voice([load_audio(r) for r in args.ref])
    reports = []
    for path, text in zip(args.audio, texts):
        audio, sr = load_audio(path)
        reports.append(
            evaluate(audio, sr, text, refs, name=Path(path).name, metrics=metrics, threads=args.threads)
        )
    print(to_json(reports) if args.json else render_table(reports))
    for r in reports:
        for metric, reason in r.errors.items():
            print(f"chorus eval: {r.name}: {metric} not computed: {reason}", file=sys.stderr)
    if args.plot:
        from chorus.quality.plot import bar_chart

        values = {r.name or str(i): _plot_row(r) for i, r in enumerate(reports)}
        bar_chart(values, args.plot, title="chorus eval")
        if not args.json:
            print(f"plot: {args.plot}")
    return 0


def _plot_row(report) -> dict[str, float | None]:
    d = report.dnsmos
    return {
        "WER %": None if report.wer is None else 100 * report.wer,
        "DNSMOS OVRL": d.ovrl if d else None,
        "similarity": report.similarity,
        "f0 Hz": report.f0_median_hz,
    }
