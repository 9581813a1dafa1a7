"""Streaming synthesis under ONNX Runtime: a sentence's latents at once, then its audio in decoder windows.

A sentence runs the text graph (prior and durations) and the flow graph (latents z) whole: together
about a quarter of its cost. The HiFi-GAN decoder, the rest, is a stack of convolutions with a finite
receptive field, so a window of latent frames decoded with `DECODER_CONTEXT` frames of real neighbours
on each side gives, inside the window, the samples the whole sentence would (to float rounding): the
windows are cut, not cross-faded, and there is no seam to hear. The first window is short so the first
audio is out after a fraction of the sentence's compute; later ones grow geometrically, each ready
before the audio already sent has played, so the context's overhead stays small. Tenant voices pass their merged weights per run (`weights`: state-dict key -> array):
flow weights go to the flow graph, decoder weights to the decoder, at the base graph's speed.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import NamedTuple

import numpy as np
import torch

from .export import StreamExport
from .ort_adapters import check_weights, overridable_weights
from .runtime_ort import HOP_LENGTH, OrtSettings, expand_prior, make_session

DECODER_CONTEXT = 12
"""Latent frames of context decoded on each side of a window; the decoder's reach is measured in
tests/unit/test_runtime_stream.py (windowed == whole to float rounding at this context)."""
FIRST_WINDOW = 24
"""Frames in the first window (~0.28 s of audio): small, so the first bytes go out early."""
GROWTH = 4
"""Each window is this many times the one before. The decoder runs at ~0.05 of real time, so a window
4x the audio already sent is ready long before that audio has played (no gap for the listener), while
the windows of a sentence stay few: the context costs ~7% of a 12 s sentence's decoder time, and a
sentence after one that already gave a listener enough audio is decoded in one window (no cost).
Serving (chorus.serving.speaker) sizes its windows from the decoder's measured speed instead."""

Weights = Mapping[str, np.ndarray]


class Latents(NamedTuple):
    """One sentence ready to decode: its latents and the frames each phoneme id lasts."""

    z: np.ndarray  # [1, C, F] float32
    durations: np.ndarray  # [T] int64 frames per phoneme id

    @property
    def frames(self) -> int:
        """Latent frames (audio samples / hop)."""
        return int(self.z.shape[2])


def windows(frames: int, first: int = FIRST_WINDOW, growth: float = GROWTH) -> list[tuple[int, int]]:
    """[start, stop) frame ranges covering `frames`: `first` frames, then each `growth` times the one before.

    A tail shorter than `first` is folded into the window before it (no tiny windows).
    """
    if frames <= 0:
        return []
    if first < 1 or growth < 1:
        raise ValueError(f"first must be >= 1 and growth >= 1, got {first} and {growth}")
    out, start, step = [], 0, float(first)
    while start < frames:
        stop = min(frames, start + int(step))
        if frames - stop < first:
            stop = frames
        out.append((start, stop))
        start, step = stop, step * growth
    return out


class StreamingRuntime:
    """Text, flow and decoder graphs of one base model, with per-run weight overrides (batch of one)."""

    def __init__(self, text_graph, stream: StreamExport, settings: OrtSettings | None = None) -> None:
        self.settings = settings or OrtSettings()
        self.text = make_session(text_graph, self.settings)
        self.latent = make_session(stream.latent, self.settings)
        self.decoder = make_session(stream.decoder, self.settings)
        self.overridable = {**overridable_weights(self.latent), **overridable_weights(self.decoder)}
        self._flow_keys = frozenset(overridable_weights(self.latent))
        self._dec_keys = frozenset(overridable_weights(self.decoder))

    def check(self, weights: Weights) -> None:
        """Raise AdapterError unless every weight is an overridable flow/decoder Conv weight of the right shape."""
        check_weights(weights, self.overridable)

    def latents(self, ids: Sequence[int], scales: Sequence[float], generator: torch.Generator,
                weights: Weights | None = None) -> Latents:
        """Phoneme ids of one sentence -> its latents; noise drawn from `generator` as VitsModel.infer draws it."""
        ids_arr = np.asarray([ids], dtype=np.int64)
        lengths = np.asarray([len(ids)], dtype=np.int64)
        scale_arr = np.asarray(scales, dtype=np.float32)
        dp_noise = torch.randn(1, 2, len(ids), generator=generator).numpy()
        m_p, logs_p, durations = self.text.run(
            None, {"input": ids_arr, "input_lengths": lengths, "scales": scale_arr, "dp_noise": dp_noise})
        m, logs, frames = expand_prior(m_p, logs_p, durations)
        noise = torch.randn(m.shape, generator=generator).numpy()
        feeds = {"m_p": m, "logs_p": logs, "noise": noise, "y_lengths": frames, "scales": scale_arr}
        if weights:
            feeds.update((k, v) for k, v in weights.items() if k in self._flow_keys)
        (z,) = self.latent.run(None, feeds)
        return Latents(z, durations[0])

    def decode(self, z: np.ndarray, start: int, stop: int, weights: Weights | None = None,
               context: int = DECODER_CONTEXT) -> np.ndarray:
        """Audio of latent frames [start, stop), decoded with `context` real frames on each side."""
        lo, hi = max(0, start - context), min(z.shape[2], stop + context)
        feeds = {"z": np.ascontiguousarray(z[:, :, lo:hi])}
        if weights:
            feeds.update((k, v) for k, v in weights.items() if k in self._dec_keys)
        (audio,) = self.decoder.run(None, feeds)
        return audio[0, (start - lo) * HOP_LENGTH:(stop - lo) * HOP_LENGTH]

    def stream(self, latents: Latents, weights: Weights | None = None, first: int = FIRST_WINDOW,
               growth: float = GROWTH) -> Iterator[np.ndarray]:
        """The sentence's audio, window by window."""
        for start, stop in windows(latents.frames, first, growth):
            yield self.decode(latents.z, start, stop, weights)
