"""`python -m chorus.controlplane`: start a throwaway control plane and keep it up until Ctrl-C."""

from __future__ import annotations

import argparse
import contextlib
import shutil
import signal
import sys
import threading
from pathlib import Path

from chorus.controlplane.binaries import BinariesNotFound
from chorus.controlplane.cluster import ControlPlane, ControlPlaneConfig, ControlPlaneError
from chorus.controlplane.node import Node, NodeConfig, NodeError
from chorus.controlplane.oci import OciError


def main(argv: list[str] | None = None) -> int:
    """Start a control plane, print how to reach it, run until SIGINT/SIGTERM, then stop it."""
    parser = argparse.ArgumentParser(prog="python -m chorus.controlplane", description=__doc__)
    parser.add_argument("--write-kubeconfig", type=Path, metavar="PATH",
                        help="also copy the admin kubeconfig to PATH (overwritten)")
    parser.add_argument("--keep-workdir", action="store_true",
                        help="keep certs, etcd data and logs after stopping")
    parser.add_argument("--timeout", type=float, default=120.0, help="startup timeout in seconds")
    parser.add_argument("-v", "--verbosity", type=int, default=0, help="klog level of the servers")
    parser.add_argument("--node", action="store_true",
                        help="also start a real node (containerd + kubelet + scheduler + proxy; needs root)")
    parser.add_argument("--load", type=Path, action="append", default=[], metavar="ARCHIVE",
                        help="with --node: import this OCI image archive (repeatable)")
    args = parser.parse_args(argv)

    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    config = ControlPlaneConfig(
        keep_workdir=args.keep_workdir, startup_timeout_s=args.timeout, verbosity=args.verbosity
    )
    try:
        with ControlPlane(config) as cp, contextlib.ExitStack() as stack:
            kubeconfig = cp.kubeconfig
            if args.write_kubeconfig:
                shutil.copyfile(cp.kubeconfig, args.write_kubeconfig)
                kubeconfig = args.write_kubeconfig.resolve()
            print(f"control plane {cp.version()['gitVersion']} at {cp.server} "
                  f"(ready in {cp.startup_s:.1f}s); logs in {cp.workdir}", file=sys.stderr)
            node = None
            if args.node:
                node = stack.enter_context(Node(cp, NodeConfig(verbosity=args.verbosity)))
                for archive in args.load:
                    print(f"loaded {node.load_image(archive)}", file=sys.stderr)
                print(f"node {node.name} Ready in {node.startup_s:.1f}s; logs in {node.workdir}/logs",
                      file=sys.stderr)
            print(f"export KUBECONFIG={kubeconfig}", flush=True)
            while not stop.wait(1.0):
                if not cp.running:
                    print(f"error: {cp.exited()}", file=sys.stderr)
                    return 1
                if node is not None and not node.running:
                    print("error: a node component exited; see its log in "
                          f"{node.workdir}/logs", file=sys.stderr)
                    return 1
            print("stopping", file=sys.stderr)
    except (BinariesNotFound, ControlPlaneError, NodeError, OciError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
