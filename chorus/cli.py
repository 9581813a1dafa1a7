"""The `chorus` command: one entry point, each concern registers its own subcommands."""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

# Idle OpenMP threads must sleep, not spin: on a shared 2-core machine spinning threads made the
# 2-thread torch engine 5-10x slower (bench/results/engine.md). Must be set before torch loads.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

# Each module defines `register(subparsers)` and sets `func` on the parsers it adds.
# Imported lazily so `chorus synth` does not pay for Ray or Kubernetes imports.
_SUBCOMMAND_MODULES = (
    "chorus.engine.cli",
    "chorus.quality.cli",
    "chorus.adapters.cli",
    "chorus.operator.cli",
    "chorus.serving.cli",
)


def build_parser() -> argparse.ArgumentParser:
    """Build the top-level parser with every available subcommand."""
    parser = argparse.ArgumentParser(prog="chorus", description="Chorus multi-tenant text-to-speech")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    missing = []
    for name in _SUBCOMMAND_MODULES:
        try:
            module = importlib.import_module(name)
            module.register(subparsers)
        except ModuleNotFoundError as exc:
            if exc.name == name:  # that concern has no CLI yet
                continue
            # A role image (e.g. the operator's) leaves out what other concerns need (torch, Ray):
            # their commands are absent there, and the help says why.
            missing.append(f"{name.rsplit('.', 2)[-2]} (needs {exc.name}, not installed)")
    if missing:
        parser.epilog = "not available here: " + ", ".join(missing)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the chorus CLI; returns the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # a clear one-line error for users; tracebacks with -v
        if args.verbose:
            raise
        print(f"chorus: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
