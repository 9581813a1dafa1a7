"""Text encoder: phoneme embedding + transformer with windowed relative-position attention."""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import nn
from torch.nn import functional as F

from .hparams import VitsHParams
from .layers import ChannelLayerNorm, sequence_mask


class RelativeAttention(nn.Module):
    """Multi-head self-attention with learned relative-position keys/values within +-window."""

    def __init__(self, channels: int, n_heads: int, window_size: int, p_dropout: float = 0.0) -> None:
        super().__init__()
        self.n_heads = n_heads
        self.head_channels = channels // n_heads
        self.window_size = window_size
        self.conv_q = nn.Conv1d(channels, channels, 1)
        self.conv_k = nn.Conv1d(channels, channels, 1)
        self.conv_v = nn.Conv1d(channels, channels, 1)
        self.conv_o = nn.Conv1d(channels, channels, 1)
        self.drop = nn.Dropout(p_dropout)
        n_rel = 2 * window_size + 1
        std = self.head_channels**-0.5
        # One table shared by all heads: row r is relative offset (key - query) = r - window.
        self.emb_rel_k = nn.Parameter(torch.randn(1, n_rel, self.head_channels) * std)
        self.emb_rel_v = nn.Parameter(torch.randn(1, n_rel, self.head_channels) * std)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        batch, _, length = x.shape
        return x.view(batch, self.n_heads, self.head_channels, length).transpose(2, 3)

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor) -> torch.Tensor:
        batch, channels, length = x.shape
        q = self._heads(self.conv_q(x)) / math.sqrt(self.head_channels)
        k = self._heads(self.conv_k(x))
        v = self._heads(self.conv_v(x))
        w = self.window_size
        # offsets[i, j] = j - i; the band |j - i| <= window gets a relative term.
        pos = torch.arange(length, device=x.device)
        offsets = pos.unsqueeze(0) - pos.unsqueeze(1)
        in_band = offsets.abs() <= w
        band_index = (offsets.clamp(-w, w) + w).expand(batch, self.n_heads, length, length)

        scores = q @ k.transpose(-2, -1)
        rel_logits = q @ self.emb_rel_k[0].transpose(0, 1)  # [B, H, T, 2w+1]
        scores = scores + torch.gather(rel_logits, -1, band_index) * in_band
        scores = scores.masked_fill(attn_mask == 0, -1e4)
        p_attn = self.drop(F.softmax(scores, dim=-1))
        out = p_attn @ v

        # Attention weight on each relative offset: key index i + r - w for r in 0..2w.
        rel = torch.arange(-w, w + 1, device=x.device)
        key_index = pos.unsqueeze(1) + rel.unsqueeze(0)  # [T, 2w+1]
        key_valid = (key_index >= 0) & (key_index < length)
        key_index = key_index.clamp(0, length - 1).expand(batch, self.n_heads, length, 2 * w + 1)
        rel_weights = torch.gather(p_attn, -1, key_index) * key_valid
        out = out + rel_weights @ self.emb_rel_v[0]
        out = out.transpose(2, 3).reshape(batch, channels, length)
        return self.conv_o(out)


class FeedForward(nn.Module):
    """Two masked 'same' convolutions with ReLU between."""

    def __init__(self, channels: int, filter_channels: int, kernel_size: int, p_dropout: float = 0.0) -> None:
        super().__init__()
        self.conv_1 = nn.Conv1d(channels, filter_channels, kernel_size, padding=kernel_size // 2)
        self.conv_2 = nn.Conv1d(filter_channels, channels, kernel_size, padding=kernel_size // 2)
        self.drop = nn.Dropout(p_dropout)

    def forward(self, x: torch.Tensor, x_mask: torch.Tensor) -> torch.Tensor:
        x = self.drop(torch.relu(self.conv_1(x * x_mask)))
        return self.conv_2(x * x_mask) * x_mask


class TransformerEncoder(nn.Module):
    """Post-norm transformer stack: attention and feed-forward, each residual + layer norm."""

    def __init__(self, hp: VitsHParams) -> None:
        super().__init__()
        c = hp.hidden_channels
        self.drop = nn.Dropout(hp.p_dropout)
        self.attn_layers = nn.ModuleList(
            RelativeAttention(c, hp.n_heads, hp.window_size, hp.p_dropout) for _ in range(hp.n_layers)
        )
        self.norm_layers_1 = nn.ModuleList(ChannelLayerNorm(c) for _ in range(hp.n_layers))
        self.ffn_layers = nn.ModuleList(
            FeedForward(c, hp.filter_channels, hp.kernel_size, hp.p_dropout) for _ in range(hp.n_layers)
        )
        self.norm_layers_2 = nn.ModuleList(ChannelLayerNorm(c) for _ in range(hp.n_layers))

    def forward(self, x: torch.Tensor, x_mask: torch.Tensor) -> torch.Tensor:
        attn_mask = x_mask.unsqueeze(2) * x_mask.unsqueeze(-1)
        x = x * x_mask
        for attn, norm_1, ffn, norm_2 in zip(self.attn_layers, self.norm_layers_1, self.ffn_layers, self.norm_layers_2):
            x = norm_1(x + self.drop(attn(x, attn_mask)))
            x = norm_2(x + self.drop(ffn(x, x_mask)))
        return x * x_mask


class TextEncoding(NamedTuple):
    """Text encoder outputs: hidden states, prior mean/log-std per phoneme, and the mask."""

    x: torch.Tensor  # [B, hidden, T] encoder output (the duration predictor's input)
    m_p: torch.Tensor  # [B, inter, T] prior mean
    logs_p: torch.Tensor  # [B, inter, T] prior log standard deviation
    x_mask: torch.Tensor  # [B, 1, T] float mask


class TextEncoder(nn.Module):
    """Phoneme ids -> hidden states and the per-phoneme Gaussian prior."""

    def __init__(self, hp: VitsHParams) -> None:
        super().__init__()
        self.hidden_channels = hp.hidden_channels
        self.inter_channels = hp.inter_channels
        self.emb = nn.Embedding(hp.n_vocab, hp.hidden_channels)
        nn.init.normal_(self.emb.weight, 0.0, hp.hidden_channels**-0.5)
        self.encoder = TransformerEncoder(hp)
        self.proj = nn.Conv1d(hp.hidden_channels, hp.inter_channels * 2, 1)

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor) -> TextEncoding:
        x = self.emb(ids) * math.sqrt(self.hidden_channels)  # [B, T, C]
        x = x.transpose(1, 2)
        x_mask = sequence_mask(lengths, ids.shape[1]).unsqueeze(1).to(x.dtype)
        x = self.encoder(x, x_mask)
        stats = self.proj(x) * x_mask
        m_p, logs_p = torch.split(stats, self.inter_channels, dim=1)
        return TextEncoding(x, m_p, logs_p, x_mask)
