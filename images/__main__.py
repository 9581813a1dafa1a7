"""`python -m chorus.images`: build the Chorus images (OCI archives, no registry) or regenerate their pins."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from chorus.images import build


def main(argv: list[str] | None = None) -> int:
    """Run the images CLI; returns the exit code."""
    parser = argparse.ArgumentParser(prog="python -m chorus.images", description=__doc__.split(":")[1].strip())
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("build", help="build (or reuse) an image archive; prints '<archive> <ref>'")
    p.add_argument("--role", choices=[*build.ROLES, "all"], default="serve")
    p.add_argument("--force", action="store_true", help="rebuild even when the inputs did not change")
    p = sub.add_parser("ref", help="print the archive path and ref a role's current inputs give (builds nothing)")
    p.add_argument("--role", choices=list(build.ROLES), default="serve")
    sub.add_parser("lock", help="regenerate images/requirements-<role>.txt from requirements.lock")
    p = sub.add_parser("finish", help="trim torch to CPU and prune a site-packages (the Dockerfile's step)")
    p.add_argument("site_packages", type=Path)
    args = parser.parse_args(argv)
    try:
        if args.command == "build":
            for name in (build.ROLES if args.role == "all" else [args.role]):
                archive, ref = build.build_image(name, force=args.force)
                print(archive, ref)
        elif args.command == "ref":
            print(build.archive_path(args.role), build.image_ref(args.role))
        elif args.command == "lock":
            for name in build.ROLES:
                path = build.write_requirements(name)
                print(f"{path}: {len(build.read_list(path))} pins")
        elif args.command == "finish":
            print(build.finish_site_packages(args.site_packages))
    except build.ImageBuildError as exc:
        print(f"images: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
