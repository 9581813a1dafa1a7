"""`chorus synth`: text to an audio file with the base voice."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from pydantic import ValidationError


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `synth` subcommand."""
    from .audio import FORMATS
    from .synth import BACKENDS

    parser = subparsers.add_parser(
        "synth", help="synthesise speech to an audio file",
        description="Synthesise TEXT (or stdin with '-', or --file) with the base voice.")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("text", nargs="?", help="text to speak; '-' reads stdin")
    source.add_argument("--file", type=Path, help="read the text from this UTF-8 file")
    parser.add_argument("-o", "--output", required=True, help="output file; '-' writes to stdout (needs --format)")
    parser.add_argument("--format", choices=sorted(FORMATS), help="audio format (default: from the output's extension)")
    parser.add_argument("--speed", type=float, default=1.0, help="speaking rate; 2.0 is twice as fast (default 1.0)")
    parser.add_argument("--noise-scale", type=float, help="prior noise (default: the voice's, 0.667)")
    parser.add_argument("--noise-w", type=float, help="duration noise (default: the voice's, 0.8)")
    parser.add_argument("--sentence-silence", type=float, default=0.2, help="seconds between sentences (default 0.2)")
    parser.add_argument("--seed", type=int, help="random seed for reproducible output")
    parser.add_argument("--backend", choices=BACKENDS, default="torch", help="inference runtime (default torch)")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads for inference (default 2)")
    parser.set_defaults(func=run_synth)


def _read_text(args: argparse.Namespace) -> str:
    if args.file is not None:
        return args.file.read_text(encoding="utf-8")
    if args.text == "-":
        return sys.stdin.read()
    return args.text


def _output_format(args: argparse.Namespace) -> str:
    from .audio import format_for_path

    if args.format:
        return args.format
    if args.output == "-":
        raise ValueError("--format is required when writing to stdout")
    fmt = format_for_path(args.output)
    if fmt is None:
        raise ValueError(f"cannot tell the format from {args.output!r}; give --format")
    return fmt


def run_synth(args: argparse.Namespace) -> int:
    """Synthesise the text and write the encoded audio; returns the exit code."""
    from .audio import encode
    from .synth import SynthesisOptions, Synthesizer

    fmt = _output_format(args)
    try:
        options = SynthesisOptions(speed=args.speed, noise_scale=args.noise_scale, noise_w=args.noise_w,
                                   seed=args.seed, sentence_silence=args.sentence_silence)
    except ValidationError as exc:
        problems = "; ".join(f"--{'-'.join(map(str, e['loc'])).replace('_', '-')}: {e['msg']}" for e in exc.errors())
        raise ValueError(problems or str(exc)) from None
    text = _read_text(args)
    if not text.strip():
        raise ValueError("text is empty: nothing to synthesise")
    started = time.perf_counter()
    synth = Synthesizer(backend=args.backend, num_threads=args.threads)
    audio = synth.synthesize(text, options)
    data = encode(audio, synth.sample_rate, fmt)
    if args.output == "-":
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
    else:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_bytes(data)
    seconds = audio.size / synth.sample_rate
    elapsed = time.perf_counter() - started
    print(f"wrote {args.output}: {seconds:.2f} s of audio as {fmt} in {elapsed:.2f} s", file=sys.stderr)
    return 0
