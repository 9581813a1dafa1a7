"""Voice-reach bench: the default adapter recipe on a grid of target voices from independent generators.

`python -m bench.adapt_grid` (or `make bench-adapt-grid`) makes target voices on a grid of pitch factors
(F0_FACTORS, x the base voice's median f0) and two formant relations (FORMANT_RULES: formants moving with
the pitch, formant = f0^0.5, and against it, f0^-0.3), each with a tempo drawn in 0.9-1.1 (seeded per voice),
from two generators that share no DSP:
- `world` (chorus.adapters.targets.WorldTarget: WORLD vocoder, pYIN f0, warped CheapTrick envelope): the
  generator the recipe was tuned on (the adapters bench's high and low voices);
- `lpc` (chorus.adapters.generators.LpcTarget: resampled tempo, LPC envelope warp of the residual,
  TD-PSOLA pitch): HELD OUT -- never used for a tuning decision, reported apart;
plus espeak-ng voices and variants as the far end (ESPEAK_VOICES). Per voice: ~60 s of training clips and
12 held-out clips, prepared and trained with the default recipe (TrainConfig defaults; --steps for quick
runs), evaluated with chorus.adapters.evaluate.evaluate_voice (similarity gap closed, f0 error, WER on the
fixed reading list, DNSMOS, each beside the target clips' own, and the gate), with the time of each stage.

Every finished voice is appended as a JSON line to bench/results/<name>.jsonl (and printed); a rerun skips
the voices whose line is there for the same target, seed and recipe (resumable; --fresh ignores them).
bench/results/<name>.{json,md,png} are rebuilt from the lines after every voice: the table, a heat map per
generator (pitch factor x formant factor -> gap closed), the held-out generator and the far end apart.
"""

from __future__ import annotations

import argparse
import fnmatch
import hashlib
import json
import os
import shutil
import sys
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

# Idle OpenMP threads must sleep, not spin: on this shared 2-core machine spinning made torch ~10x slower.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from bench.common import RESULTS_DIR, emit, machine_info, markdown_table, write_results  # noqa: E402

F0_FACTORS = (0.7, 0.85, 1.2, 1.45, 1.7, 2.0)
"""Pitch factors (x the base voice's ~90 Hz): a lower man's voice to most women's and some children's."""

FORMANT_RULES = {"with": 0.5, "against": -0.3}
"""Formant factor = f0_factor ** exponent: formants following the pitch (as between speakers of different
size) or moving against it (a high voice with a long vocal tract, a low one with a short)."""

TUNING, HELD_OUT, FAR = "world", "lpc", "espeak"
GENERATORS = (TUNING, HELD_OUT)
"""The grid's generators; HELD_OUT's voices never inform a tuning decision and are reported apart."""

TEMPO_RANGE = (0.9, 1.1)

ESPEAK_VOICES = (("espeak-m3", "en-us+m3", None), ("espeak-f2", "en-us+f2", None), ("espeak-f4-p70", "en-us+f4", 70))
"""The far end: espeak-ng's formant synthesiser (name, voice+variant, pitch)."""

FULL_RUN = "make bench-adapt-grid  (python -m bench.adapt_grid --jobs 2 --threads 1)"

COLUMNS = ["voice", "f0_factor", "formant_factor", "tempo", "steps", "gap_closed", "f0_target", "f0_adapted",
           "f0_err", "wer_base", "wer_adapted", "wer_heldout_target", "dnsmos_adapted", "dnsmos_target",
           "pitch_path", "formant_ratio", "train_s", "total_s", "gate"]


@dataclass(frozen=True)
class GridVoice:
    """One target voice of the grid."""

    name: str
    generator: str
    target: object  # WorldTarget | LpcTarget | EspeakTarget
    f0_factor: float | None = None
    formant_rule: str | None = None
    formant_factor: float | None = None
    tempo: float | None = None

    @property
    def group(self) -> str:
        return {TUNING: "tuning", HELD_OUT: "held-out"}.get(self.generator, "far")


def voice_tempo(name: str, seed: int) -> float:
    """The voice's tempo, drawn in TEMPO_RANGE from its name and the seed (stable across runs and machines)."""
    rng = np.random.default_rng([seed, zlib.crc32(name.encode())])
    return round(float(rng.uniform(*TEMPO_RANGE)), 3)


def grid_voices(seed: int = 0) -> list[GridVoice]:
    """Every voice of the grid: generator x pitch factor x formant rule, then the espeak-ng far end."""
    from chorus.adapters.generators import LpcTarget
    from chorus.adapters.targets import EspeakTarget, WorldTarget

    classes = {TUNING: WorldTarget, HELD_OUT: LpcTarget}
    voices = []
    for generator in GENERATORS:
        for rule, exponent in FORMANT_RULES.items():
            for f0 in F0_FACTORS:
                name = f"{generator}-f{f0:.2f}-{rule}"
                formant, tempo = round(f0 ** exponent, 3), voice_tempo(name, seed)
                target = classes[generator](name=name, f0_factor=f0, formant_factor=formant, tempo=tempo)
                voices.append(GridVoice(name, generator, target, f0, rule, formant, tempo))
    for name, espeak_voice, pitch in ESPEAK_VOICES:
        voices.append(GridVoice(name, FAR, EspeakTarget(name=name, espeak_voice=espeak_voice, pitch=pitch)))
    return voices


def _config(args):
    from chorus.adapters.train import TrainConfig

    caps = {k: v for k, v in (("steps", args.steps), ("max_minutes", args.minutes)) if v is not None}
    return TrainConfig(seed=args.seed, threads=args.threads, **caps)


def result_key(gv: GridVoice, cfg, seed: int) -> str:
    """What a result depends on: the target, the seed and the recipe (threads and caps aside)."""
    recipe = cfg.model_dump(exclude={"threads", "max_minutes", "checkpoint_every"})
    blob = json.dumps([type(gv.target).__name__, gv.target.model_dump(), seed, recipe], sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _targets_current(root: Path, spec: dict) -> bool:
    from chorus.adapters.evaluate import METADATA_CSV
    from chorus.adapters.targets import HELDOUT_SENTENCES, TRAIN_SENTENCES

    try:
        same = json.loads((root / "target.json").read_text()) == spec
    except (OSError, ValueError):
        return False
    counts = [len((root / sub / METADATA_CSV).read_text().splitlines()) if (root / sub / METADATA_CSV).is_file() else -1
              for sub in ("train", "heldout")]
    return same and counts == [len(TRAIN_SENTENCES), len(HELDOUT_SENTENCES)]


def run_grid_voice(gv: GridVoice, work: Path, args, base_audio) -> dict:
    """Generate, prepare, train and evaluate one grid voice with the default recipe; returns its result row."""
    from chorus.adapters.adapted import AdaptedVoice
    from chorus.adapters.artifact import ADAPTER_WEIGHTS_FILE, save_peft_adapter
    from chorus.adapters.dataset import prepare_dataset
    from chorus.adapters.evaluate import evaluate_voice, format_metrics, load_heldout, reference_scores
    from chorus.adapters.lora import merged_engine
    from chorus.adapters.targets import write_target_set
    from chorus.adapters.train import train_adapter
    from chorus.adapters.trainset import build_trainset, load_clips
    from chorus.engine.voice import load_base_voice
    from chorus.engine.weights import load_vits_model

    torch.set_num_threads(args.threads)
    cfg = _config(args)
    t_start = time.monotonic()
    root, prepared = work / "voices" / gv.name, work / "prepared" / gv.name
    spec = {"kind": type(gv.target).__name__, "target": gv.target.model_dump(), "seed": args.seed}
    gen_s = prep_s = 0.0
    if not _targets_current(root, spec):
        shutil.rmtree(root, ignore_errors=True)
        shutil.rmtree(prepared, ignore_errors=True)
        t0 = time.monotonic()
        write_target_set(root.parent, gv.target, seed=args.seed)
        (root / "target.json").write_text(json.dumps(spec))
        gen_s = time.monotonic() - t0
    if not (prepared / "dataset.json").is_file():
        t0 = time.monotonic()
        prepare_dataset(str(root / "train"), prepared, overwrite=True)
        prep_s = time.monotonic() - t0
    heldout = load_heldout(root / "heldout")
    t0 = time.monotonic()
    reference = reference_scores(heldout, base_audio, seed=args.seed)
    ref_s = time.monotonic() - t0
    voice = load_base_voice()
    t0 = time.monotonic()
    trainset = build_trainset(load_clips(prepared), load_vits_model(voice), voice, cfg.pitch_path, cfg.target_pitch)
    align_s = time.monotonic() - t0
    ckpt, out = work / "checkpoints" / gv.name, work / "artifacts" / gv.name
    shutil.rmtree(ckpt, ignore_errors=True)  # a bench run trains afresh
    result = train_adapter(prepared, cfg, checkpoint_dir=ckpt, trainset=trainset, progress=not args.quiet)
    save_peft_adapter(result.peft_model, out)
    size = (out / ADAPTER_WEIGHTS_FILE).stat().st_size
    adapted = AdaptedVoice(merged_engine(result.peft_model), result.profile, voice)
    t0 = time.monotonic()
    m, gate, _ = evaluate_voice(adapted, heldout, reference, adapter_bytes=size, seed=args.seed)
    eval_s = time.monotonic() - t0
    print(f"{gv.name}:\n{format_metrics(m, gate)}", flush=True)
    shutil.rmtree(ckpt, ignore_errors=True)
    return {"voice": gv.name, "generator": gv.generator, "group": gv.group, "held_out": gv.generator == HELD_OUT,
            "key": result_key(gv, cfg, args.seed), "seed": args.seed, "target": spec["target"],
            "f0_factor": gv.f0_factor, "formant_rule": gv.formant_rule, "formant_factor": gv.formant_factor,
            "tempo": gv.tempo, "steps": result.steps, "train_s": round(result.seconds, 1),
            "gen_s": round(gen_s, 1), "prep_s": round(prep_s, 1), "ref_s": round(ref_s, 1),
            "align_s": round(align_s, 1), "eval_s": round(eval_s, 1), "total_s": round(time.monotonic() - t_start, 1),
            "sim_base": m.similarity_base, "sim_adapted": m.similarity_adapted, "sim_ceiling": m.similarity_ceiling,
            "gap_closed": m.gap_closed(), "f0_base": m.f0_base, "f0_adapted": m.f0_adapted, "f0_target": m.f0_target,
            "f0_err": abs(m.f0_adapted / m.f0_target - 1) if m.f0_adapted and m.f0_target else None,
            "wer_base": m.wer_base, "wer_adapted": m.wer_adapted, "wer_words": m.wer_words,
            "wer_heldout_base": m.wer_heldout_base, "wer_heldout_adapted": m.wer_heldout_adapted,
            "wer_heldout_target": m.wer_heldout_target, "heldout_words": m.heldout_words,
            "heldout_clips": len(heldout.texts), "dnsmos_base": m.dnsmos_base, "dnsmos_adapted": m.dnsmos_adapted,
            "dnsmos_target": m.dnsmos_target, "adapter_kb": round(size / 1024, 1),
            "pitch_path": trainset.pitch_path, "pitch_factor": result.profile.pitch_factor,
            "formant_ratio": trainset.formant_ratio, "length_scale": result.profile.length_scale,
            "gate": "pass" if gate.passed else "fail", "gate_reasons": gate.reasons,
            "final_loss": sum(result.losses[-50:]) / len(result.losses[-50:]) if result.losses else None}


def load_rows(path: Path) -> list[dict]:
    """Result lines of a previous run (a torn last line is ignored)."""
    rows = []
    if path.is_file():
        for line in path.read_text("utf-8").splitlines():
            try:
                rows.append(json.loads(line))
            except ValueError:
                continue
    return rows


def _cells(rows: list[dict], generator: str) -> np.ndarray:
    """gap closed on the grid: rows FORMANT_RULES, columns F0_FACTORS (NaN: not run)."""
    grid = np.full((len(FORMANT_RULES), len(F0_FACTORS)), np.nan)
    for r in rows:
        if r["generator"] == generator and r.get("gap_closed") is not None:
            grid[list(FORMANT_RULES).index(r["formant_rule"]), F0_FACTORS.index(r["f0_factor"])] = r["gap_closed"]
    return grid


def plot(rows: list[dict], path: Path, title: str) -> None:
    """One heat map per generator: pitch factor x formant relation (cells say the formant factor) -> gap closed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import TwoSlopeNorm

    fig, axes = plt.subplots(1, len(GENERATORS), figsize=(14, 3.6), squeeze=False)
    norm = TwoSlopeNorm(vmin=-0.5, vcenter=0.7, vmax=1.0)
    for ax, generator in zip(axes[0], GENERATORS):
        grid = _cells(rows, generator)
        im = ax.imshow(np.clip(grid, -0.5, 1.0), cmap="RdYlGn", norm=norm, aspect="auto")
        for i, (rule, exponent) in enumerate(FORMANT_RULES.items()):
            for j, f0 in enumerate(F0_FACTORS):
                text = "–" if np.isnan(grid[i, j]) else f"{grid[i, j]:.0%}"
                ax.text(j, i, f"{text}\nfmt ×{f0 ** exponent:.2f}", ha="center", va="center", fontsize=8)
        ax.set_xticks(range(len(F0_FACTORS)), [f"×{f:g}" for f in F0_FACTORS])
        ax.set_yticks(range(len(FORMANT_RULES)), [f"{k}\nfmt = f0^{v:g}" for k, v in FORMANT_RULES.items()], fontsize=8)
        ax.set_xlabel("pitch factor (target / base median f0)")
        ax.set_title(f"{generator}" + (" — HELD OUT" if generator == HELD_OUT else " — tuning"), fontsize=10)
    fig.colorbar(im, ax=axes[0].tolist(), label="similarity gap closed (gate: 70%)")
    fig.suptitle(title, fontsize=10)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)


def _text_grid(rows: list[dict], generator: str) -> str:
    grid = _cells(rows, generator)
    lines = ["| formant \\ f0 | " + " | ".join(f"×{f:g}" for f in F0_FACTORS) + " |",
             "|---|" + "---|" * len(F0_FACTORS)]
    for i, (rule, exponent) in enumerate(FORMANT_RULES.items()):
        cells = ["–" if np.isnan(v) else f"{v:.0%}" for v in grid[i]]
        lines.append(f"| {rule} (f0^{exponent:g}) | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _summary(rows: list[dict]) -> str:
    if not rows:
        return "no voices run\n"
    gaps = [r["gap_closed"] for r in rows if r.get("gap_closed") is not None]
    passed = sum(r["gate"] == "pass" for r in rows)
    return (f"{len(rows)} voices: gate passed {passed}/{len(rows)}; gap closed median {np.median(gaps):.0%}, "
            f"min {min(gaps):.0%}; f0 error median {np.median([r['f0_err'] for r in rows]):.1%}\n")


def estimate(rows: list[dict], default_steps: int, jobs: int, voices: int, cap_s: float) -> str:
    """The full run's cost from the measured voices: fixed stages + training time per step x the default steps
    (at most the training time cap, where the run would stop short of its steps)."""
    if not rows:
        return ""
    fixed = float(np.median([r["total_s"] - r["train_s"] for r in rows]))
    per_step = float(np.median([r["train_s"] / r["steps"] for r in rows]))
    train = min(per_step * default_steps, cap_s)
    capped = (f" -- the {cap_s / 60:.0f} min cap: only ~{cap_s / per_step:.0f} of {default_steps} steps at this rate, "
              "so the full run wants a quieter machine or --minutes" if per_step * default_steps > cap_s else "")
    per_voice = fixed + train
    return (f"Measured per voice (median of {len(rows)}): {fixed:.0f} s outside training (targets, preparation, "
            f"references, alignment, evaluation; the first voice of a process also pays the base voice's reading-"
            f"list WER once) and {per_step:.2f} s per training step, so ~{per_voice / 60:.0f} min per voice at "
            f"{default_steps} steps{capped}. The full grid ({voices} voices) at --jobs {jobs}: "
            f"~{voices * per_voice / jobs / 3600:.1f} h, if {jobs} jobs get {jobs} cores at this load.\n")


def report(rows: list[dict], args, default_steps: int, grid: list[GridVoice], elapsed: float) -> str:
    from chorus.adapters.train import TrainConfig

    quick = any(r["steps"] < default_steps for r in rows)
    order = {gv.name: i for i, gv in enumerate(grid)}
    rows = sorted(rows, key=lambda r: order.get(r["voice"], 1 << 30))
    md = ["# Voice reach: the default adapter recipe on a grid of target voices\n"]
    if quick:
        md.append(f"**Quick run: {sorted({r['steps'] for r in rows})} training steps instead of the recipe's "
                  f"{default_steps}, {len(rows)} of {len(grid)} voices. It validates the harness end to end; "
                  f"its numbers do not measure the recipe.** The full run: `{FULL_RUN}`.\n")
    else:
        md.append(f"Command for the full run: `{FULL_RUN}`.\n")
    md.append("Voices: pitch factor x the base voice's median f0; formant factor = f0^0.5 (`with`) or f0^-0.3 "
              "(`against`); tempo drawn in 0.9-1.1 per voice (seeded). gap closed = (sim adapted - sim base) / "
              "(sim target clips - sim base), leave-one-out Resemblyzer over the held-out clips; f0_err = |adapted / "
              "target median f0 - 1|; WER: the fixed reading list (wer_words words) read by base and adapted voice, "
              "wer_heldout_target the target clips' own WER on the held-out texts (heldout_words words); DNSMOS OVRL "
              "over the held-out sentences beside the target clips' own. Times in s on this machine "
              f"(machine info in the .json).\n")
    sections = [("Tuning generator: `world` (WORLD vocoder)", [r for r in rows if r["group"] == "tuning"], TUNING),
                ("Held-out generator: `lpc` (LPC envelope warp + TD-PSOLA) — never used for a tuning decision",
                 [r for r in rows if r["group"] == "held-out"], HELD_OUT),
                ("Far end: espeak-ng voices", [r for r in rows if r["group"] == "far"], None)]
    for title, group_rows, generator in sections:
        md.append(f"## {title}\n")
        md.append(_summary(group_rows))
        if generator and group_rows:
            md.append("\nGap closed, pitch factor x formant relation:\n\n" + _text_grid(group_rows, generator))
        if group_rows:
            md.append("\n" + markdown_table(group_rows, COLUMNS))
            fails = [f"- {r['voice']}: " + "; ".join(r["gate_reasons"]) for r in group_rows if r["gate"] != "pass"]
            if fails:
                md.append("\nGate refusals:\n" + "\n".join(fails) + "\n")
        md.append("")
    if quick:
        md.append("## Cost\n")
        md.append(estimate(rows, default_steps, 2, len(grid), TrainConfig().max_minutes * 60))
    if not args.report:
        md.append(f"\nThis invocation: {elapsed:.0f} s. Command: python -m bench.adapt_grid "
                  + " ".join(sys.argv[1:]) + "\n")
    else:
        md.append(f"\nRebuilt from {args.name}.jsonl (per-voice times above; totals in total_s).\n")
    return "\n".join(md)


def _select(grid: list[GridVoice], only: str | None) -> list[GridVoice]:
    if not only:
        return grid
    patterns = [p for p in only.replace(",", " ").split() if p]
    chosen = [gv for gv in grid if any(fnmatch.fnmatchcase(gv.name, p) for p in patterns)]
    if not chosen:
        raise SystemExit(f"--only {only!r} matches no voice; voices: {' '.join(gv.name for gv in grid)}")
    return chosen


def _job(gv: GridVoice, work: Path, args, base_audio) -> dict:
    """run_grid_voice in a worker process (--jobs > 1)."""
    torch.set_num_threads(args.threads)
    return run_grid_voice(gv, work, args, base_audio)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", help="voices to run: names or shell patterns, comma or space separated "
                                       "(e.g. 'world-f0.70-*,world-f2.00-*'); default: the whole grid")
    parser.add_argument("--list", action="store_true", help="print the grid's voices and exit")
    parser.add_argument("--steps", type=int, help="optimizer steps per voice (default: TrainConfig's)")
    parser.add_argument("--minutes", type=float, help="training time cap per voice (default: TrainConfig's)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per voice")
    parser.add_argument("--jobs", type=int, default=1, help="voices at once, one process each")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", type=Path,
                        default=Path(os.environ.get("TMPDIR", "/tmp")) / "chorus-bench-adapt-grid")
    parser.add_argument("--name", default="adapt-grid", help="results file name under bench/results/")
    parser.add_argument("--fresh", action="store_true", help="rerun voices whose results exist")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.add_argument("--report", action="store_true", help="only rebuild <name>.{json,md,png} from <name>.jsonl")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    grid = grid_voices(args.seed)
    if args.list:
        for gv in grid:
            print(gv.name, json.dumps(gv.target.model_dump()))
        return 0
    from chorus.adapters.train import TrainConfig

    cfg, default_steps = _config(args), TrainConfig().steps
    lines = RESULTS_DIR / f"{args.name}.jsonl"
    keys = {gv.name: result_key(gv, cfg, args.seed) for gv in grid}
    done_rows = {r["voice"]: r for r in load_rows(lines) if keys.get(r.get("voice")) == r.get("key")}
    todo = [] if args.report else [gv for gv in _select(grid, args.only) if args.fresh or gv.name not in done_rows]
    print(f"{len(todo)} voice(s) to run, {len(done_rows)} with results already: "
          + " ".join(gv.name for gv in todo), flush=True)

    from chorus.adapters.adapted import AdaptedVoice
    from chorus.adapters.targets import HELDOUT_SENTENCES

    t0 = time.monotonic()
    args.work.mkdir(parents=True, exist_ok=True)
    base = AdaptedVoice.base()
    base_audio = [base.synthesize(t, seed=args.seed + i) for i, t in enumerate(HELDOUT_SENTENCES)] if todo else []
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)

    def finish(row: dict) -> None:
        emit(row)
        with lines.open("a", encoding="utf-8") as f:
            f.write(json.dumps(row, default=lambda v: v.item() if hasattr(v, "item") else str(v)) + "\n")
        done_rows[row["voice"]] = row
        write_all()

    def write_all() -> None:
        rows = list(done_rows.values())
        payload = {"machine": machine_info(), "args": {k: str(v) for k, v in vars(args).items()},
                   "held_out_generator": HELD_OUT, "grid": [gv.name for gv in grid], "runs": rows,
                   "complete": all(gv.name in done_rows for gv in grid)}
        write_results(args.name, payload, report(rows, args, default_steps, grid, time.monotonic() - t0))
        if rows:
            plot(rows, RESULTS_DIR / f"{args.name}.png",
                 f"gap closed per voice ({', '.join(sorted({str(r['steps']) for r in rows}))} steps)")

    if args.jobs > 1 and len(todo) > 1:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor, as_completed

        with ProcessPoolExecutor(args.jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
            futures = [pool.submit(_job, gv, args.work, args, base_audio) for gv in todo]
            for future in as_completed(futures):
                finish(future.result())
    else:
        for gv in todo:
            finish(run_grid_voice(gv, args.work, args, base_audio))
    write_all()
    print((RESULTS_DIR / f"{args.name}.md").read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
