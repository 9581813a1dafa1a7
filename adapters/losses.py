"""Spectral training losses: L1 log-mel, multi-resolution STFT (spectral convergence + log magnitude), and a
pitch-blind spectral-envelope loss (liftered cepstrum)."""

from __future__ import annotations

import functools

import torch
from torch.nn import functional as F

STFT_RESOLUTIONS = ((512, 128, 512), (1024, 256, 1024), (2048, 512, 2048))
"""(n_fft, hop, window) per resolution, as in Parallel WaveGAN's multi-resolution STFT loss."""


@functools.lru_cache(maxsize=4)
def _mel_basis(sample_rate: int, n_fft: int, n_mels: int) -> torch.Tensor:
    import librosa

    return torch.from_numpy(librosa.filters.mel(sr=sample_rate, n_fft=n_fft, n_mels=n_mels, fmin=0.0,
                                                fmax=sample_rate / 2)).float()


def _magnitude(audio: torch.Tensor, n_fft: int, hop: int, win: int) -> torch.Tensor:
    window = torch.hann_window(win, device=audio.device)
    spec = torch.stft(audio, n_fft, hop, win, window, center=True, return_complex=True)
    return spec.abs().clamp_min(1e-7)


def log_mel(audio: torch.Tensor, sample_rate: int, n_fft: int = 1024, hop: int = 256, n_mels: int = 80) -> torch.Tensor:
    """Log-mel spectrogram [B, n_mels, frames] of audio [B, S] (the VITS training features)."""
    mag = _magnitude(audio, n_fft, hop, n_fft)
    return torch.log(torch.matmul(_mel_basis(sample_rate, n_fft, n_mels), mag).clamp_min(1e-5))


def mel_loss(pred: torch.Tensor, target: torch.Tensor, sample_rate: int) -> torch.Tensor:
    """Mean absolute difference of log-mel spectrograms."""
    return F.l1_loss(log_mel(pred, sample_rate), log_mel(target, sample_rate))


def stft_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Multi-resolution STFT loss: spectral convergence plus L1 log magnitude, averaged over resolutions."""
    total = pred.new_zeros(())
    for n_fft, hop, win in STFT_RESOLUTIONS:
        p, t = _magnitude(pred, n_fft, hop, win), _magnitude(target, n_fft, hop, win)
        sc = torch.linalg.norm(t - p) / torch.linalg.norm(t).clamp_min(1e-7)
        total = total + sc + F.l1_loss(torch.log(p), torch.log(t))
    return total / len(STFT_RESOLUTIONS)


ENVELOPE_FFT = 1024
ENVELOPE_LIFTER = 40
"""Cepstral coefficients kept for the envelope: quefrencies below 40 samples (1.8 ms at 22050 Hz) hold the
formants and spectral tilt; a voice's pitch period (>= 2 ms up to 500 Hz) and its harmonics lie above."""


def log_envelope(audio: torch.Tensor, n_fft: int = ENVELOPE_FFT, lifter: int = ENVELOPE_LIFTER) -> torch.Tensor:
    """Smoothed log-magnitude spectral envelope [B, frames, n_fft // 2 + 1]: the low-quefrency cepstrum."""
    log_mag = torch.log(_magnitude(audio, n_fft, n_fft // 4, n_fft)).transpose(1, 2)
    cep = torch.fft.irfft(log_mag, n=n_fft)
    keep = torch.zeros(n_fft, device=audio.device)
    keep[:lifter] = 1.0
    keep[n_fft - lifter + 1:] = 1.0
    return torch.fft.rfft(cep * keep).real


def envelope_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """L1 distance of spectral envelopes, blind to pitch.

    Latents come from the text path, so the decoder's pitch contour is the base voice's rendering and never
    the target clip's exactly: where the harmonics of the two disagree, fine-resolution spectral losses
    pull the decoder towards a smeared, buzzy average. The envelope (formants, tilt, loudness) carries the
    timbre and ignores where the harmonics fall.
    """
    return F.l1_loss(log_envelope(pred), log_envelope(target))
