"""Inverse of a monotonic rational-quadratic spline with linear tails (Durkan et al., 2019)."""

from __future__ import annotations

import math

import torch
from torch.nn import functional as F

MIN_BIN_WIDTH = 1e-3
MIN_BIN_HEIGHT = 1e-3
MIN_DERIVATIVE = 1e-3


def _knots(unnormalized: torch.Tensor, low: float, high: float, min_size: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Bin sizes and cumulative knot positions on [low, high] from unnormalised bin logits."""
    n_bins = unnormalized.shape[-1]
    sizes = min_size + (1 - min_size * n_bins) * F.softmax(unnormalized, dim=-1)
    knots = F.pad(torch.cumsum(sizes, dim=-1), (1, 0), value=0.0)
    knots = (high - low) * knots + low
    # Pin the ends exactly so rounding cannot move the outermost knots.
    knots = torch.cat([torch.full_like(knots[..., :1], low), knots[..., 1:-1], torch.full_like(knots[..., :1], high)], -1)
    return knots[..., 1:] - knots[..., :-1], knots


def inverse_rq_spline(
    y: torch.Tensor,
    unnormalized_widths: torch.Tensor,
    unnormalized_heights: torch.Tensor,
    unnormalized_derivatives: torch.Tensor,
    tail_bound: float,
) -> torch.Tensor:
    """Map outputs y back through the spline; identity outside [-tail_bound, tail_bound].

    Shapes: y [...], widths/heights [..., K], derivatives [..., K-1] (interior knots; the
    boundary derivatives are fixed to 1 so the linear tails join smoothly).
    """
    bound = tail_bound
    n_bins = unnormalized_widths.shape[-1]
    # softplus(c) + min_derivative == 1 at the two boundary knots.
    edge = math.log(math.exp(1 - MIN_DERIVATIVE) - 1)
    derivatives = MIN_DERIVATIVE + F.softplus(F.pad(unnormalized_derivatives, (1, 1), value=edge))
    widths, cum_widths = _knots(unnormalized_widths, -bound, bound, MIN_BIN_WIDTH)
    heights, cum_heights = _knots(unnormalized_heights, -bound, bound, MIN_BIN_HEIGHT)

    inside = (y >= -bound) & (y <= bound)
    y_in = y.clamp(-bound, bound)
    # Which bin: count knots at or below y (last knot nudged up so y == top lands in the last bin).
    search = torch.cat([cum_heights[..., :-1], cum_heights[..., -1:] + 1e-6], -1)
    bin_idx = ((y_in.unsqueeze(-1) >= search).sum(-1, keepdim=True) - 1).clamp(0, n_bins - 1)

    def pick(t: torch.Tensor) -> torch.Tensor:
        return torch.gather(t, -1, bin_idx).squeeze(-1)

    x_k, w_k = pick(cum_widths[..., :-1]), pick(widths)
    y_k, h_k = pick(cum_heights[..., :-1]), pick(heights)
    s_k = h_k / w_k
    d_k, d_k1 = pick(derivatives[..., :-1]), pick(derivatives[..., 1:])

    # Solve the quadratic a*xi^2 + b*xi + c = 0 for the bin-relative position xi in [0, 1].
    dy = y_in - y_k
    curvature = d_k + d_k1 - 2 * s_k
    a = dy * curvature + h_k * (s_k - d_k)
    b = h_k * d_k - dy * curvature
    c = -s_k * dy
    discriminant = (b * b - 4 * a * c).clamp_min(0)
    xi = (2 * c) / (-b - torch.sqrt(discriminant))
    x = xi * w_k + x_k
    return torch.where(inside, x, y)
