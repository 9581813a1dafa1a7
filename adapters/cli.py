"""`chorus adapter ...`: prepare datasets, publish/list/show/get/verify/delete registry versions.

Each subcommand is one `add_<name>(subparsers)` function listed in SUBCOMMANDS; training and
evaluation add theirs to that tuple, reusing `add_registry_args` / `open_registry` / `resolve_base`.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from chorus.adapters.settings import AdapterSettings
from chorus.adapters.train_cli import add_eval, add_train
from chorus.adapters.voicejob import add_job

ANY_BASE = "any"  # --base-fingerprint value that skips the base-model check
AUTO_BASE = "auto"  # the installed base voice's fingerprint


def add_registry_args(p: argparse.ArgumentParser) -> None:
    """--registry and --s3-endpoint-url (defaults from CHORUS_ADAPTERS_* settings)."""
    p.add_argument("--registry", metavar="URI", help="registry root URI (file://, s3://, ...); "
                   "default $CHORUS_ADAPTERS_REGISTRY_URI or ~/.cache/chorus/adapters")
    p.add_argument("--s3-endpoint-url", metavar="URL", help="S3-compatible endpoint for s3:// URIs")


def add_base_arg(p: argparse.ArgumentParser) -> None:
    """--base-fingerprint (auto = installed base voice; any = skip the check)."""
    p.add_argument("--base-fingerprint", default=AUTO_BASE, metavar="SHA256|auto|any",
                   help="base model the adapter must belong to (default: the installed base voice)")


def settings_from(args: argparse.Namespace) -> AdapterSettings:
    """Settings with command-line overrides applied."""
    overrides = {}
    if getattr(args, "registry", None):
        overrides["registry_uri"] = args.registry
    if getattr(args, "s3_endpoint_url", None):
        overrides["s3_endpoint_url"] = args.s3_endpoint_url
    return AdapterSettings(**overrides)


def open_registry(args: argparse.Namespace):
    """The Registry the arguments name."""
    from chorus.adapters.registry import Registry

    s = settings_from(args)
    return Registry(s.registry_uri, s.storage_options())


def resolve_base(value: str) -> str | None:
    """Fingerprint to check against: the installed base voice's, a given sha256, or None (any)."""
    if value == ANY_BASE:
        return None
    if value == AUTO_BASE:
        from chorus.engine.voice import load_base_voice

        return load_base_voice().fingerprint
    return value


def _print_json(obj) -> None:
    json.dump(obj, sys.stdout, indent=2, default=str)
    sys.stdout.write("\n")


# ---- prepare ---------------------------------------------------------------------------------------
def _prepare(args: argparse.Namespace) -> int:
    from chorus.adapters.dataset import DatasetConfig, DatasetError, prepare_dataset
    from chorus.adapters.prepared import format_report

    fields = ("min_total_s", "min_clip_s", "target_clip_s", "max_clip_s", "loudness_target_db")
    cfg = DatasetConfig(**{f: getattr(args, f) for f in fields if getattr(args, f) is not None},
                        transcribe_missing=not args.no_whisper)
    s = settings_from(args)
    try:
        report = prepare_dataset(args.source, args.out, cfg, transcripts_uri=args.transcripts,
                                 storage_options=s.storage_options(args.source), overwrite=args.overwrite)
    except DatasetError as exc:
        if exc.report is not None:
            print(format_report(exc.report), file=sys.stderr)
        raise
    if args.json:
        _print_json(report.model_dump(mode="json"))
    else:
        print(format_report(report))
    return 0


def add_prepare(sub) -> None:
    """`chorus adapter prepare SOURCE OUT`."""
    p = sub.add_parser("prepare", help="slice, label, resample and normalise recordings into a training dataset")
    p.add_argument("source", help="folder or fsspec URI of audio (wav, flac, ogg, mp3)")
    p.add_argument("out", help="output directory (clips/, metadata.jsonl, report.json, dataset.json)")
    p.add_argument("--transcripts", metavar="URI", help="transcript list (file|text lines); default: "
                   "metadata.csv / transcripts.txt / *.list inside SOURCE if present")
    p.add_argument("--min-total-s", type=float, help="usable speech needed (default 30)")
    p.add_argument("--min-clip-s", type=float)
    p.add_argument("--target-clip-s", type=float)
    p.add_argument("--max-clip-s", type=float)
    p.add_argument("--loudness-target-db", type=float, help="active-speech RMS level, dBFS (default -20)")
    p.add_argument("--no-whisper", action="store_true", help="reject clips without transcript instead of labelling")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty OUT")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--s3-endpoint-url", metavar="URL", help="S3-compatible endpoint for an s3:// SOURCE")
    p.set_defaults(func=_prepare)


# ---- publish / list / show / get / verify / delete ------------------------------------------------
def _publish(args: argparse.Namespace) -> int:
    manifest = open_registry(args).publish(args.artifact, args.version, resolve_base(args.base_fingerprint))
    print(f"published {manifest.tenant}/{manifest.voice} version {manifest.version}")
    return 0


def add_publish(sub) -> None:
    """`chorus adapter publish ARTIFACT_DIR`."""
    p = sub.add_parser("publish", help="upload an artifact directory as a new immutable version")
    p.add_argument("artifact", help="artifact directory (adapter_config.json, adapter_model.safetensors, "
                   "chorus_manifest.json)")
    p.add_argument("--version", type=int, help="version number (default: the next one)")
    add_base_arg(p)
    add_registry_args(p)
    p.set_defaults(func=_publish)


def _fmt(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _list(args: argparse.Namespace) -> int:
    infos = open_registry(args).list(args.tenant, args.voice)
    if args.json:
        _print_json([i.model_dump(mode="json") for i in infos])
        return 0
    head = ("tenant", "voice", "ver", "created", "gate", "gap", "wer", "dnsmos", "size", "base")
    rows = [head] + [
        (i.tenant, i.voice, str(i.version), i.created.strftime("%Y-%m-%d %H:%M"),
         {True: "pass", False: "FAIL", None: "-"}[i.gate_passed], _fmt(i.gap_closed, ".0%"),
         _fmt(i.wer_adapted, ".1%"), _fmt(i.dnsmos_adapted, ".2f"), f"{i.size_bytes / 1e6:.2f}MB",
         i.base_fingerprint[:12]) if i.error is None else
        (i.tenant, i.voice, str(i.version), "BROKEN", "-", "-", "-", "-", "-", i.error[:60])
        for i in infos]
    widths = [max(len(r[c]) for r in rows) for c in range(len(head))]
    for r in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip())
    return 0


def add_list(sub) -> None:
    """`chorus adapter list [TENANT [VOICE]]`."""
    p = sub.add_parser("list", help="published versions with their quality summary")
    p.add_argument("tenant", nargs="?")
    p.add_argument("voice", nargs="?")
    p.add_argument("--json", action="store_true")
    add_registry_args(p)
    p.set_defaults(func=_list)


def _show(args: argparse.Namespace) -> int:
    _print_json(open_registry(args).manifest(args.tenant, args.voice, args.version).model_dump(mode="json"))
    return 0


def add_show(sub) -> None:
    """`chorus adapter show TENANT VOICE [VERSION]`."""
    p = sub.add_parser("show", help="print a version's manifest")
    p.add_argument("tenant")
    p.add_argument("voice")
    p.add_argument("version", nargs="?", default="latest", help="integer or 'latest' (default)")
    add_registry_args(p)
    p.set_defaults(func=_show)


def _get(args: argparse.Namespace) -> int:
    m = open_registry(args).get(args.tenant, args.voice, args.version, args.dest, resolve_base(args.base_fingerprint))
    print(f"downloaded {m.tenant}/{m.voice} version {m.version} to {args.dest} (verified)")
    return 0


def add_get(sub) -> None:
    """`chorus adapter get TENANT VOICE VERSION DEST`."""
    p = sub.add_parser("get", help="download a version into a new directory and verify it")
    p.add_argument("tenant")
    p.add_argument("voice")
    p.add_argument("version", help="integer or 'latest'")
    p.add_argument("dest")
    add_base_arg(p)
    add_registry_args(p)
    p.set_defaults(func=_get)


def _verify(args: argparse.Namespace) -> int:
    from chorus.adapters.artifact import verify_artifact_uri

    base = resolve_base(args.base_fingerprint)
    if len(args.target) == 1 and ("://" in args.target[0] or Path(args.target[0]).is_dir()):
        uri = args.target[0]
        m = verify_artifact_uri(uri, base, expected_manifest_sha256=args.manifest_sha256,
                                storage_options=settings_from(args).storage_options(uri))
    elif len(args.target) in (2, 3) and args.manifest_sha256 is None:
        m = open_registry(args).verify(*args.target[:2], args.target[2] if len(args.target) == 3 else "latest", base)
    else:
        raise SystemExit(f"chorus adapter verify: expected an artifact folder (path or URI) or TENANT VOICE "
                         f"[VERSION] (--manifest-sha256 only with a folder), got {args.target}")
    print(f"OK {m.tenant}/{m.voice} version {m.version or '-'}: {len(m.files)} files match the manifest"
          + ("" if base is None else ", base model matches"))
    return 0


def add_verify(sub) -> None:
    """`chorus adapter verify DIR | TENANT VOICE [VERSION]`."""
    p = sub.add_parser("verify", help="check an artifact's files and base model against its manifest")
    p.add_argument("target", nargs="+", help="artifact folder (path or URI), or TENANT VOICE [VERSION] in the registry")
    p.add_argument("--manifest-sha256", metavar="SHA256", help="also require this checksum of the manifest itself")
    add_base_arg(p)
    add_registry_args(p)
    p.set_defaults(func=_verify)


def _delete(args: argparse.Namespace) -> int:
    open_registry(args).delete(args.tenant, args.voice, args.version)
    print(f"deleted {args.tenant}/{args.voice} version {args.version} (the number is not reused)")
    return 0


def add_delete(sub) -> None:
    """`chorus adapter delete TENANT VOICE VERSION`."""
    p = sub.add_parser("delete", help="remove one published version")
    p.add_argument("tenant")
    p.add_argument("voice")
    p.add_argument("version", type=int)
    add_registry_args(p)
    p.set_defaults(func=_delete)


SUBCOMMANDS = (add_prepare, add_train, add_eval, add_job, add_publish, add_list, add_show, add_get, add_verify, add_delete)


def register(subparsers) -> None:
    """Add `chorus adapter ...` to the top-level parser."""
    parser = subparsers.add_parser("adapter", help="tenant voice adapters: datasets, artifacts, registry")
    sub = parser.add_subparsers(dest="adapter_command", metavar="SUBCOMMAND")
    parser.set_defaults(func=lambda _args: parser.print_help() or 2)
    for add in SUBCOMMANDS:
        add(sub)
