"""Mean-only residual coupling flow (WaveNet-style coupling nets) that maps the prior to latents."""

from __future__ import annotations

import torch
from torch import nn

from .hparams import VitsHParams
from .layers import Flip, same_padding


class WaveNet(nn.Module):
    """Non-causal WaveNet stack: gated dilated convs with residual and skip outputs."""

    def __init__(self, hidden_channels: int, kernel_size: int, dilation_rate: int, n_layers: int) -> None:
        super().__init__()
        self.hidden_channels = hidden_channels
        self.in_layers = nn.ModuleList()
        self.res_skip_layers = nn.ModuleList()
        for i in range(n_layers):
            dilation = dilation_rate**i
            self.in_layers.append(nn.Conv1d(hidden_channels, 2 * hidden_channels, kernel_size, dilation=dilation,
                                            padding=same_padding(kernel_size, dilation)))
            # The last layer only feeds the skip sum.
            out = 2 * hidden_channels if i < n_layers - 1 else hidden_channels
            self.res_skip_layers.append(nn.Conv1d(hidden_channels, out, 1))

    def forward(self, x: torch.Tensor, x_mask: torch.Tensor) -> torch.Tensor:
        h = self.hidden_channels
        skip = torch.zeros_like(x)
        last = len(self.in_layers) - 1
        for i, (in_layer, res_skip_layer) in enumerate(zip(self.in_layers, self.res_skip_layers)):
            a = in_layer(x)
            acts = torch.tanh(a[:, :h]) * torch.sigmoid(a[:, h:])
            res_skip = res_skip_layer(acts)
            if i < last:
                x = (x + res_skip[:, :h]) * x_mask
                skip = skip + res_skip[:, h:]
            else:
                skip = skip + res_skip
        return skip * x_mask


class MeanOnlyCoupling(nn.Module):
    """Affine coupling with unit scale: the second half is shifted by a function of the first."""

    def __init__(self, channels: int, hidden_channels: int, kernel_size: int, dilation_rate: int,
                 n_layers: int) -> None:
        super().__init__()
        self.half = channels // 2
        self.pre = nn.Conv1d(self.half, hidden_channels, 1)
        self.enc = WaveNet(hidden_channels, kernel_size, dilation_rate, n_layers)
        self.post = nn.Conv1d(hidden_channels, self.half, 1)
        nn.init.zeros_(self.post.weight)  # starts as the identity, as in training from scratch
        nn.init.zeros_(self.post.bias)

    def forward(self, x: torch.Tensor, x_mask: torch.Tensor, g: torch.Tensor | None = None,
                reverse: bool = True) -> torch.Tensor:
        x0, x1 = torch.split(x, [self.half, self.half], dim=1)
        h = self.enc(self.pre(x0) * x_mask, x_mask)
        shift = self.post(h) * x_mask
        x1 = (x1 - shift) * x_mask if reverse else (x1 + shift) * x_mask
        return torch.cat([x0, x1], dim=1)


class CouplingFlow(nn.Module):
    """Stack of (coupling, flip) pairs; reverse=True maps prior samples to decoder latents."""

    def __init__(self, hp: VitsHParams) -> None:
        super().__init__()
        flows: list[nn.Module] = []
        for _ in range(hp.flow_n_flows):
            flows.append(MeanOnlyCoupling(hp.inter_channels, hp.hidden_channels, hp.flow_kernel_size,
                                          hp.flow_dilation_rate, hp.flow_n_layers))
            flows.append(Flip())
        self.flows = nn.ModuleList(flows)

    def forward(self, x: torch.Tensor, x_mask: torch.Tensor, reverse: bool = True) -> torch.Tensor:
        steps = reversed(self.flows) if reverse else self.flows
        for flow in steps:
            x = flow(x, x_mask, reverse=reverse)
        return x
