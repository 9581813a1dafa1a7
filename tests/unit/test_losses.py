"""Training losses: the spectral-envelope loss sees formants and ignores pitch; the fine spectral losses see both."""

from __future__ import annotations

import numpy as np
import torch
from scipy.signal import lfilter

from chorus.adapters.losses import envelope_loss, mel_loss, stft_loss

SR = 22050


def _vowel(f0: float, formants: tuple[float, ...], seconds: float = 1.0) -> torch.Tensor:
    """A pulse train at `f0` through second-order resonators at `formants` (a crude sustained vowel)."""
    n = int(SR * seconds)
    x = np.zeros(n)
    x[(np.arange(0, seconds, 1 / f0) * SR).astype(int)] = 1.0
    for f in formants:
        r = np.exp(-np.pi * 120 / SR)
        x = lfilter([1 - r], [1, -2 * r * np.cos(2 * np.pi * f / SR), r * r], x)
    x = x / np.abs(x).max() * 0.5
    return torch.from_numpy(x.astype(np.float32)).unsqueeze(0)


def test_envelope_loss_ignores_pitch_and_sees_formants():
    ref = _vowel(100, (700, 1200, 2600))
    other_pitch = _vowel(130, (700, 1200, 2600))
    other_formants = _vowel(100, (800, 1400, 3000))
    env_pitch, env_formants = envelope_loss(ref, other_pitch), envelope_loss(ref, other_formants)
    mel_pitch, mel_formants = mel_loss(ref, other_pitch, SR), mel_loss(ref, other_formants, SR)
    # Moving formants by ~15% costs the envelope loss far more than moving pitch by 30% ...
    assert env_formants > 3 * env_pitch, (float(env_pitch), float(env_formants))
    # ... while the log-mel loss is dominated by where the harmonics fall.
    assert mel_pitch > 0.5 * mel_formants, (float(mel_pitch), float(mel_formants))
    assert float(envelope_loss(ref, ref)) == 0.0


def test_losses_have_gradients():
    pred = _vowel(110, (600, 1100)).requires_grad_(True)
    target = _vowel(100, (700, 1200))
    (envelope_loss(pred, target) + mel_loss(pred, target, SR) + stft_loss(pred, target)).backward()
    assert pred.grad is not None and torch.isfinite(pred.grad).all() and float(pred.grad.abs().sum()) > 0
