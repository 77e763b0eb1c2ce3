"""eSCN (Passaro & Zitnick, 2023): SO(2) convolutions in the edge frame.

Per layer and edge j -> i: rotate ``x_j`` into the frame where the edge lies on the polar axis
(:mod:`~ase_so3.so3.edge_frame`, deterministic and differentiable for every direction),
keep orders ``|m| <= mmax``, scale each (m, l, channel) by a radial network of the edge length
(times the smooth cutoff envelope), apply one learned matrix ``W_m`` per ``|m|`` that mixes degrees
and channels (:func:`~ase_so3.so3.so2.so2_linear`), rotate back, sum over neighbours. Cost per edge
grows as O(L^3) instead of the O(L^6) of the full tensor product.

Parity: features keep natural parity and the ``m -> -m`` couplings (from odd tensor-product paths)
are dropped, so the energy is invariant under reflections too (see :mod:`ase_so3.so3.so2`).
Nonlinearity: TFN's norm nonlinearity (a gate on each degree by its norm), not eSCN's grid
activation. Self-interaction and residual as in TFN.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ase_so3 import keys as K
from ase_so3.potentials.base import Potential, PotentialConfig
from ase_so3.potentials.blocks import (BesselBasis, EnergyReadout, MessagePassingLayer,
                                       PolynomialEnvelope, RadialWeights, SpeciesEmbedding)
from ase_so3.potentials.registry import register
from ase_so3.so3 import so2
from ase_so3.so3.edge_frame import EdgeWignerD


@dataclass(frozen=True)
class ESCNConfig(PotentialConfig):
    lmax: int = 3
    mmax: int | None = None  # highest |m| kept in the edge frame; None: min(2, lmax)

    def __post_init__(self):
        super().__post_init__()
        if self.mmax is None:
            object.__setattr__(self, "mmax", min(2, self.lmax))
        if self.lmax > 8:
            raise ValueError("ESCN supports lmax up to 8")
        if not 0 <= self.mmax <= self.lmax:
            raise ValueError("mmax must satisfy 0 <= mmax <= lmax")


class SO2Convolution(nn.Module):
    """Radially modulated SO(2) linear map: ``y_m = W_m (rad_m(r) * x_m)`` for each ``|m|``."""

    def __init__(self, lmax: int, mmax: int, c_in: int, c_out: int, num_basis: int, hidden: int):
        super().__init__()
        self.lmax, self.mmax = lmax, mmax
        sizes = [lmax - m + 1 for m in range(mmax + 1)]
        self.weights = nn.ParameterList(
            nn.Parameter(torch.randn(n * c_in, n * c_out) / (n * c_in) ** 0.5) for n in sizes)
        self.splits = [n * c_in for n in sizes]
        self.radial = RadialWeights(num_basis, hidden, (sum(self.splits),))
        self.c_in = c_in

    def forward(self, x_rot: torch.Tensor, basis: torch.Tensor,
                envelope: torch.Tensor) -> torch.Tensor:
        rad = torch.split(self.radial(basis, envelope), self.splits, dim=1)  # per m: [E, n*c_in]
        return so2.so2_linear(x_rot, list(self.weights), self.lmax, self.mmax, input_scale=list(rad))


class ESCNInteraction(MessagePassingLayer):
    """One eSCN layer: SO(2) convolution in the edge frame, then the shared node update."""

    def __init__(self, cfg: ESCNConfig):
        super().__init__(cfg.lmax, cfg.channels, cfg.avg_num_neighbors)
        c = cfg.channels
        self.lmax, self.mmax = cfg.lmax, cfg.mmax
        self.conv = SO2Convolution(cfg.lmax, cfg.mmax, c, c, cfg.num_radial, cfg.radial_hidden)

    def forward(self, x, edge_index, basis, envelope, frame):
        src, dst = edge_index[K.SENDER], edge_index[K.RECEIVER]
        x_rot = so2.rotate_to_edge_frame(x[src], frame)  # per |m|: [E, rows_m, C]
        y_rot = self.conv(x_rot, basis, envelope)
        msg = so2.rotate_from_edge_frame(y_rot, frame)  # [E, (lmax+1)^2, C]
        return self.update(x, msg, dst)


@register
class ESCN(Potential):
    """eSCN potential. Keyword arguments are the fields of :class:`ESCNConfig`."""

    name = "escn"
    config_class = ESCNConfig

    def __init__(self, config=None, **kwargs):
        super().__init__(config, **kwargs)
        cfg = self.config
        self.embedding = SpeciesEmbedding(len(cfg.species), cfg.channels, cfg.lmax)
        self.wigner = EdgeWignerD(cfg.lmax)
        self.basis = BesselBasis(cfg.cutoff, cfg.num_radial)
        self.envelope = PolynomialEnvelope(cfg.cutoff, cfg.envelope_p)
        self.layers = nn.ModuleList(ESCNInteraction(cfg) for _ in range(cfg.num_layers))
        self.readout = EnergyReadout(cfg.channels, cfg.readout_hidden)
        self._finish_init()

    def node_energies(self, graph, species, vectors):
        r = torch.linalg.vector_norm(vectors, dim=-1)
        basis, envelope = self.basis(r), self.envelope(r)
        flat = self.wigner.flat(vectors)  # D^l of the edge frame, flattened side by side
        frame = so2.edge_frame(self.wigner.split(flat), self.config.lmax, self.config.mmax,
                               flat=flat)
        x = self.embedding(species)
        for layer in self.layers:
            x = layer(x, graph[K.EDGE_INDEX], basis, envelope, frame)
        return self.readout(x)
