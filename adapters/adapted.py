"""An adapted voice for synthesis: the engine with merged LoRA weights plus the voice profile."""

from __future__ import annotations

import numpy as np
import torch

from chorus.adapters.pitch import from_model_domain, world_pitch_shift
from chorus.adapters.psola import psola_shift
from chorus.adapters.train import TrainResult, VoiceProfile
from chorus.adapters.trainset import text_ids
from chorus.engine.vits import VitsModel
from chorus.engine.voice import BaseVoice, load_base_voice


class AdaptedVoice:
    """Synthesises text with a (merged) engine, stretching by the profile's length scale and pitch factor."""

    def __init__(self, engine: VitsModel, profile: VoiceProfile | None = None, voice: BaseVoice | None = None):
        self.engine = engine.eval()
        self.profile = profile or VoiceProfile()
        self.voice = voice or load_base_voice()

    @classmethod
    def base(cls) -> "AdaptedVoice":
        """The unadapted base voice, for comparison."""
        from chorus.engine.weights import load_vits_model

        return cls(load_vits_model())

    @classmethod
    def from_training(cls, result: TrainResult) -> "AdaptedVoice":
        """Merge a training result's LoRA into its engine (the peft wrapper is consumed)."""
        from chorus.adapters.lora import merged_engine

        return cls(merged_engine(result.peft_model), result.profile)

    @torch.no_grad()
    def synthesize(self, text: str, noise_scale: float | None = None, noise_w: float | None = None,
                   seed: int = 0) -> np.ndarray:
        """Float32 mono speech at the base voice's rate."""
        ids = text_ids(text, self.voice)
        gen = torch.Generator().manual_seed(seed)
        out = self.engine.infer(torch.tensor([ids]), torch.tensor([len(ids)]),
                                noise_scale=self.voice.noise_scale if noise_scale is None else noise_scale,
                                length_scale=self.profile.length_scale,
                                noise_w=self.voice.noise_w if noise_w is None else noise_w, generator=gen)
        # The whole-signal pYIN path: with serving's fast streamed path (chorus.adapters.profile) the bench's
        # high voice closed 69% of its similarity gap instead of 74% (bench/results/adapt-fastpitch.md).
        return apply_profile(out.audio[0, : int(out.audio_lengths[0])].numpy(), self.voice.sample_rate,
                             self.profile)


def apply_profile(audio: np.ndarray, sample_rate: int, profile: VoiceProfile) -> np.ndarray:
    """Move model-domain engine output to the voice's pitch and formants (chorus.adapters.pitch), whole signal.

    What evaluation and the gate score. Serving streams the fast path (chorus.adapters.profile), measured
    against this one: its pYIN pass costs more than the engine itself.
    """
    r = profile.pitch_factor
    if profile.pitch_method == "psola":
        return psola_shift(audio, sample_rate, r)
    if profile.pitch_method == "world":
        return world_pitch_shift(audio, sample_rate, r)
    if profile.pitch_method == "split":
        rho = profile.resample_factor  # psola_shift and from_model_domain pass audio through at factor 1
        return from_model_domain(psola_shift(audio, sample_rate, r / rho), sample_rate, rho)
    return from_model_domain(audio, sample_rate, r)


def load_adapted_voice(artifact_dir, expected_base_fingerprint: str | None = None) -> AdaptedVoice:
    """Verify an artifact (chorus.adapters.artifact), merge its LoRA into the base engine, apply its profile."""
    from chorus.adapters.artifact import load_artifact
    from chorus.adapters.lora import load_adapter_dir
    from chorus.engine.weights import load_vits_model

    voice = load_base_voice()
    loaded = load_artifact(artifact_dir, expected_base_fingerprint or voice.fingerprint)
    fields = set(VoiceProfile.model_fields)
    profile = VoiceProfile(**{k: v for k, v in loaded.manifest.profile.model_dump().items() if k in fields})
    return AdaptedVoice(load_adapter_dir(loaded.path, load_vits_model(voice)), profile, voice)
