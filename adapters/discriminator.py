"""A small multi-resolution spectrogram discriminator for an adversarial + feature-matching loss.

The Piper checkpoint ships no discriminators, so this one starts from scratch and trains alongside the
LoRA (least-squares GAN, as HiFi-GAN). Its feature-matching term compares intermediate feature maps of
real and generated windows, which penalises the buzzy "average" spectra that L1 spectral losses alone
pull a decoder towards on a voice far from the base.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

RESOLUTIONS = ((1024, 256), (512, 128), (256, 64))
"""(n_fft, hop) of each sub-discriminator's magnitude spectrogram."""


class SpecDiscriminator(nn.Module):
    """2-D conv stack over one log-magnitude spectrogram; returns logits and feature maps."""

    def __init__(self, n_fft: int, hop: int, channels: int = 16) -> None:
        super().__init__()
        self.n_fft, self.hop = n_fft, hop
        self.convs = nn.ModuleList([
            nn.Conv2d(1, channels, (3, 9), padding=(1, 4)),
            nn.Conv2d(channels, channels, (3, 9), stride=(1, 2), padding=(1, 4)),
            nn.Conv2d(channels, channels, (3, 9), stride=(1, 2), padding=(1, 4)),
            nn.Conv2d(channels, channels, (3, 3), padding=(1, 1)),
        ])
        self.post = nn.Conv2d(channels, 1, (3, 3), padding=(1, 1))

    def forward(self, audio: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        window = torch.hann_window(self.n_fft, device=audio.device)
        spec = torch.stft(audio, self.n_fft, self.hop, self.n_fft, window, center=True, return_complex=True)
        x = torch.log(spec.abs().clamp_min(1e-5)).transpose(1, 2).unsqueeze(1)  # [B, 1, T, F]
        feats = []
        for conv in self.convs:
            x = F.leaky_relu(conv(x), 0.1)
            feats.append(x)
        return self.post(x), feats


class MultiResolutionDiscriminator(nn.Module):
    """One SpecDiscriminator per resolution."""

    def __init__(self, channels: int = 16) -> None:
        super().__init__()
        self.discs = nn.ModuleList(SpecDiscriminator(n, h, channels) for n, h in RESOLUTIONS)

    def forward(self, audio: torch.Tensor) -> list[tuple[torch.Tensor, list[torch.Tensor]]]:
        return [d(audio) for d in self.discs]


def discriminator_loss(disc: MultiResolutionDiscriminator, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """Least-squares loss: real windows towards 1, generated (detached) towards 0."""
    loss = real.new_zeros(())
    for (r, _), (f, _) in zip(disc(real), disc(fake.detach())):
        loss = loss + torch.mean((1 - r) ** 2) + torch.mean(f ** 2)
    return loss


def generator_losses(disc: MultiResolutionDiscriminator, real: torch.Tensor,
                     fake: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(adversarial, feature matching) losses for the generator."""
    adv, fm = fake.new_zeros(()), fake.new_zeros(())
    with torch.no_grad():
        real_out = disc(real)
    for (f, f_feats), (_, r_feats) in zip(disc(fake), real_out):
        adv = adv + torch.mean((1 - f) ** 2)
        fm = fm + sum(F.l1_loss(a, b) for a, b in zip(f_feats, r_feats)) / len(f_feats)
    return adv, fm
