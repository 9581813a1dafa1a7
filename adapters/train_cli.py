"""`chorus adapter train` and `chorus adapter eval`: train an artifact from a prepared dataset, score it."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path


def _train(args: argparse.Namespace) -> int:
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    from chorus.adapters.artifact import build_manifest, save_peft_adapter
    from chorus.adapters.prepared import load_prepared
    from chorus.adapters.train import TrainConfig, train_adapter
    from chorus.engine.voice import load_base_voice

    given = {field: getattr(args, attr) for attr, field in CONFIG_ARGS.items() if getattr(args, attr) is not None}
    cfg = TrainConfig(**given)
    dataset = load_prepared(args.dataset)
    checkpoints = args.checkpoint_dir or Path(args.out).with_name(Path(args.out).name + ".checkpoints")
    result = train_adapter(args.dataset, cfg, checkpoint_dir=checkpoints)
    save_peft_adapter(result.peft_model, args.out)
    training = {**cfg.model_dump(), "steps_done": result.steps, "seconds": round(result.seconds, 1)}
    fields = dict(tenant=args.tenant, voice=args.voice, base_fingerprint=load_base_voice().fingerprint,
                  dataset_hash=dataset.dataset_hash, training=training, profile=result.profile.model_dump())
    build_manifest(args.out, **fields)
    print(f"trained {result.steps} steps in {result.seconds:.0f} s; profile {result.profile.model_dump()}; "
          f"artifact {args.out}")
    if args.heldout:
        return _evaluate(args.out, args.heldout, fields, args.json)
    return 0


def _evaluate(artifact: str, heldout_dir: str, fields: dict | None, as_json: bool) -> int:
    from chorus.adapters.adapted import load_adapted_voice
    from chorus.adapters.artifact import ADAPTER_WEIGHTS_FILE, QualityRecord, build_manifest, verify_artifact
    from chorus.adapters.evaluate import evaluate_voice, format_metrics, load_heldout
    from chorus.adapters.gate import GateThresholds
    from chorus.engine.voice import load_base_voice

    fingerprint = load_base_voice().fingerprint
    manifest = verify_artifact(artifact, fingerprint)
    voice = load_adapted_voice(artifact, fingerprint)
    size = (Path(artifact) / ADAPTER_WEIGHTS_FILE).stat().st_size
    metrics, gate, _ = evaluate_voice(voice, load_heldout(heldout_dir), adapter_bytes=size)
    fields = fields or dict(tenant=manifest.tenant, voice=manifest.voice, base_fingerprint=fingerprint,
                            dataset_hash=manifest.dataset_hash, training=manifest.training,
                            profile=manifest.profile.model_dump())
    build_manifest(artifact, **fields, quality=QualityRecord(metrics=metrics, thresholds=GateThresholds(), gate=gate))
    if as_json:
        print(json.dumps({"metrics": metrics.model_dump(), "gap_closed": metrics.gap_closed(),
                          "gate": gate.model_dump()}, indent=2))
    else:
        print(format_metrics(metrics, gate))
    return 0 if gate.passed else 1


def _eval(args: argparse.Namespace) -> int:
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    return _evaluate(args.artifact, args.heldout, None, args.json)


CONFIG_ARGS = {"seed": "seed", "steps": "steps", "minutes": "max_minutes", "rank": "rank", "pitch_path": "pitch_path",
               "threads": "threads", "checkpoint_every": "checkpoint_every"}
"""`chorus adapter train` option (argparse dest) -> TrainConfig field; an option not given keeps the field's default.

Only what a tenant or an admin would tune. The recipe's other fields (learning rates, LoRA on the flow, the
discriminator, the split/world/none pitch paths) lost their experiments (adapters/README.md, "What was
tried"); they stay in TrainConfig for the bench to rerun them, not on the command line."""
PITCH_CHOICES = ("auto", "psola", "resample")


def _default(field: str) -> str:
    from chorus.adapters.train import TrainConfig

    return f" (default {TrainConfig.model_fields[field].default})"


def add_train(sub) -> None:
    """`chorus adapter train DATASET OUT`."""
    p = sub.add_parser("train", help="train a LoRA voice adapter from a prepared dataset into an artifact directory")
    p.add_argument("dataset", help="prepared dataset directory (from `chorus adapter prepare`)")
    p.add_argument("out", help="artifact directory to write")
    p.add_argument("--tenant", required=True)
    p.add_argument("--voice", required=True)
    p.add_argument("--heldout", help="held-out clips (prepared dataset or metadata.csv folder): evaluate and gate")
    p.add_argument("--steps", type=int, help="optimizer steps" + _default("steps"))
    p.add_argument("--minutes", type=float, help="training time cap" + _default("max_minutes"))
    p.add_argument("--rank", type=int, help="LoRA rank" + _default("rank"))
    p.add_argument("--pitch-path", choices=PITCH_CHOICES,
                   help="how the fitted pitch factor is applied: psola = TD-PSOLA on the output (the LoRA learns "
                   "timbre and formants), resample = play faster (pitch and formants move together), auto = "
                   "one of those two from the measured formant ratio" + _default("pitch_path"))
    p.add_argument("--seed", type=int, help="seed" + _default("seed"))
    p.add_argument("--threads", type=int, help="torch CPU threads" + _default("threads"))
    p.add_argument("--checkpoint-every", type=int, help="steps between checkpoints" + _default("checkpoint_every"))
    p.add_argument("--checkpoint-dir", help="default OUT.checkpoints; an interrupted run resumes from it")
    p.add_argument("--json", action="store_true", help="print the evaluation as JSON")
    p.set_defaults(func=_train)


def add_eval(sub) -> None:
    """`chorus adapter eval ARTIFACT --heldout DIR`."""
    p = sub.add_parser("eval", help="score an artifact on held-out clips and record the gate verdict in its manifest")
    p.add_argument("artifact", help="artifact directory")
    p.add_argument("--heldout", required=True, help="held-out clips (prepared dataset or metadata.csv folder)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_eval)
