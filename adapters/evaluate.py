"""Evaluation of an adapted voice on a tenant's held-out clips: similarity, f0, WER, DNSMOS, and the gate.

Speaker similarity is leave-one-out: clip i of a voice is compared with the mean Resemblyzer embedding of
the held-out target clips other than i (for base and adapted speech of sentence i as for the target clip
i itself, which gives the ceiling), so no score compares a clip with itself.
"""

from __future__ import annotations

import functools
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


def _wer_counts(texts: list[str], audio: list[np.ndarray], sr: int) -> tuple[int, int]:
    """(word errors, reference words) over a set of clips."""
    from chorus.quality.whisper import audio_wer

    results = [audio_wer(t, a, sr) for t, a in zip(texts, audio)]
    return sum(r.substitutions + r.deletions + r.insertions for r in results), sum(r.reference_words for r in results)


def _wer(texts: list[str], audio: list[np.ndarray], sr: int) -> float:
    """Corpus WER: all word errors over all reference words."""
    errors, words = _wer_counts(texts, audio, sr)
    return errors / words


@functools.lru_cache(maxsize=4)
def base_reading_wer(seed: int = 0) -> tuple[float, int]:
    """The base voice reading the list: deterministic, so computed once per base model, seed and recogniser.

    Kept in memory and in ${CHORUS_CACHE}/quality (when writable), keyed by the base voice's
    fingerprint, the seed, the reading list and the recogniser's model files: a rerun of the same
    synthesis and recognition gives the same figure, so the cache changes no result, only the time.
    """
    import hashlib
    import json

    from chorus.adapters.intelligibility import READING_LIST
    from chorus.engine.voice import load_base_voice
    from chorus.quality.whisper import model_dir
    from chorus.settings import get_settings

    model = model_dir() / "model.bin"
    key = hashlib.sha256(json.dumps([load_base_voice().fingerprint, seed, READING_LIST, model.stat().st_size,
                                     str(model.resolve())]).encode()).hexdigest()[:24]
    path = get_settings().cache_dir("quality") / f"base-reading-{key}.json"
    try:
        cached = json.loads(path.read_text())
        return float(cached["wer"]), int(cached["words"])
    except (OSError, ValueError, KeyError):
        pass
    wer_value, words = reading_wer(AdaptedVoice.base(), seed)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"wer": wer_value, "words": words}))
    except OSError:  # a read-only cache (an image's): keep the figure in memory only
        pass
    return wer_value, words


def reading_wer(voice: AdaptedVoice, seed: int = 0) -> tuple[float, int]:
    """The voice reading the fixed reading list (same seeds for every voice): (WER, words it rests on)."""
    from chorus.adapters.intelligibility import READING_LIST

    audio = [voice.synthesize(t, seed=seed + 1000 + i) for i, t in enumerate(READING_LIST)]
    errors, words = _wer_counts(list(READING_LIST), audio, voice.voice.sample_rate)
    return errors / words, words


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
    target_wer: float  # the target clips' own WER on the held-out texts: how hard the recogniser finds the voice
    reading_wer: float  # the base voice reading the fixed reading list
    reading_words: int


def reference_scores(heldout: HeldOut, base_audio: list[np.ndarray] | None = None, seed: int = 0) -> Reference:
    """Score the base voice (synthesised unless given) and the target clips on the held-out set once."""
    from chorus.quality.similarity import embed_speaker

    sr = heldout.sample_rate
    target_emb = [embed_speaker(a, sr) for a in heldout.audio]
    if base_audio is None:
        base = AdaptedVoice.base()
        base_audio = [base.synthesize(t, seed=seed + i) for i, t in enumerate(heldout.texts)]
    read_wer, read_words = base_reading_wer(seed)
    return Reference(target_emb, score_voice(base_audio, sr, heldout, target_emb),
                     score_voice(heldout.audio, sr, heldout, target_emb, with_wer=False), base_audio,
                     _wer(heldout.texts, heldout.audio, sr), read_wer, read_words)


def evaluate_voice(adapted: AdaptedVoice, heldout: HeldOut, reference: Reference | None = None,
                   adapter_bytes: int | None = None, thresholds: GateThresholds | None = None,
                   seed: int = 0) -> tuple[QualityMetrics, GateResult, list[np.ndarray]]:
    """Measure the adapted voice against base and target: metrics, verdict, the held-out renderings.

    Similarity, f0 and DNSMOS come from the held-out texts (against the tenant's own clips). WER comes
    from the fixed reading list (hundreds of words, read by the base voice too, same seeds), the
    held-out WERs (tens of words) are recorded beside it for the gate's fair reference.
    """
    sr = heldout.sample_rate
    ref = reference or reference_scores(heldout, seed=seed)
    adapted_audio = [adapted.synthesize(t, seed=seed + i) for i, t in enumerate(heldout.texts)]
    b, t = ref.base, ref.target
    a = score_voice(adapted_audio, sr, heldout, ref.target_emb)
    read_wer, read_words = reading_wer(adapted, seed)
    metrics = QualityMetrics(similarity_base=b.similarity, similarity_adapted=a.similarity,
                             similarity_ceiling=t.similarity, wer_base=ref.reading_wer, wer_adapted=read_wer,
                             wer_words=read_words, wer_heldout_base=b.wer, wer_heldout_adapted=a.wer,
                             wer_heldout_target=ref.target_wer, heldout_words=sum(len(x.split()) for x in heldout.texts),
                             dnsmos_base=b.dnsmos, dnsmos_adapted=a.dnsmos, dnsmos_target=t.dnsmos,
                             f0_base=b.f0, f0_adapted=a.f0, f0_target=t.f0, adapter_bytes=adapter_bytes,
                             heldout_clips=len(heldout.texts))
    return metrics, evaluate_gate(metrics, thresholds), adapted_audio


def _pct(value: float | None) -> str:
    return "" if value is None else f"{value:.1%}"


def format_metrics(m: QualityMetrics, gate: GateResult) -> str:
    """A small plain-text table of one evaluation."""
    gap = m.gap_closed()
    rows = [("", "base", "adapted", "target"),
            ("similarity", f"{m.similarity_base:.3f}", f"{m.similarity_adapted:.3f}", f"{m.similarity_ceiling:.3f}"),
            ("median f0 (Hz)", f"{m.f0_base:.1f}", f"{m.f0_adapted:.1f}", f"{m.f0_target:.1f}"),
            (f"WER ({m.wer_words or '?'} words)", f"{m.wer_base:.1%}", f"{m.wer_adapted:.1%}", ""),
            (f"WER held-out ({m.heldout_words or '?'} w)", _pct(m.wer_heldout_base), _pct(m.wer_heldout_adapted),
             _pct(m.wer_heldout_target)),
            ("DNSMOS OVRL", f"{m.dnsmos_base:.2f}", f"{m.dnsmos_adapted:.2f}", f"{m.dnsmos_target:.2f}")]
    first = max(len(r[0]) for r in rows)
    lines = ["  ".join([r[0].ljust(first)] + [c.ljust(10) for c in r[1:]]).rstrip() for r in rows]
    lines.append(f"gap closed {gap:.0%}" if gap is not None else "gap closed: n/a")
    lines.append("gate: PASS" if gate.passed else "gate: FAIL\n  " + "\n  ".join(gate.reasons))
    return "\n".join(lines)
