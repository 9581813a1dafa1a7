"""Text -> streamed audio and word times in any voice, on one copy of the base model (no HTTP, no Ray here).

`Speaker` holds the base voice's ONNX graphs once (chorus.engine.runtime_stream), the text front end and
the voice cache. A request runs sentence by sentence: the text and flow graphs for the sentence, then
the decoder window by window, each window's audio passed through the voice's profile stream (its
pitch path) and handed out at once. The first window is small (the first bytes go out early); each later
one is as large as the decoder, at its measured speed, makes in `WINDOW_SAFETY` of the audio the listener
has buffered, so a sentence takes as few windows (and their context frames) as a gapless stream allows.
Word times come with a sentence's first audio. A tenant voice differs from the base voice only in the
weights fed to the same graphs and its profile, so it runs at the base voice's speed. The same seed gives
the same audio as the engine's `Synthesizer`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import NamedTuple

import numpy as np
import torch

from chorus.adapters.profile import ProfileStream
from chorus.engine.runtime_ort import HOP_LENGTH, OrtSettings
from chorus.engine.runtime_stream import FIRST_WINDOW, StreamingRuntime
from chorus.engine.synth import STREAM_BLOCK_CHARS, text_blocks
from chorus.serving.timestamps import WordTime, word_times
from chorus.serving.voices import LoadedVoice, VoiceCache

SENTENCE_SILENCE_S = 0.2
"""Silence between sentences, as the engine's default SynthesisOptions."""

WINDOW_SAFETY = 0.6
"""A decoder window after the first is sized to take this share of the audio a listener has buffered, at the
decoder's measured speed: the next audio is ready with room to spare for a slower spell, and a sentence is
decoded in as few windows as that allows (each window decodes `DECODER_CONTEXT` extra frames on each side)."""


class Chunk(NamedTuple):
    """A piece of a response: float32 audio at the base voice's rate, and the words that start in it."""

    audio: np.ndarray
    words: list[WordTime]


class Speaker:
    """The base model once, any number of voices: `stream(text, voice)` yields Chunks as they are made."""

    def __init__(self, threads: int = 2, voice_cache_mb: float = 256.0,
                 storage_options: Callable[[str], dict] | None = None, first_window: int = FIRST_WINDOW):
        from chorus.engine.export import cached_export, cached_stream_export
        from chorus.engine.frontend import TextFrontEnd
        from chorus.engine.voice import load_base_voice
        from chorus.engine.weights import load_vits_model

        torch.set_num_threads(1)  # torch only draws noise here; ONNX Runtime does the work
        self.voice = load_base_voice()
        self.sample_rate = self.voice.sample_rate
        model = load_vits_model(self.voice)
        export = cached_export(model, self.voice.fingerprint)
        self.runtime = StreamingRuntime(export.text, cached_stream_export(model, self.voice.fingerprint),
                                        OrtSettings(threads=threads))
        state = model.state_dict()
        base_weights = {k: state[k].detach().numpy().copy() for k in self.runtime.overridable}
        del model, state
        self.cache = VoiceCache(self.voice.fingerprint, base_weights, self.runtime.check, voice_cache_mb,
                                storage_options)
        self.frontend = TextFrontEnd(self.voice)
        self._frontend_lock = threading.Lock()  # one espeak-ng process: one caller at a time
        self.first_window = first_window
        self._frame_s: float | None = None  # decoder wall seconds per latent frame, measured
        self._speed_lock = threading.Lock()

    def _window_end(self, start: int, frames: int, buffered_s: float) -> int:
        """Where the decoder window from `start` ends: `first_window` frames while nothing is buffered, else as
        many as the decoder makes, at its measured speed, in WINDOW_SAFETY of the audio the listener has not
        heard yet (so the next audio is there before that runs out); a tail under `first_window` joins it."""
        size = self.first_window
        if buffered_s > 0 and self._frame_s is not None:
            size = max(size, int(WINDOW_SAFETY * buffered_s / self._frame_s))
        stop = min(frames, start + size)
        return frames if frames - stop < self.first_window else stop

    def _measure(self, frames: int, seconds: float) -> None:
        """Track the decoder's wall seconds per frame (context included; a moving average over windows)."""
        per_frame = seconds / max(1, frames)
        with self._speed_lock:
            self._frame_s = per_frame if self._frame_s is None else 0.7 * self._frame_s + 0.3 * per_frame

    def _utterances(self, text: str):
        if not isinstance(text, str) or not text.strip():
            raise ValueError("input is empty: there is nothing to synthesise")
        found = False
        for block in text_blocks(text, STREAM_BLOCK_CHARS):
            with self._frontend_lock:
                utterances = self.frontend.utterances(block)
            for utterance in utterances:
                if len(utterance.ids) > 2:
                    found = True
                    yield utterance
        if not found:
            raise ValueError("input has nothing speakable (no words after normalisation)")

    def stream(self, text: str, voice: LoadedVoice | None = None, speed: float = 1.0,
               seed: int | None = None) -> Iterator[Chunk]:
        """Chunks of the text spoken in `voice` (None: the base voice); raises ValueError for unspeakable text."""
        if not 0.25 <= speed <= 4.0:
            raise ValueError(f"speed must be between 0.25 and 4.0, got {speed}")
        base = self.voice
        weights = voice.weights if voice else None
        profile = ProfileStream(voice.profile, self.sample_rate) if voice else None
        length_scale = (voice.profile.length_scale * profile.model_length if voice else base.length_scale) / speed
        scales = (base.noise_scale, length_scale, base.noise_w)
        generator = torch.Generator()
        if seed is None:
            generator.seed()
        else:
            generator.manual_seed(seed)
        time_scale = profile.time_scale if profile else 1.0
        hop_s = HOP_LENGTH / self.sample_rate
        silence = np.zeros(int(round(SENTENCE_SILENCE_S * self.sample_rate)), np.float32)
        model_samples = 0  # audio made so far, in the model's time (before the profile)
        sent_s, first_sent = 0.0, None  # output audio handed out, and when the first of it was

        def buffered_s(sent: float) -> float:
            """Audio handed out that a listener who started at the first chunk has not heard yet."""
            return 0.0 if first_sent is None else sent - (time.perf_counter() - first_sent)

        for utterance in self._utterances(text):
            latents = self.runtime.latents(utterance.ids, scales, generator, weights)
            lead = silence if model_samples else silence[:0]
            words = word_times(utterance.text, utterance.phonemes, latents.durations, hop_s,
                               (model_samples + len(lead)) / self.sample_rate * time_scale, time_scale)
            start = 0
            while start < latents.frames:
                stop = self._window_end(start, latents.frames, buffered_s(sent_s))
                began = time.perf_counter()
                audio = self.runtime.decode(latents.z, start, stop, weights)
                self._measure(stop - start, time.perf_counter() - began)
                if start == 0 and len(lead):
                    audio = np.concatenate([lead, audio])
                start = stop
                model_samples += len(audio)
                if profile is not None:
                    audio = profile.process(audio)
                if first_sent is None:
                    first_sent = time.perf_counter()
                sent_s += len(audio) / self.sample_rate
                yield Chunk(audio, words)
                words = []
        if profile is not None:
            tail = profile.process(np.zeros(0, np.float32), final=True)
            if len(tail):
                yield Chunk(tail, [])

    def synthesize(self, text: str, voice: LoadedVoice | None = None, speed: float = 1.0,
                   seed: int | None = None) -> tuple[np.ndarray, list[WordTime]]:
        """The whole text at once: audio and every word's times."""
        audio, words = [], []
        for chunk in self.stream(text, voice, speed, seed):
            audio.append(chunk.audio)
            words.extend(chunk.words)
        return np.concatenate(audio) if audio else np.zeros(0, np.float32), words
