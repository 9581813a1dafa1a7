"""Stochastic duration predictor, run in reverse: noise -> log durations through spline flows."""

from __future__ import annotations

import math

import torch
from torch import nn

from .hparams import VitsHParams
from .layers import DilatedDepthSeparableConv, Flip
from .spline import inverse_rq_spline


class ElementwiseAffine(nn.Module):
    """Per-channel affine flow y = m + exp(logs) * x."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.m = nn.Parameter(torch.zeros(channels, 1))
        self.logs = nn.Parameter(torch.zeros(channels, 1))

    def forward(self, x: torch.Tensor, x_mask: torch.Tensor, g: torch.Tensor | None = None, reverse: bool = True):
        if not reverse:
            raise NotImplementedError("only the reverse (sampling) direction is implemented")
        return (x - self.m) * torch.exp(-self.logs) * x_mask


class SplineCouplingFlow(nn.Module):
    """Coupling flow: the first half conditions a rational-quadratic spline on the second half."""

    def __init__(self, channels: int, filter_channels: int, kernel_size: int, n_layers: int,
                 n_bins: int, tail_bound: float) -> None:
        super().__init__()
        self.half = channels // 2
        self.filter_channels = filter_channels
        self.n_bins = n_bins
        self.tail_bound = tail_bound
        self.pre = nn.Conv1d(self.half, filter_channels, 1)
        self.convs = DilatedDepthSeparableConv(filter_channels, kernel_size, n_layers)
        self.proj = nn.Conv1d(filter_channels, self.half * (3 * n_bins - 1), 1)

    def forward(self, x: torch.Tensor, x_mask: torch.Tensor, g: torch.Tensor | None = None, reverse: bool = True):
        if not reverse:
            raise NotImplementedError("only the reverse (sampling) direction is implemented")
        x0, x1 = torch.split(x, [self.half, self.half], dim=1)
        h = self.convs(self.pre(x0), x_mask, g=g)
        h = self.proj(h) * x_mask
        batch, _, length = x0.shape
        h = h.reshape(batch, self.half, -1, length).permute(0, 1, 3, 2)  # [B, half, T, 3K-1]
        k = self.n_bins
        scale = math.sqrt(self.filter_channels)
        x1 = inverse_rq_spline(x1, h[..., :k] / scale, h[..., k:2 * k] / scale, h[..., 2 * k:], self.tail_bound)
        return torch.cat([x0, x1], dim=1) * x_mask


class UnusedFlow(nn.Module):
    """Placeholder for the flow that reverse sampling skips (its weights are not in Piper exports)."""

    def forward(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        raise RuntimeError("this flow is only used in training and has no weights here")


class StochasticDurationPredictor(nn.Module):
    """Predicts log durations per phoneme by running noise backwards through conditioned flows."""

    def __init__(self, hp: VitsHParams) -> None:
        super().__init__()
        c, f = hp.hidden_channels, hp.dp_filter_channels
        self.pre = nn.Conv1d(c, f, 1)
        self.convs = DilatedDepthSeparableConv(f, hp.dp_kernel_size, hp.dp_n_layers)
        self.proj = nn.Conv1d(f, f, 1)
        # Order as trained: affine, then (spline coupling, flip) pairs. Reverse sampling walks it
        # backwards and skips the first spline coupling (index 1), as VITS does.
        flows: list[nn.Module] = [ElementwiseAffine(2)]
        for i in range(hp.dp_n_flows):
            if i == 0:
                flows.append(UnusedFlow())
            else:
                flows.append(SplineCouplingFlow(2, f, hp.dp_kernel_size, hp.dp_n_layers, hp.spline_bins,
                                                hp.spline_tail_bound))
            flows.append(Flip())
        self.flows = nn.ModuleList(flows)

    def forward(self, x: torch.Tensor, x_mask: torch.Tensor, noise_scale: float = 1.0,
                generator: torch.Generator | None = None) -> torch.Tensor:
        """Log durations [B, 1, T] for encoder output x [B, C, T]."""
        x = self.convs(self.pre(x.detach()), x_mask)
        x = self.proj(x) * x_mask
        batch, _, length = x.shape
        z = torch.randn(batch, 2, length, generator=generator, dtype=x.dtype, device=x.device) * noise_scale
        for flow in reversed(self.flows):
            if isinstance(flow, UnusedFlow):
                continue
            z = flow(z, x_mask, g=x, reverse=True)
        return z[:, :1]
