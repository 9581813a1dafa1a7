"""Text -> speech with the base voice: options, sentence-by-sentence synthesis, streaming."""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator, Sequence
from typing import Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator

from .voice import BaseVoice, load_base_voice

Backend = Literal["torch", "onnx"]
BACKENDS: tuple[str, ...] = ("torch", "onnx")
# Texts longer than this are cut into blocks at sentence ends before the front end sees them, so
# streaming starts at once and memory does not grow with the text.
STREAM_BLOCK_CHARS = 2000


class SynthesisOptions(BaseModel):
    """Per-request synthesis settings; unset noise values fall back to the voice's defaults."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    speed: float = Field(1.0, gt=0, le=10, description="speaking rate: 2.0 is twice as fast (length_scale / speed)")
    length_scale: float | None = Field(None, gt=0, le=10, description="phoneme length multiplier; overrides speed")
    noise_scale: float | None = Field(None, ge=0, le=2, description="prior noise (voice variation); 0 is deterministic")
    noise_w: float | None = Field(None, ge=0, le=2, description="duration noise (rhythm variation); 0 is deterministic")
    seed: int | None = Field(None, ge=0, lt=2**63, description="random seed for reproducible output; None draws one")
    sentence_silence: float = Field(0.2, ge=0, le=5, description="seconds of silence between sentences")

    @model_validator(mode="after")
    def _speed_or_length_scale(self) -> "SynthesisOptions":
        if self.length_scale is not None and self.speed != 1.0:
            raise ValueError("give speed or length_scale, not both")
        return self

    def scales(self, voice: BaseVoice) -> tuple[float, float, float]:
        """(noise_scale, length_scale, noise_w) for this voice."""
        length_scale = self.length_scale if self.length_scale is not None else voice.length_scale / self.speed
        noise_scale = self.noise_scale if self.noise_scale is not None else voice.noise_scale
        noise_w = self.noise_w if self.noise_w is not None else voice.noise_w
        return noise_scale, length_scale, noise_w

    def generator(self) -> torch.Generator:
        """A torch generator seeded from `seed` (or from fresh entropy when unset)."""
        gen = torch.Generator()
        if self.seed is None:
            gen.seed()
        else:
            gen.manual_seed(self.seed)
        return gen


# Where a block may end, best first: a paragraph break, a sentence end before a capital/digit/quote,
# any sentence end, a clause end, any whitespace.
_CUTS = (
    re.compile(r"\n\s*\n"),
    re.compile(r"[.!?][\"')\]]*\s+(?=[\"'(A-Z0-9])"),
    re.compile(r"[.!?][\"')\]]*\s+"),
    re.compile(r"[,;:]\s+"),
    re.compile(r"\s+"),
)


# A dot after these (or after a single letter) rarely ends a sentence: "Dr. Smith", "J. Doe".
_ABBREVIATIONS = frozenset({"dr", "mr", "mrs", "ms", "prof", "st", "mt", "jr", "sr", "vs", "etc", "no", "fig", "e.g", "i.e"})
_WORD_BEFORE_DOT = re.compile(r"([\w.]+)\.$")


def _after_abbreviation(window: str, match: re.Match[str]) -> bool:
    word = _WORD_BEFORE_DOT.search(window, 0, match.start() + 1)
    return bool(word) and (len(word.group(1)) == 1 or word.group(1).lower() in _ABBREVIATIONS)


def text_blocks(text: str, limit: int) -> Iterator[str]:
    """Cut text into blocks of at most `limit` characters at the most natural break available."""
    start = 0
    while len(text) - start > limit:
        window = text[start:start + limit]
        cut = limit  # no break at all: a hard cut
        for pattern in _CUTS:
            ends = [m.end() for m in pattern.finditer(window)
                    if m.end() > limit // 4 and not (window[m.start()] == "." and _after_abbreviation(window, m))]
            if ends:
                cut = ends[-1]
                break
        if window[:cut].strip():
            yield window[:cut]
        start += cut
    if text[start:].strip():
        yield text[start:]


def _pad(batch: Sequence[Sequence[int]]) -> tuple[np.ndarray, np.ndarray]:
    lengths = np.array([len(ids) for ids in batch], dtype=np.int64)
    ids = np.zeros((len(batch), int(lengths.max())), dtype=np.int64)
    for row, seq in enumerate(batch):
        ids[row, : len(seq)] = seq
    return ids, lengths


class Synthesizer:
    """Turns text into float32 mono audio at the voice's sample rate with a chosen backend."""

    def __init__(self, voice: BaseVoice | None = None, backend: Backend = "torch", num_threads: int | None = 2,
                 batch_size: int = 1, frontend=None) -> None:
        if backend not in BACKENDS:
            raise ValueError(f"unknown backend {backend!r}; valid: {', '.join(BACKENDS)}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.voice = voice or load_base_voice()
        self.backend = backend
        # Batching does not raise CPU throughput for this network; it helps on accelerators.
        self.batch_size = batch_size
        self.sample_rate = self.voice.sample_rate
        if frontend is None:
            from .frontend import TextFrontEnd  # runs espeak-ng as a subprocess

            frontend = TextFrontEnd(self.voice)
        self.frontend = frontend  # anything with .utterances(text) -> [Utterance(text, phonemes, ids)]
        if num_threads:
            torch.set_num_threads(num_threads)  # process-wide: one Synthesizer per process is the norm
        from .weights import load_vits_model

        self.model = load_vits_model(self.voice)
        self._runtime = None
        if backend == "onnx":
            from .export import cached_export
            from .runtime_ort import OnnxRuntime, OrtSettings

            settings = OrtSettings(threads=num_threads) if num_threads else OrtSettings()
            self._runtime = OnnxRuntime(cached_export(self.model, self.voice.fingerprint), settings)
        self._lock = threading.Lock()  # torch modules and the generator are not shared across threads

    def _infer(self, batch: Sequence[Sequence[int]], options: SynthesisOptions,
               generator: torch.Generator) -> list[np.ndarray]:
        ids, lengths = _pad(batch)
        scales = options.scales(self.voice)
        with self._lock:
            if self._runtime is not None:
                result = self._runtime.run(ids, lengths, scales, generator)
                audio, audio_lengths = result.audio, result.audio_lengths
            else:
                out = self.model.infer(torch.from_numpy(ids), torch.from_numpy(lengths), *scales, generator=generator)
                audio, audio_lengths = out.audio.numpy(), out.audio_lengths.numpy()
        return [np.asarray(audio[row, : int(n)], dtype=np.float32) for row, n in enumerate(audio_lengths)]

    def _utterance_ids(self, text: str) -> Iterator[list[int]]:
        if not isinstance(text, str) or not text.strip():
            raise ValueError("text is empty: nothing to synthesise")
        found = False
        for block in text_blocks(text, STREAM_BLOCK_CHARS):
            for utterance in self.frontend.utterances(block):
                if len(utterance.ids) > 2:  # more than ^ and $
                    found = True
                    yield list(utterance.ids)
        if not found:
            raise ValueError(f"text has nothing speakable: {text[:80]!r}")

    def stream(self, text: str, options: SynthesisOptions | None = None) -> Iterator[np.ndarray]:
        """Yield audio sentence by sentence; every sentence after the first starts with the sentence silence."""
        options = options or SynthesisOptions()
        generator = options.generator()
        silence = np.zeros(int(round(options.sentence_silence * self.sample_rate)), dtype=np.float32)
        first = True
        utterances = self._utterance_ids(text)
        while True:
            batch = [ids for _, ids in zip(range(self.batch_size), utterances)]
            if not batch:
                return
            for audio in self._infer(batch, options, generator):
                yield audio if first else np.concatenate([silence, audio])
                first = False

    def synthesize(self, text: str, options: SynthesisOptions | None = None) -> np.ndarray:
        """The whole text as one float32 array (use stream() for very long texts)."""
        return np.concatenate(list(self.stream(text, options)))

    def synthesize_batch(self, texts: Sequence[str], options: SynthesisOptions | None = None) -> list[np.ndarray]:
        """Several texts, their sentences run together in batches of `batch_size`."""
        options = options or SynthesisOptions()
        generator = options.generator()
        silence = np.zeros(int(round(options.sentence_silence * self.sample_rate)), dtype=np.float32)
        owners: list[int] = []
        utterances: list[list[int]] = []
        for index, text in enumerate(texts):
            for ids in self._utterance_ids(text):
                owners.append(index)
                utterances.append(ids)
        pieces: list[list[np.ndarray]] = [[] for _ in texts]
        size = max(self.batch_size, 1)
        for start in range(0, len(utterances), size):
            chunk = utterances[start:start + size]
            for owner, audio in zip(owners[start:start + size], self._infer(chunk, options, generator)):
                if pieces[owner]:
                    pieces[owner].append(silence)
                pieces[owner].append(audio)
        return [np.concatenate(parts) for parts in pieces]
