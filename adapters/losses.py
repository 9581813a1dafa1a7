"""Spectral training losses: L1 log-mel and multi-resolution STFT (spectral convergence + log magnitude)."""

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
