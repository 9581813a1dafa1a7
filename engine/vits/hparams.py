"""Hyperparameters of the VITS inference network (defaults: Piper's medium-quality voices)."""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class VitsHParams:
    """Shape of a single-speaker VITS generator; the defaults load en_US-joe-medium."""

    n_vocab: int = 256  # rows of the phoneme-id embedding table
    hidden_channels: int = 192  # text encoder width (also the prior/latent width)
    inter_channels: int = 192  # latent z channels
    filter_channels: int = 768  # text encoder feed-forward width
    n_heads: int = 2  # attention heads in the text encoder
    n_layers: int = 6  # text encoder transformer layers
    kernel_size: int = 3  # text encoder feed-forward conv kernel
    window_size: int = 4  # relative-position attention window (each side)
    p_dropout: float = 0.1  # text encoder dropout (training only)
    dp_filter_channels: int = 192  # stochastic duration predictor width
    dp_kernel_size: int = 3  # duration predictor dilated conv kernel
    dp_n_layers: int = 3  # dilated depth-separable conv layers (dilation kernel**i)
    dp_n_flows: int = 4  # rational-quadratic spline flows
    spline_bins: int = 10  # bins of each spline
    spline_tail_bound: float = 5.0  # spline is the identity outside [-bound, bound]
    flow_kernel_size: int = 5  # WN conv kernel in the coupling flows
    flow_dilation_rate: int = 1  # WN dilation growth
    flow_n_layers: int = 4  # WN layers per coupling
    flow_n_flows: int = 4  # mean-only coupling layers (each followed by a flip)
    upsample_initial_channel: int = 256  # decoder width after conv_pre
    upsample_rates: tuple[int, ...] = (8, 8, 4)  # decoder upsampling factors
    upsample_kernel_sizes: tuple[int, ...] = (16, 16, 8)  # transposed conv kernels
    resblock_kernel_sizes: tuple[int, ...] = (3, 5, 7)  # HiFi-GAN type-2 resblock kernels
    resblock_dilation_sizes: tuple[tuple[int, ...], ...] = ((1, 2), (2, 6), (3, 12))  # their dilations

    def __post_init__(self) -> None:
        if self.hidden_channels % self.n_heads:
            raise ValueError(f"hidden_channels {self.hidden_channels} is not divisible by n_heads {self.n_heads}")
        if len(self.upsample_rates) != len(self.upsample_kernel_sizes):
            raise ValueError("upsample_rates and upsample_kernel_sizes must have the same length")
        if len(self.resblock_kernel_sizes) != len(self.resblock_dilation_sizes):
            raise ValueError("resblock_kernel_sizes and resblock_dilation_sizes must have the same length")

    @property
    def hop_length(self) -> int:
        """Audio samples per latent frame."""
        return math.prod(self.upsample_rates)
