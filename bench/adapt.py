"""Adapter benchmark: train voices from ~60 s of target speech, then score them on held-out sentences.

`python -m bench.adapt` (or `make bench-adapt`) generates the target voices (chorus.adapters.targets:
two WORLD transforms of the base voice and an espeak-ng voice), prepares each training folder, trains
a LoRA adapter per voice and variant, writes each as an artifact with its manifest, evaluates it
(similarity gap closed, median f0, WER, DNSMOS, gate) and prints one JSON line per run; results go to
bench/results/adapt.{json,md,png}. Variants: `auto` (the default recipe: resampling or TD-PSOLA pitch path
chosen from the measured formant ratio, fitted length scale), `pitch` (resampling pitch path), `plain` (no pitch path: the prototype's recipe) and `adv` (pitch path plus a
discriminator's adversarial and feature-matching losses), `world` (train as plain, apply the pitch factor
with WORLD f0 shifting at synthesis: formants kept, vocoder artefacts added) and `world-adv`.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from pathlib import Path

# Idle OpenMP threads must sleep, not spin: on this shared 2-core machine spinning made torch ~10x slower.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402

from bench.common import RESULTS_DIR, emit, machine_info, markdown_table, write_results  # noqa: E402

VARIANTS = {"auto": {"pitch_path": "auto"}, "pitch": {"pitch_path": "resample"}, "plain": {"pitch_path": "none"},
            "world": {"pitch_path": "world"},
            "psola": {"pitch_path": "psola"},
            "adv": {"pitch_path": "resample", "adv_weight": 0.2, "fm_weight": 1.0},
            "world-adv": {"pitch_path": "world", "adv_weight": 0.2, "fm_weight": 1.0},
            "flow": {"pitch_path": "resample", "targets": "decoder+flow", "flow_lr": 5e-4},
            "pitch-r32": {"pitch_path": "resample", "rank": 32, "alpha": 64.0, "lr": 3e-3},
            "plain-flow": {"pitch_path": "none", "targets": "decoder+flow", "flow_lr": 5e-4}}
"""Training variants: TrainConfig overrides."""

COLUMNS = ["voice", "variant", "steps", "train_s", "sim_base", "sim_adapted", "sim_ceiling", "gap_closed",
           "f0_base", "f0_adapted", "f0_target", "wer_base", "wer_adapted", "dnsmos_base", "dnsmos_adapted",
           "dnsmos_target", "adapter_kb", "pitch_path", "pitch_factor", "formant_ratio", "length_scale", "gate"]


def _targets(names: list[str]):
    from chorus.adapters.targets import DEFAULT_TARGETS

    known = {t.name: t for t in DEFAULT_TARGETS}
    bad = [n for n in names if n not in known]
    if bad:
        raise SystemExit(f"unknown voice(s) {bad}; valid: {sorted(known)}")
    return [known[n] for n in names]


def run_voice(target, variants: list[str], work: Path, args, base_audio) -> list[dict]:
    """Generate, prepare, train and evaluate one target voice in each variant; returns result rows."""
    from chorus.adapters.adapted import AdaptedVoice
    from chorus.adapters.artifact import build_manifest, save_peft_adapter, ADAPTER_WEIGHTS_FILE
    from chorus.adapters.artifact import QualityRecord
    from chorus.adapters.dataset import prepare_dataset
    from chorus.adapters.evaluate import evaluate_voice, format_metrics, load_heldout, reference_scores
    from chorus.adapters.gate import GateThresholds
    from chorus.adapters.lora import merged_engine
    from chorus.adapters.prepared import load_prepared
    from chorus.adapters.targets import write_target_set
    from chorus.adapters.train import TrainConfig, train_adapter
    from chorus.adapters.trainset import build_trainset, load_clips
    from chorus.engine.voice import load_base_voice
    from chorus.engine.weights import load_vits_model

    root = work / target.name
    if not (root / "heldout" / "metadata.csv").is_file():
        write_target_set(work, target, seed=args.seed)
    prepared = work / "prepared" / target.name
    if not (prepared / "dataset.json").is_file():
        prepare_dataset(str(root / "train"), prepared, overwrite=True)
    heldout = load_heldout(root / "heldout")
    reference = reference_scores(heldout, base_audio, seed=args.seed)
    voice, rows = load_base_voice(), []
    for variant in variants:
        cfg = TrainConfig(seed=args.seed, steps=args.steps, max_minutes=args.minutes, threads=args.threads,
                          **VARIANTS[variant])
        ckpt = work / "checkpoints" / f"{target.name}-{variant}"
        shutil.rmtree(ckpt, ignore_errors=True)  # a benchmark run starts fresh
        t0 = time.monotonic()
        trainset = build_trainset(load_clips(prepared), load_vits_model(voice), voice, cfg.pitch_path)
        prep_s = time.monotonic() - t0
        result = train_adapter(prepared, cfg, checkpoint_dir=ckpt,
                               trainset=trainset, progress=not args.quiet)
        out = work / "artifacts" / f"{target.name}-{variant}"
        save_peft_adapter(result.peft_model, out)
        size = (out / ADAPTER_WEIGHTS_FILE).stat().st_size
        adapted = AdaptedVoice(merged_engine(result.peft_model), result.profile, voice)
        metrics, gate, _ = evaluate_voice(adapted, heldout, reference, adapter_bytes=size, seed=args.seed)
        build_manifest(out, tenant="bench", voice=f"{target.name}-{variant}", base_fingerprint=voice.fingerprint,
                       dataset_hash=load_prepared(prepared).dataset_hash,
                       training={**cfg.model_dump(), "steps_done": result.steps, "seconds": result.seconds},
                       quality=QualityRecord(metrics=metrics, thresholds=GateThresholds(), gate=gate),
                       profile={**result.profile.model_dump()})
        print(format_metrics(metrics, gate), flush=True)
        m = metrics
        row = {"voice": target.name, "variant": variant, "steps": result.steps, "train_s": round(result.seconds, 1),
               "align_prep_s": round(prep_s, 1), "sim_base": m.similarity_base, "sim_adapted": m.similarity_adapted,
               "sim_ceiling": m.similarity_ceiling, "gap_closed": m.gap_closed(), "f0_base": m.f0_base,
               "f0_adapted": m.f0_adapted, "f0_target": m.f0_target, "wer_base": m.wer_base,
               "wer_adapted": m.wer_adapted, "dnsmos_base": m.dnsmos_base, "dnsmos_adapted": m.dnsmos_adapted,
               "dnsmos_target": m.dnsmos_target, "adapter_kb": round(size / 1024, 1),
               "pitch_factor": result.profile.pitch_factor, "length_scale": result.profile.length_scale,
               "pitch_path": trainset.pitch_path, "formant_ratio": trainset.formant_ratio,
               "gate": "pass" if gate.passed else "fail", "gate_reasons": gate.reasons,
               "final_loss": sum(result.losses[-50:]) / max(1, len(result.losses[-50:])), "artifact": str(out)}
        emit(row)
        rows.append(row)
    return rows


def plot(rows: list[dict], path: Path) -> None:
    """Grouped bars: similarity of base, adapted and ceiling per voice/variant."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    labels = [f"{r['voice']}/{r['variant']}" for r in rows]
    x = np.arange(len(rows))
    fig, ax = plt.subplots(figsize=(8, 3.8))
    for k, (key, name) in enumerate([("sim_base", "base"), ("sim_adapted", "adapted"), ("sim_ceiling", "ceiling")]):
        ax.bar(x + (k - 1) * 0.27, [r[key] for r in rows], 0.27, label=name)
    ax.set_xticks(x, labels)
    ax.set_ylim(0.4, 1.08)
    ax.set_ylabel("speaker similarity to held-out target")
    ax.legend(loc="upper center", ncol=3, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--plan", default="high:auto low:auto far:auto",
                        help=f"space-separated VOICE:VARIANT,... items; variants from {sorted(VARIANTS)}")
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--minutes", type=float, default=7.0, help="training time cap per adapter")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", type=Path, default=Path(os.environ.get("TMPDIR", "/tmp")) / "chorus-bench-adapt")
    parser.add_argument("--name", default="adapt", help="results file name under bench/results/")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    plan = [(item.split(":")[0], item.split(":")[1].split(",") if ":" in item else ["pitch"])
            for item in args.plan.split()]
    bad = [v for _, vs in plan for v in vs if v not in VARIANTS]
    if bad:
        raise SystemExit(f"unknown variant(s) {bad}; valid: {sorted(VARIANTS)}")
    targets = _targets([name for name, _ in plan])

    from chorus.adapters.adapted import AdaptedVoice
    from chorus.adapters.evaluate import load_heldout
    from chorus.adapters.targets import HELDOUT_SENTENCES, write_base_set

    args.work.mkdir(parents=True, exist_ok=True)
    if not (args.work / "base" / "heldout" / "metadata.csv").is_file():
        write_base_set(args.work, args.seed)
    base = AdaptedVoice.base()
    base_audio = [base.synthesize(t, seed=args.seed + i) for i, t in enumerate(HELDOUT_SENTENCES)]
    assert load_heldout(args.work / "base" / "heldout").texts == list(HELDOUT_SENTENCES)
    rows = []
    t0 = time.monotonic()
    for target, (_, variants) in zip(targets, plan):
        rows += run_voice(target, variants, args.work, args, base_audio)
        write_results(args.name, {"machine": machine_info(), "args": {k: str(v) for k, v in vars(args).items()},
                                "runs": rows, "complete": False})
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    plot(rows, RESULTS_DIR / f"{args.name}.png")
    md = ("# Voice adapters: similarity, pitch, WER, DNSMOS\n\n" + markdown_table(rows, COLUMNS) +
          f"\n{len(rows)} runs in {time.monotonic() - t0:.0f} s. Command: python -m bench.adapt "
          + " ".join(sys.argv[1:] if argv is None else argv) + "\n")
    write_results(args.name, {"machine": machine_info(), "args": {k: str(v) for k, v in vars(args).items()},
                            "runs": rows, "complete": True}, md)
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
