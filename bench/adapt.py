"""Adapter benchmark: train voices from ~60 s of target speech, then score them on held-out sentences.

`python -m bench.adapt` (or `make bench-adapt`) generates the target voices (chorus.adapters.targets:
two WORLD transforms of the base voice and an espeak-ng voice), prepares each training folder, trains
a LoRA adapter per voice and variant, writes each as an artifact with its manifest, evaluates it
(similarity gap closed, median f0, WER, DNSMOS, gate) and prints one JSON line per run; results go to
bench/results/adapt.{json,md,png}. Variants (VARIANTS): `default` (TrainConfig's recipe: the pitch path
chosen from the measured formant ratio -- TD-PSOLA with a LoRA trained on clips moved onto the base
rendering's pitch contour, or resampling -- and a fitted length scale),
`profile-only` (the fitted profile on the bare base engine: what DSP alone does), and the recipes tried
on the way there (adapters/README.md tells what each did).
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

SESSION1 = {"lr": 2e-3, "max_noise_scale": 0.5}
"""The first recipe's rate and latent noise (before the contour-matched targets)."""

VARIANTS = {
    # The default recipe, and the same base engine with only the fitted profile (no LoRA) beside it.
    "default": {}, "profile-only": {}, "split-profile-only": {"pitch_path": "split"},
    # Contour-matched targets (chorus.adapters.trainset.TARGET_PITCH), explored in the second round.
    "psola": {"pitch_path": "psola"},
    "psola-contour-hi": {**SESSION1, "pitch_path": "psola"},
    "split-contour-hi": {**SESSION1, "pitch_path": "split"},
    "split-contour": {"pitch_path": "split"},
    "split-median-hi": {**SESSION1, "pitch_path": "split", "target_pitch": "median"},
    "split-env-hi": {**SESSION1, "pitch_path": "split", "target_pitch": "as-is", "mel_weight": 0.0, "stft_weight": 0.0,
                     "envelope_weight": 1.0},
    "split-env-mel-hi": {**SESSION1, "pitch_path": "split", "target_pitch": "as-is", "mel_weight": 0.2,
                         "stft_weight": 0.0, "envelope_weight": 1.0},
    # The first round: training clips at their own pitch.
    "s1-resample": {**SESSION1, "pitch_path": "resample"},
    "s1-psola": {**SESSION1, "pitch_path": "psola", "target_pitch": "as-is"},
    "s1-plain": {**SESSION1, "pitch_path": "none"},
    "s1-world": {**SESSION1, "pitch_path": "world"},
    "s1-adv": {**SESSION1, "pitch_path": "resample", "adv_weight": 0.2, "fm_weight": 1.0},
    "s1-world-adv": {**SESSION1, "pitch_path": "world", "adv_weight": 0.2, "fm_weight": 1.0},
    "s1-flow": {**SESSION1, "pitch_path": "resample", "targets": "decoder+flow", "flow_lr": 5e-4},
    "s1-r32": {**SESSION1, "pitch_path": "resample", "rank": 32, "alpha": 64.0, "lr": 3e-3},
    "s1-plain-flow": {**SESSION1, "pitch_path": "none", "targets": "decoder+flow", "flow_lr": 5e-4},
}
"""Training variants: TrainConfig overrides. `*profile-only` trains nothing: the base engine with the fitted
voice profile (pitch path and length scale), to show what the LoRA adds. A `-hi` suffix: the first
round's higher rate and latent noise (SESSION1)."""

COLUMNS = ["voice", "variant", "steps", "train_s", "sim_base", "sim_adapted", "sim_ceiling", "gap_closed",
           "f0_base", "f0_adapted", "f0_target", "wer_base", "wer_adapted", "dnsmos_base", "dnsmos_adapted",
           "dnsmos_target", "adapter_kb", "pitch_path", "pitch_factor", "resample_factor", "formant_ratio",
           "length_scale", "gate"]


def _targets(names: list[str]):
    from chorus.adapters.targets import DEFAULT_TARGETS

    known = {t.name: t for t in DEFAULT_TARGETS}
    bad = [n for n in names if n not in known]
    if bad:
        raise SystemExit(f"unknown voice(s) {bad}; valid: {sorted(known)}")
    return [known[n] for n in names]


def _current(heldout: Path) -> bool:
    """Whether a generated held-out folder exists and holds today's held-out sentences."""
    from chorus.adapters.evaluate import METADATA_CSV, load_heldout
    from chorus.adapters.targets import HELDOUT_SENTENCES

    return (heldout / METADATA_CSV).is_file() and load_heldout(heldout).texts == list(HELDOUT_SENTENCES)


def _row(voice_name: str, variant: str, result, prep_s: float, metrics, gate, size: int, trainset, out) -> dict:
    """One result row (a JSON line)."""
    m = metrics
    return {"voice": voice_name, "variant": variant, "steps": result.steps, "train_s": round(result.seconds, 1),
            "align_prep_s": round(prep_s, 1), "sim_base": m.similarity_base, "sim_adapted": m.similarity_adapted,
            "sim_ceiling": m.similarity_ceiling, "gap_closed": m.gap_closed(), "f0_base": m.f0_base,
            "f0_adapted": m.f0_adapted, "f0_target": m.f0_target, "wer_base": m.wer_base,
            "wer_adapted": m.wer_adapted, "dnsmos_base": m.dnsmos_base, "dnsmos_adapted": m.dnsmos_adapted,
            "dnsmos_target": m.dnsmos_target, "adapter_kb": round(size / 1024, 1),
            "pitch_factor": result.profile.pitch_factor, "resample_factor": result.profile.resample_factor,
            "length_scale": result.profile.length_scale,
            "pitch_path": trainset.pitch_path, "formant_ratio": trainset.formant_ratio,
            "gate": "pass" if gate.passed else "fail", "gate_reasons": gate.reasons,
            "final_loss": sum(result.losses[-50:]) / len(result.losses[-50:]) if result.losses else None,
            "artifact": str(out) if out else None}


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
    from chorus.adapters.train import TrainConfig, TrainResult, profile_of, train_adapter
    from chorus.adapters.trainset import build_trainset, load_clips
    from chorus.engine.voice import load_base_voice
    from chorus.engine.weights import load_vits_model

    root = work / target.name
    stale = not _current(root / "heldout")
    if stale:
        shutil.rmtree(root, ignore_errors=True)
        write_target_set(work, target, seed=args.seed)
    prepared = work / "prepared" / target.name
    if stale or not (prepared / "dataset.json").is_file():
        prepare_dataset(str(root / "train"), prepared, overwrite=True)
    heldout = load_heldout(root / "heldout")
    reference = reference_scores(heldout, base_audio, seed=args.seed)
    voice, rows = load_base_voice(), []
    for variant in variants:
        caps = {k: v for k, v in (("steps", args.steps), ("max_minutes", args.minutes)) if v is not None}
        cfg = TrainConfig(seed=args.seed, threads=args.threads, **caps, **VARIANTS[variant])
        ckpt = work / "checkpoints" / f"{target.name}-{variant}"
        shutil.rmtree(ckpt, ignore_errors=True)  # a benchmark run starts fresh
        t0 = time.monotonic()
        trainset = build_trainset(load_clips(prepared), load_vits_model(voice), voice, cfg.pitch_path,
                                  cfg.target_pitch)
        prep_s = time.monotonic() - t0
        out = work / "artifacts" / f"{target.name}-{variant}"
        if variant.endswith("profile-only"):
            result = TrainResult(None, profile_of(trainset), cfg, 0, 0.0)
            engine, size = load_vits_model(voice), 0
        else:
            result = train_adapter(prepared, cfg, checkpoint_dir=ckpt, trainset=trainset, progress=not args.quiet)
            save_peft_adapter(result.peft_model, out)
            size = (out / ADAPTER_WEIGHTS_FILE).stat().st_size
            engine = merged_engine(result.peft_model)
        adapted = AdaptedVoice(engine, result.profile, voice)
        metrics, gate, _ = evaluate_voice(adapted, heldout, reference, adapter_bytes=size, seed=args.seed)
        if result.peft_model is not None:
            build_manifest(out, tenant="bench", voice=f"{target.name}-{variant}", base_fingerprint=voice.fingerprint,
                           dataset_hash=load_prepared(prepared).dataset_hash,
                           training={**cfg.model_dump(), "steps_done": result.steps, "seconds": result.seconds},
                           quality=QualityRecord(metrics=metrics, thresholds=GateThresholds(), gate=gate),
                           profile={**result.profile.model_dump()})
        print(format_metrics(metrics, gate), flush=True)
        row = _row(target.name, variant, result, prep_s, metrics, gate, size, trainset,
                   out if result.peft_model is not None else None)
        emit(row)
        rows.append(row)
    return rows


def _voice_job(target, variants: list[str], work: Path, args, base_audio) -> list[dict]:
    """run_voice in a worker process (--jobs > 1)."""
    torch.set_num_threads(args.threads)
    return run_voice(target, variants, work, args, base_audio)


def plot(rows: list[dict], path: Path) -> None:
    """Grouped bars: similarity of base, adapted and ceiling per voice/variant."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    labels = [f"{r['voice']}/{r['variant']}" for r in rows]
    x = np.arange(len(rows))
    fig, ax = plt.subplots(figsize=(max(8.0, 0.9 * len(rows)), 4.4))
    for k, (key, name) in enumerate([("sim_base", "base"), ("sim_adapted", "adapted"), ("sim_ceiling", "ceiling")]):
        ax.bar(x + (k - 1) * 0.27, [r[key] for r in rows], 0.27, label=name)
    ax.set_xticks(x, labels, rotation=25, ha="right", fontsize=8)
    ax.set_ylim(0.4, 1.08)
    ax.set_ylabel("speaker similarity to held-out target")
    ax.legend(loc="upper center", ncol=3, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--plan", default="high:default,profile-only low:default,profile-only far:default",
                        help=f"space-separated VOICE:VARIANT,... items; variants from {sorted(VARIANTS)}")
    parser.add_argument("--steps", type=int, help="optimizer steps per adapter (default: TrainConfig's)")
    parser.add_argument("--minutes", type=float, help="training time cap per adapter (default: TrainConfig's)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads per training run")
    parser.add_argument("--jobs", type=int, default=1, help="voices trained at once, one process each")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", type=Path, default=Path(os.environ.get("TMPDIR", "/tmp")) / "chorus-bench-adapt")
    parser.add_argument("--name", default="adapt", help="results file name under bench/results/")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    plan = [(item.split(":")[0], item.split(":")[1].split(",") if ":" in item else ["default"])
            for item in args.plan.split()]
    bad = [v for _, vs in plan for v in vs if v not in VARIANTS]
    if bad:
        raise SystemExit(f"unknown variant(s) {bad}; valid: {sorted(VARIANTS)}")
    targets = _targets([name for name, _ in plan])

    from chorus.adapters.adapted import AdaptedVoice
    from chorus.adapters.evaluate import load_heldout
    from chorus.adapters.targets import HELDOUT_SENTENCES, write_base_set

    args.work.mkdir(parents=True, exist_ok=True)
    if not _current(args.work / "base" / "heldout"):
        write_base_set(args.work, args.seed)
    base = AdaptedVoice.base()
    base_audio = [base.synthesize(t, seed=args.seed + i) for i, t in enumerate(HELDOUT_SENTENCES)]
    assert load_heldout(args.work / "base" / "heldout").texts == list(HELDOUT_SENTENCES)
    rows: list[dict] = []
    t0 = time.monotonic()
    jobs = [(target, variants) for target, (_, variants) in zip(targets, plan)]

    def done(voice_rows: list[dict]) -> None:
        rows.extend(voice_rows)
        write_results(args.name, {"machine": machine_info(), "args": {k: str(v) for k, v in vars(args).items()},
                                  "runs": rows, "complete": False})

    if args.jobs > 1:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(args.jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
            futures = [pool.submit(_voice_job, target, variants, args.work, args, base_audio)
                       for target, variants in jobs]
            for future in futures:
                done(future.result())
    else:
        for target, variants in jobs:
            done(run_voice(target, variants, args.work, args, base_audio))
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
