"""Test target voices for adapter training: the base voice transformed with WORLD, and an espeak-ng voice.

Generators, not recordings: `write_target_sets(out_dir)` renders the base voice (Piper's ONNX file run
directly with onnxruntime, phonemes from the `espeak-ng` CLI in a subprocess), transforms it with the WORLD
vocoder (pyworld) into voices with another pitch, formant scale and tempo, and renders a far voice with
espeak-ng's own formant synthesiser. Each voice gets ~60 s of training speech and held-out clips whose
sentences do not occur in training.
"""

from __future__ import annotations

import functools
import re
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf
from pydantic import BaseModel, ConfigDict, Field

from chorus.adapters.pitch import _pyworld, world_analysis
from chorus.engine.voice import BaseVoice, load_base_voice

TRAIN_SENTENCES = (
    "The quick brown fox jumps over the lazy dog near the river bank.",
    "Please call Stella and ask her to bring these things with her from the store.",
    "A rainbow is a division of white light into many beautiful colors.",
    "She sells sea shells by the sea shore, and the shells she sells are surely sea shells.",
    "We tested the new bridge on a windy morning, and it held perfectly.",
    "How much wood would a woodchuck chuck if a woodchuck could chuck wood?",
    "The museum opens at nine o'clock, but the guided tours start an hour later.",
    "Our team shipped the update on Friday, after three long weeks of testing.",
    "Bright sunlight filled the kitchen while the kettle began to whistle.",
    "Do you remember the name of the little village where we stopped for lunch?",
    "Thousands of birds gather on the lake every autumn before flying south.",
    "The library keeps old maps, rare letters, and a few forgotten diaries.",
    "If the train is late again, we will take a taxi to the airport.",
    "My grandmother grew tomatoes, beans, and sweet peppers in her garden.",
    "The engineer measured the voltage twice before touching the wires.",
    "Quiet music played softly in the background as the guests arrived.",
    "Never leave a candle burning when you go out of the room.",
    "The children laughed loudly at the clown with the enormous red shoes.",
    "Fresh bread from the bakery smells wonderful early in the morning.",
    "Mountains covered in snow rose high above the green valley below.",
)
"""Training sentences (about 60 s of speech at the base voice's rate)."""

HELDOUT_SENTENCES = (
    "The weather forecast promises clear skies and a gentle breeze tomorrow.",
    "Could you please send me the report before the meeting starts?",
    "An old wooden boat drifted slowly toward the sandy shore.",
    "Every student must return the borrowed books by the end of the month.",
    "The orchestra tuned their instruments while the audience found their seats.",
    "I would rather walk home tonight, since the evening air is so pleasant.",
    "The doctor asked him to rest for a week and drink plenty of water.",
    "Several farmers brought apples, honey, and cheese to the Saturday market.",
    "When the lights went out, everyone in the theater fell silent.",
    "Our neighbors painted their fence bright yellow last summer.",
    "The pilot announced that we would land twenty minutes early.",
    "A small gray cat slept on the warm windowsill all afternoon.",
)
"""Held-out sentences for evaluation (about 40 s of speech): none of them occurs in TRAIN_SENTENCES. Twelve,
because with six the similarity gap closed moved by 5-9 points between runs of one recipe."""

DURATIONS_OUTPUT = "/Ceil_output_0"
"""The Piper graph's tensor of per-phoneme durations in frames (256 samples each), shape [B, 1, T]."""

_CLAUSE = re.compile(r"([,.!?;:])")


class ShiftedTarget(BaseModel):
    """A target voice made from the base voice by moving its pitch, its formants and its tempo."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(min_length=1, description="voice name, used as the folder name")
    f0_factor: float = Field(gt=0.3, lt=3.0, description="multiply f0 by this")
    formant_factor: float = Field(gt=0.5, lt=2.0, description="move the formants (the spectral envelope) by this")
    tempo: float = Field(gt=0.3, lt=3.0, description="speaking rate factor (< 1 is slower)")


class WorldTarget(ShiftedTarget):
    """A shifted target made with WORLD: pYIN f0 scaled, the spectral envelope's frequency axis warped."""


class EspeakTarget(BaseModel):
    """A far target voice rendered by espeak-ng's own synthesiser (e.g. `en-us+f2`)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(min_length=1, description="voice name, used as the folder name")
    espeak_voice: str = Field(min_length=1, description="espeak-ng voice with variant, e.g. en-us+f2")
    words_per_minute: int = Field(default=160, ge=80, le=400, description="espeak-ng speaking rate")
    pitch: int | None = Field(default=None, ge=0, le=99, description="espeak-ng base pitch (-p; None: the voice's)")


DEFAULT_TARGETS: tuple[WorldTarget | EspeakTarget, ...] = (
    WorldTarget(name="high", f0_factor=1.4, formant_factor=1.10, tempo=0.9),
    WorldTarget(name="low", f0_factor=0.8, formant_factor=0.92, tempo=1.1),
    EspeakTarget(name="far", espeak_voice="en-us+f2"),
)
"""The benchmark's voices: two WORLD transforms of the base voice and one espeak-ng voice."""


def espeak_phonemes(text: str, voice: str = "en-us") -> str:
    """IPA phonemes from the espeak-ng CLI, with clause punctuation put back as Piper keeps it."""
    parts = _CLAUSE.split(text)
    out = []
    for i in range(0, len(parts), 2):
        clause = parts[i].strip()
        punct = parts[i + 1] if i + 1 < len(parts) else ""
        if clause:
            res = subprocess.run(["espeak-ng", "-q", "--ipa", "-v", voice, clause],
                                 capture_output=True, text=True, check=True)
            out.append(" ".join(res.stdout.split()) + punct)
        elif punct and out:
            out[-1] += punct
    return " ".join(out)


def phoneme_ids(phonemes: str, id_map: dict[str, list[int]]) -> list[int]:
    """Piper's id sequence: `^`, each known phoneme followed by the pad `_`, then `$`."""
    ids = list(id_map["^"])
    for symbol in phonemes:
        if symbol in id_map:
            ids += id_map[symbol] + id_map["_"]
    return ids + list(id_map["$"])


@functools.lru_cache(maxsize=2)
def _onnx_session(onnx_path: str, seed: int):
    """An onnxruntime session over the voice whose random nodes are seeded (so renders repeat)."""
    import onnx
    import onnxruntime as ort

    model = onnx.load(onnx_path)
    # Expose the per-phoneme frame counts (the rounded durations) as a second output.
    model.graph.output.append(onnx.helper.make_tensor_value_info(DURATIONS_OUTPUT, onnx.TensorProto.FLOAT, None))
    for node in model.graph.node:
        if node.op_type == "RandomNormalLike":
            node.attribute.append(onnx.helper.make_attribute("seed", float(seed)))
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])


def render_base(text: str, voice: BaseVoice | None = None, length_scale: float = 1.0,
                noise_scale: float | None = None, noise_w: float | None = None, seed: int = 0) -> np.ndarray:
    """Base-voice speech for one sentence with onnxruntime (float32 at the voice's rate)."""
    voice = voice or load_base_voice()
    ids = phoneme_ids(espeak_phonemes(text, voice.espeak_voice), voice.phoneme_id_map)
    return render_ids(ids, voice, length_scale, noise_scale, noise_w, seed)[0]


def render_ids(ids: list[int], voice: BaseVoice | None = None, length_scale: float = 1.0,
               noise_scale: float | None = None, noise_w: float | None = None,
               seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Base-voice audio and per-id durations (frames of 256 samples) for one id sequence, via onnxruntime."""
    voice = voice or load_base_voice()
    session = _onnx_session(str(voice.onnx_path), seed)
    scales = np.array([voice.noise_scale if noise_scale is None else noise_scale, length_scale,
                       voice.noise_w if noise_w is None else noise_w], dtype=np.float32)
    out, durations = session.run(None, {"input": np.array([ids], dtype=np.int64),
                                        "input_lengths": np.array([len(ids)], dtype=np.int64), "scales": scales})
    return out.reshape(-1).astype(np.float32), durations.reshape(-1).astype(np.int64)


def _warp_frequency(env: np.ndarray, factor: float) -> np.ndarray:
    """Stretch each frame's spectrum along frequency by `factor` (> 1 moves formants up)."""
    bins = env.shape[1]
    src = np.arange(bins) / factor
    lo = np.clip(np.floor(src).astype(int), 0, bins - 1)
    hi = np.clip(lo + 1, 0, bins - 1)
    frac = np.clip(src - lo, 0.0, 1.0)
    return env[:, lo] * (1 - frac) + env[:, hi] * frac


def world_transform(audio: np.ndarray, sample_rate: int, target: WorldTarget, frame_period: float = 5.0) -> np.ndarray:
    """Re-synthesise speech with WORLD with f0, formants and tempo changed by the target's factors.

    The analysis f0 is pYIN's (chorus.adapters.pitch.world_analysis), not WORLD's own: on the base voice
    Harvest and DIO jump octaves (medians 107-168 Hz where pYIN, tight, gives 87 Hz), and the target's
    pitch would then not be the intended multiple of the base voice's as the evaluation measures it.
    """
    f0, sp, ap = world_analysis(audio, sample_rate, frame_period)
    sp = np.maximum(_warp_frequency(sp, target.formant_factor), 1e-16)
    ap = np.clip(_warp_frequency(ap, target.formant_factor), 0.0, 1.0)
    y = _pyworld().synthesize(f0 * target.f0_factor, np.ascontiguousarray(sp), np.ascontiguousarray(ap),
                              sample_rate, frame_period / target.tempo)
    return y.astype(np.float32)


def render_espeak(text: str, target: EspeakTarget, sample_rate: int = 22050) -> np.ndarray:
    """Speech from espeak-ng's formant synthesiser, resampled to `sample_rate` if it differs."""
    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "out.wav"
        pitch = [] if target.pitch is None else ["-p", str(target.pitch)]
        subprocess.run(["espeak-ng", "-v", target.espeak_voice, "-s", str(target.words_per_minute), *pitch,
                        "-w", str(wav), text], check=True, capture_output=True)
        audio, sr = sf.read(wav, dtype="float32")
    if sr != sample_rate:
        import soxr

        audio = soxr.resample(audio, sr, sample_rate).astype(np.float32)
    return audio


def _normalise(audio: np.ndarray, peak: float = 0.9) -> np.ndarray:
    """Scale to a fixed peak (the generators differ wildly in level)."""
    return (audio * (peak / max(float(np.abs(audio).max()), 1e-6))).astype(np.float32)


def render_target(text: str, target, seed: int = 0) -> np.ndarray:
    """One sentence in the target voice (WorldTarget, EspeakTarget or generators.LpcTarget), peak-normalised,
    at the base voice's rate."""
    from chorus.adapters.generators import LpcTarget, lpc_transform

    voice = load_base_voice()
    if isinstance(target, EspeakTarget):
        return _normalise(render_espeak(text, target, voice.sample_rate))
    base = render_base(text, voice, seed=seed)
    if isinstance(target, LpcTarget):
        return _normalise(lpc_transform(base, voice.sample_rate, target))
    return _normalise(world_transform(base, voice.sample_rate, target))


def write_clips(folder: Path, texts: tuple[str, ...], render, prefix: str) -> Path:
    """Write one wav per text plus an LJSpeech-style `metadata.csv` (`file|text`); returns the folder."""
    folder.mkdir(parents=True, exist_ok=True)
    lines = []
    for i, text in enumerate(texts):
        name = f"{prefix}{i:03d}.wav"
        sf.write(folder / name, render(text), load_base_voice().sample_rate, subtype="PCM_16")
        lines.append(f"{name}|{text}")
    (folder / "metadata.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder


def write_target_set(out_dir: Path | str, target, seed: int = 0, train_texts: tuple[str, ...] = TRAIN_SENTENCES,
                     heldout_texts: tuple[str, ...] = HELDOUT_SENTENCES) -> Path:
    """Write `<out>/<voice>/train` and `<out>/<voice>/heldout` clip folders for one target voice.

    The same for a seed whatever the process rendered before: the seeded onnxruntime sessions' noise
    generators advance with every render, so they start afresh here (a grid of voices in one process
    would otherwise give each voice clips that depend on the voices before it).
    """
    _onnx_session.cache_clear()
    root = Path(out_dir) / target.name
    write_clips(root / "train", train_texts, lambda s: render_target(s, target, seed), "train")
    write_clips(root / "heldout", heldout_texts, lambda s: render_target(s, target, seed + 1), "heldout")
    return root


def write_base_set(out_dir: Path | str, seed: int = 0) -> Path:
    """Write the base voice's own held-out clips (the 'before' voice) to `<out>/base/heldout`."""
    _onnx_session.cache_clear()
    root = Path(out_dir) / "base"
    write_clips(root / "heldout", HELDOUT_SENTENCES,
                lambda s: _normalise(render_base(s, seed=seed + 1)), "heldout")
    return root


def main(argv: list[str] | None = None) -> int:
    """`python -m chorus.adapters.targets OUT_DIR`: write every default target voice's clips."""
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    write_base_set(args.out_dir, args.seed)
    for target in DEFAULT_TARGETS:
        print(write_target_set(args.out_dir, target, args.seed))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
