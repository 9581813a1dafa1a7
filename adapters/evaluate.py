"""Evaluation of an adapted voice on a tenant's held-out clips: similarity, f0, WER, DNSMOS, and the gate.

Speaker similarity is leave-one-out: clip i of a voice is compared with the mean Resemblyzer embedding of
the held-out target clips other than i (for base and adapted speech of sentence i as for the target clip
i itself, which gives the ceiling), so no score compares a clip with itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from chorus.adapters.adapted import AdaptedVoice
from chorus.adapters.gate import GateResult, GateThresholds, QualityMetrics, evaluate_gate
from chorus.adapters.pitch import median_f0

METADATA_CSV = "metadata.csv"


@dataclass
class HeldOut:
    """Held-out target clips: transcripts and audio at one sample rate."""

    texts: list[str]
    audio: list[np.ndarray]
    sample_rate: int


@dataclass
class VoiceScores:
    """Per-voice measurements on the held-out sentences."""

    similarity: float
    f0: float
    wer: float
    dnsmos: float


def load_heldout(folder: Path | str) -> HeldOut:
    """Held-out clips from a prepared dataset (metadata.jsonl) or an LJSpeech-style `metadata.csv` folder."""
    from chorus.adapters.trainset import load_clips

    root = Path(folder)
    if (root / METADATA_CSV).is_file():
        rows = [line.split("|", 1) for line in (root / METADATA_CSV).read_text("utf-8").splitlines() if line.strip()]
        clips = [(text, *sf.read(root / name, dtype="float32")) for name, text in rows]
    else:
        clips = load_clips(root)
    rates = {sr for _, _, sr in clips}
    if len(rates) != 1 or len(clips) < 2:
        raise ValueError(f"{root}: need at least 2 held-out clips at one sample rate, got {len(clips)} at {rates}")
    return HeldOut([t for t, _, _ in clips], [a for _, a, _ in clips], rates.pop())


def _loo_similarity(embeddings: list[np.ndarray], target: list[np.ndarray]) -> float:
    """Mean cosine of embedding i to the normalised mean of the target embeddings other than i."""
    sims = []
    for i, e in enumerate(embeddings):
        ref = np.mean([t for j, t in enumerate(target) if j != i], axis=0)
        sims.append(float(e @ ref / (np.linalg.norm(e) * np.linalg.norm(ref))))
    return float(np.mean(sims))


def _wer(texts: list[str], audio: list[np.ndarray], sr: int) -> float:
    """Corpus WER: all word errors over all reference words."""
    from chorus.quality.whisper import audio_wer

    results = [audio_wer(t, a, sr) for t, a in zip(texts, audio)]
    errors = sum(r.substitutions + r.deletions + r.insertions for r in results)
    return errors / sum(r.reference_words for r in results)


def _dnsmos(audio: list[np.ndarray], sr: int) -> float:
    from chorus.quality.dnsmos import dnsmos

    return float(np.mean([dnsmos(a, sr).ovrl for a in audio]))


def score_voice(audio: list[np.ndarray], sr: int, heldout: HeldOut, target_emb: list[np.ndarray],
                with_wer: bool = True) -> VoiceScores:
    """Similarity to the target, median f0, WER and DNSMOS of one voice's renderings of the held-out texts."""
    from chorus.quality.similarity import embed_speaker

    emb = [embed_speaker(a, sr) for a in audio]
    return VoiceScores(similarity=_loo_similarity(emb, target_emb), f0=median_f0(audio, sr),
                       wer=_wer(heldout.texts, audio, sr) if with_wer else float("nan"), dnsmos=_dnsmos(audio, sr))


@dataclass
class Reference:
    """What does not depend on the adapter: target embeddings and the base and target voices' scores."""

    target_emb: list[np.ndarray]
    base: VoiceScores
    target: VoiceScores
    base_audio: list[np.ndarray]


def reference_scores(heldout: HeldOut, base_audio: list[np.ndarray] | None = None, seed: int = 0) -> Reference:
    """Score the base voice (synthesised unless given) and the target clips on the held-out set once."""
    from chorus.quality.similarity import embed_speaker

    sr = heldout.sample_rate
    target_emb = [embed_speaker(a, sr) for a in heldout.audio]
    if base_audio is None:
        base = AdaptedVoice.base()
        base_audio = [base.synthesize(t, seed=seed + i) for i, t in enumerate(heldout.texts)]
    return Reference(target_emb, score_voice(base_audio, sr, heldout, target_emb),
                     score_voice(heldout.audio, sr, heldout, target_emb, with_wer=False), base_audio)


def evaluate_voice(adapted: AdaptedVoice, heldout: HeldOut, reference: Reference | None = None,
                   adapter_bytes: int | None = None, thresholds: GateThresholds | None = None,
                   seed: int = 0) -> tuple[QualityMetrics, GateResult, list[np.ndarray]]:
    """Measure the adapted voice against base and target on the held-out set: metrics, verdict, audio."""
    sr = heldout.sample_rate
    ref = reference or reference_scores(heldout, seed=seed)
    adapted_audio = [adapted.synthesize(t, seed=seed + i) for i, t in enumerate(heldout.texts)]
    b, t = ref.base, ref.target
    a = score_voice(adapted_audio, sr, heldout, ref.target_emb)
    metrics = QualityMetrics(similarity_base=b.similarity, similarity_adapted=a.similarity,
                             similarity_ceiling=t.similarity, wer_base=b.wer, wer_adapted=a.wer,
                             dnsmos_base=b.dnsmos, dnsmos_adapted=a.dnsmos, dnsmos_target=t.dnsmos,
                             f0_base=b.f0, f0_adapted=a.f0, f0_target=t.f0, adapter_bytes=adapter_bytes,
                             heldout_clips=len(heldout.texts))
    return metrics, evaluate_gate(metrics, thresholds), adapted_audio


def format_metrics(m: QualityMetrics, gate: GateResult) -> str:
    """A small plain-text table of one evaluation."""
    gap = m.gap_closed()
    rows = [("", "base", "adapted", "target"),
            ("similarity", f"{m.similarity_base:.3f}", f"{m.similarity_adapted:.3f}", f"{m.similarity_ceiling:.3f}"),
            ("median f0 (Hz)", f"{m.f0_base:.1f}", f"{m.f0_adapted:.1f}", f"{m.f0_target:.1f}"),
            ("WER", f"{m.wer_base:.1%}", f"{m.wer_adapted:.1%}", ""),
            ("DNSMOS OVRL", f"{m.dnsmos_base:.2f}", f"{m.dnsmos_adapted:.2f}", f"{m.dnsmos_target:.2f}")]
    lines = ["  ".join(c.ljust(15) for c in r) for r in rows]
    lines.append(f"gap closed {gap:.0%}" if gap is not None else "gap closed: n/a")
    lines.append("gate: PASS" if gate.passed else "gate: FAIL\n  " + "\n  ".join(gate.reasons))
    return "\n".join(lines)
