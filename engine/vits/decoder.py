"""HiFi-GAN generator with type-2 residual blocks: latent frames -> waveform."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from .hparams import VitsHParams
from .layers import same_padding

LRELU_SLOPE = 0.1


class ResBlock2(nn.Module):
    """Residual block of single dilated convolutions, each preceded by a leaky ReLU."""

    def __init__(self, channels: int, kernel_size: int, dilations: tuple[int, ...]) -> None:
        super().__init__()
        self.convs = nn.ModuleList(
            nn.Conv1d(channels, channels, kernel_size, dilation=d, padding=same_padding(kernel_size, d))
            for d in dilations
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for conv in self.convs:
            x = x + conv(F.leaky_relu(x, LRELU_SLOPE))
        return x


class Generator(nn.Module):
    """Upsampling conv stack; each stage averages several resblocks of different kernel sizes."""

    def __init__(self, hp: VitsHParams) -> None:
        super().__init__()
        self.num_kernels = len(hp.resblock_kernel_sizes)
        ch = hp.upsample_initial_channel
        self.conv_pre = nn.Conv1d(hp.inter_channels, ch, 7, padding=3)
        self.ups = nn.ModuleList()
        self.resblocks = nn.ModuleList()
        for i, (rate, kernel) in enumerate(zip(hp.upsample_rates, hp.upsample_kernel_sizes)):
            out = ch // 2 ** (i + 1)
            self.ups.append(nn.ConvTranspose1d(out * 2, out, kernel, rate, padding=(kernel - rate) // 2))
            for k, d in zip(hp.resblock_kernel_sizes, hp.resblock_dilation_sizes):
                self.resblocks.append(ResBlock2(out, k, d))
        self.conv_post = nn.Conv1d(out, 1, 7, padding=3, bias=False)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """Waveform [B, 1, T * hop] in [-1, 1] from latents [B, C, T]."""
        x = self.conv_pre(z)
        for i, up in enumerate(self.ups):
            x = up(F.leaky_relu(x, LRELU_SLOPE))
            blocks = self.resblocks[i * self.num_kernels:(i + 1) * self.num_kernels]
            acc = blocks[0](x)
            for block in blocks[1:]:
                acc = acc + block(x)
            x = acc / self.num_kernels
        x = self.conv_post(F.leaky_relu(x))  # default slope 0.01 here, as trained
        return torch.tanh(x)
