"""The VITS inference network, with each stage callable on its own."""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from .decoder import Generator
from .duration import StochasticDurationPredictor
from .flow import CouplingFlow
from .hparams import VitsHParams
from .layers import sequence_mask
from .text_encoder import TextEncoder, TextEncoding


class Prior(NamedTuple):
    """The per-frame Gaussian prior after expanding phonemes by their durations."""

    m_p: torch.Tensor  # [B, C, F] mean per frame
    logs_p: torch.Tensor  # [B, C, F] log std per frame
    y_mask: torch.Tensor  # [B, 1, F] float frame mask
    y_lengths: torch.Tensor  # [B] frames per item


class InferResult(NamedTuple):
    """Synthesised audio for a batch, with lengths and the per-phoneme durations used."""

    audio: torch.Tensor  # [B, S] float32 in [-1, 1], zero past audio_lengths
    audio_lengths: torch.Tensor  # [B] samples per item
    durations: torch.Tensor  # [B, T] frames per phoneme (0 on padding)


class VitsModel(nn.Module):
    """Single-speaker VITS generator; sub-modules enc_p, dp, flow, dec are named as in Piper."""

    def __init__(self, hp: VitsHParams | None = None) -> None:
        super().__init__()
        self.hp = hp or VitsHParams()
        self.enc_p = TextEncoder(self.hp)
        self.dp = StochasticDurationPredictor(self.hp)
        self.flow = CouplingFlow(self.hp)
        self.dec = Generator(self.hp)

    @property
    def hop_length(self) -> int:
        """Audio samples per latent frame."""
        return self.hp.hop_length

    def check_inputs(self, ids: torch.Tensor, lengths: torch.Tensor) -> None:
        """Raise ValueError naming the problem if ids [B, T] / lengths [B] are not a valid padded batch."""
        if ids.dim() != 2 or ids.dtype != torch.long:
            raise ValueError(f"ids must be a [B, T] long tensor, got {tuple(ids.shape)} {ids.dtype}")
        if lengths.shape != (ids.shape[0],):
            raise ValueError(f"lengths must have shape [{ids.shape[0]}], got {tuple(lengths.shape)}")
        if ids.numel() == 0 or int(lengths.min()) < 1 or int(lengths.max()) > ids.shape[1]:
            raise ValueError(f"lengths must be in 1..{ids.shape[1]}, got {lengths.tolist()}")
        if int(ids.min()) < 0 or int(ids.max()) >= self.hp.n_vocab:
            raise ValueError(f"phoneme ids must be in 0..{self.hp.n_vocab - 1}, got {int(ids.min())}..{int(ids.max())}")

    def encode_text(self, ids: torch.Tensor, lengths: torch.Tensor) -> TextEncoding:
        """Phoneme ids [B, T] (padded) -> hidden states, per-phoneme prior and mask."""
        return self.enc_p(ids, lengths)

    def predict_durations(self, enc: TextEncoding, noise_w: float = 0.8, length_scale: float = 1.0,
                          generator: torch.Generator | None = None) -> torch.Tensor:
        """Whole frames per phoneme [B, T] (long): ceil(exp(log duration) * length_scale), 0 on padding."""
        logw = self.dp(enc.x, enc.x_mask, noise_scale=noise_w, generator=generator)
        w = torch.exp(logw) * enc.x_mask * length_scale
        return torch.ceil(w).squeeze(1).long()

    def expand_prior(self, m_p: torch.Tensor, logs_p: torch.Tensor, durations: torch.Tensor) -> Prior:
        """Repeat each phoneme's prior for its duration in frames (a differentiable alignment matmul)."""
        y_lengths = durations.sum(1).clamp_min(1)
        frames = int(y_lengths.max())
        ends = torch.cumsum(durations, 1)  # [B, T]
        starts = ends - durations
        t = torch.arange(frames, device=durations.device).view(1, frames, 1)
        path = ((t >= starts.unsqueeze(1)) & (t < ends.unsqueeze(1))).to(m_p.dtype)  # [B, F, T]
        y_mask = sequence_mask(y_lengths, frames).unsqueeze(1).to(m_p.dtype)
        m = torch.bmm(path, m_p.transpose(1, 2)).transpose(1, 2)
        logs = torch.bmm(path, logs_p.transpose(1, 2)).transpose(1, 2)
        return Prior(m, logs, y_mask, y_lengths)

    def sample_prior(self, prior: Prior, noise_scale: float = 0.667,
                     generator: torch.Generator | None = None) -> torch.Tensor:
        """z_p = mean + noise_scale * std * N(0, 1), per frame."""
        noise = torch.randn(prior.m_p.shape, generator=generator, dtype=prior.m_p.dtype, device=prior.m_p.device)
        return prior.m_p + noise * torch.exp(prior.logs_p) * noise_scale

    def flow_reverse(self, z_p: torch.Tensor, y_mask: torch.Tensor) -> torch.Tensor:
        """Map prior samples to decoder latents through the inverted coupling flow."""
        return self.flow(z_p, y_mask, reverse=True)

    def decode(self, z: torch.Tensor, y_mask: torch.Tensor) -> torch.Tensor:
        """Latents [B, C, F] -> waveform [B, F * hop], zero past each item's length."""
        audio = self.dec(z * y_mask).squeeze(1)
        sample_mask = torch.repeat_interleave(y_mask.squeeze(1), self.hop_length, dim=1)
        return audio * sample_mask

    @torch.no_grad()
    def infer(self, ids: torch.Tensor, lengths: torch.Tensor, noise_scale: float = 0.667,
              length_scale: float = 1.0, noise_w: float = 0.8,
              generator: torch.Generator | None = None) -> InferResult:
        """Synthesise a padded batch of phoneme-id sequences."""
        self.check_inputs(ids, lengths)
        enc = self.encode_text(ids, lengths)
        durations = self.predict_durations(enc, noise_w, length_scale, generator)
        prior = self.expand_prior(enc.m_p, enc.logs_p, durations)
        z_p = self.sample_prior(prior, noise_scale, generator)
        z = self.flow_reverse(z_p, prior.y_mask)
        audio = self.decode(z, prior.y_mask)
        return InferResult(audio, prior.y_lengths * self.hop_length, durations)
