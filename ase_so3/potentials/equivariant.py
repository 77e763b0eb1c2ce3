"""Equivariant blocks for residual networks on ``x[node, (l, m), channel]``: a normalisation over
degrees (eSEN's RMS norm), a gated nonlinearity and a gated point-wise feed-forward block.

Gating (Weiler et al. 2018, as in NequIP and eSEN): scalars pass through SiLU; each degree
``l > 0`` of each channel is multiplied by ``sigmoid`` of an extra scalar made for it. Scalars
times irreps stay equivariant, and every function is smooth, so forces from autograd are too.
"""

from __future__ import annotations

import torch
from torch import nn

from ase_so3.potentials.blocks import DegreeLinear, gate
from ase_so3.so3.irreps import degree_of_index


class EquivariantRMSNorm(nn.Module):
    """Per node: centre the scalar channels, then divide every component by one RMS taken over
    all channels and degrees, each degree weighted equally (``1 / ((2l+1)(lmax+1))`` per
    component), then a learned scale per (degree, channel) and a bias on scalars.

    The RMS is rotation invariant (a sum of per-degree norms), so the map is equivariant; ``eps``
    keeps it smooth at zero."""

    def __init__(self, lmax: int, channels: int, eps: float = 1e-5):
        super().__init__()
        self.lmax, self.eps = lmax, eps
        self.weight = nn.Parameter(torch.ones(lmax + 1, channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        degree = degree_of_index(lmax)
        self.register_buffer("degree", degree, persistent=False)
        balance = 1.0 / ((2 * degree + 1).to(torch.float64) * (lmax + 1))
        self.register_buffer("balance", balance, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [N, D, C] -> [N, D, C]
        scalars = x[:, :1] - x[:, :1].mean(dim=2, keepdim=True)
        x = torch.cat([scalars, x[:, 1:]], dim=1) if self.lmax else scalars
        power = (x.pow(2).mean(dim=2) * self.balance.to(x.dtype)).sum(dim=1)  # [N]
        x = x * torch.rsqrt(power + self.eps)[:, None, None] * self.weight[self.degree]
        return torch.cat([x[:, :1] + self.bias, x[:, 1:]], dim=1)


class GatedFeedForward(nn.Module):
    """Point-wise equivariant MLP: per-degree linear ``C -> H`` (and gate scalars from the input
    scalars), gate, per-degree linear ``H -> C``."""

    def __init__(self, lmax: int, channels: int, hidden: int):
        super().__init__()
        self.lmax, self.hidden = lmax, hidden
        self.up = DegreeLinear(lmax, channels, hidden)
        self.gates = nn.Linear(channels, lmax * hidden) if lmax else None
        self.down = DegreeLinear(lmax, hidden, channels)
        self.register_buffer("degree", degree_of_index(lmax), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # gates from the input's scalars
        h = self.up(x)
        g = (self.gates(x[:, 0]).view(x.shape[0], self.lmax, self.hidden) if self.gates is not None
             else None)
        return self.down(gate(h, g, self.degree))


class FeedForwardResidual(nn.Module):
    """``x + ffn(norm(x))`` (the norm only with ``norm``): the feed-forward half of a pre-norm
    residual block."""

    def __init__(self, lmax: int, channels: int, hidden: int, norm: bool):
        super().__init__()
        self.ffn = GatedFeedForward(lmax, channels, hidden)
        self.norm = EquivariantRMSNorm(lmax, channels) if norm else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.ffn(self.norm(x) if self.norm is not None else x)
