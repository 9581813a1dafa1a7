"""`chorus operator run`: the operator as a chorus subcommand; flags override CHORUS_OPERATOR_* settings."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `chorus operator run`."""
    parser = subparsers.add_parser("operator", help="the VoiceTenant operator (kopf)")
    sub = parser.add_subparsers(dest="operator_command", metavar="SUBCOMMAND")
    run = sub.add_parser("run", help="run the operator until interrupted")
    run.add_argument("--kubeconfig", type=Path, help="kubeconfig file (default: in-cluster service account)")
    run.add_argument("--platform-namespace", help="namespace of the serving tier (default chorus-system)")
    run.add_argument("--standalone", action="store_true", default=None, help="no peering / leader election")
    run.add_argument("--peering-name", help="ClusterKopfPeering name shared by replicas")
    run.add_argument("--log-level", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    run.set_defaults(func=_run)
    parser.set_defaults(func=lambda args: parser.print_help() or 2)


def _run(args: argparse.Namespace) -> int:
    from chorus.operator.runner import run
    from chorus.operator.settings import Settings

    overrides = {k: v for k, v in {
        "kubeconfig": args.kubeconfig, "platform_namespace": args.platform_namespace,
        "standalone": args.standalone, "peering_name": args.peering_name, "log_level": args.log_level,
    }.items() if v is not None}
    return run(Settings(**overrides))
