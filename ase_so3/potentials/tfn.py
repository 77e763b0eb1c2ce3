"""Tensor Field Network (Thomas et al., 2018) as an energy model.

Per layer: filters ``F(r) = R(r) Y(r_hat)`` with ``R`` a radial MLP on a Bessel basis times a
smooth cutoff envelope; Clebsch–Gordan tensor-product convolution over neighbours
(:class:`~ase_so3.potentials.convolution.TensorProductConv`); self-interaction (one channel-mixing
matrix per degree); the norm nonlinearity; a residual connection. The scalar channels of the last
layer give per-atom energies.

Options (defaults: the model as first released): ``edge_species``, radial networks that also see
both atoms' species; ``gate``, the gated nonlinearity of NequIP instead of the norm one;
``ffn_hidden``, a gated feed-forward block after each layer; ``norm``, an RMS norm over degrees
before each convolution, feed-forward block and the readout.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ase_so3 import keys as K
from ase_so3.errors import ConfigError
from ase_so3.potentials.base import Potential, PotentialConfig
from ase_so3.potentials.blocks import (BesselBasis, EdgeFeatures, EnergyReadout,
                                       MessagePassingLayer, PolynomialEnvelope, RadialWeights,
                                       SpeciesEmbedding)
from ase_so3.potentials.convolution import TensorProductConv
from ase_so3.potentials.equivariant import EquivariantRMSNorm, FeedForwardResidual
from ase_so3.potentials.registry import register
from ase_so3.so3 import so2
from ase_so3.so3.edge_frame import EdgeWignerD
from ase_so3.so3.spherical_harmonics import SphericalHarmonics


@dataclass(frozen=True)
class TFNConfig(PotentialConfig):
    lmax_filter: int | None = None  # degrees of Y in the filters; None: 2 * lmax (all paths)

    def __post_init__(self):
        super().__post_init__()
        if self.lmax > 6:
            raise ConfigError("TFN supports lmax up to 6 (its cost grows as lmax^6); use ESCN")
        if self.lmax_filter is None:
            object.__setattr__(self, "lmax_filter", 2 * self.lmax)


class TFNInteraction(MessagePassingLayer):
    """One TFN layer: convolution, then the shared self-interaction, nonlinearity, residual."""

    def __init__(self, cfg: PotentialConfig, lmax_filter: int, edge_size: int):
        super().__init__(cfg.lmax, cfg.channels, cfg.avg_num_neighbors, cfg.gate)
        self.conv = TensorProductConv(cfg.lmax, cfg.lmax, lmax_filter)
        self.radial = RadialWeights(edge_size, cfg.radial_hidden,
                                    (self.conv.num_paths, cfg.channels))
        self.norm = EquivariantRMSNorm(cfg.lmax, cfg.channels) if cfg.norm else None
        self.ffn = (FeedForwardResidual(cfg.lmax, cfg.channels, cfg.ffn_hidden, cfg.norm)
                    if cfg.ffn_hidden else None)

    def forward(self, x, edge_index, edge, envelope, filters):
        """``filters``: the per-edge filters (:meth:`TensorProductConv.filters`) or the edge
        frame (:class:`~ase_so3.so3.so2.EdgeFrame`): the same tensor product either way."""
        src, dst = edge_index[K.SENDER], edge_index[K.RECEIVER]
        h = self.norm(x) if self.norm is not None else x
        if isinstance(filters, so2.EdgeFrame):
            v = self.radial(edge, envelope, mix=self.conv.frame_mix())  # [E, Q, C]
            msg = self.conv.through_frame(h[src], filters, v)
        else:
            msg = self.conv(h[src], filters, self.radial(edge, envelope))  # weights [E, paths, C]
        x = self.update(x, msg, dst)  # messages [E, (lmax+1)^2, C]
        return self.ffn(x) if self.ffn is not None else x


@register
class TFN(Potential):
    """Tensor Field Network potential. Keyword arguments are the fields of :class:`TFNConfig`."""

    name = "tfn"
    config_class = TFNConfig
    uses_edge_frame = True

    def __init__(self, config=None, **kwargs):
        super().__init__(config, **kwargs)
        cfg = self.config
        self.embedding = SpeciesEmbedding(len(cfg.species), cfg.channels, cfg.lmax)
        self.sh = SphericalHarmonics(cfg.lmax_filter)
        self.basis = BesselBasis(cfg.cutoff, cfg.num_radial)
        self.envelope = PolynomialEnvelope(cfg.cutoff, cfg.envelope_p)
        self.edge_features = EdgeFeatures(cfg.num_radial, len(cfg.species), cfg.edge_species)
        self.layers = nn.ModuleList(TFNInteraction(cfg, cfg.lmax_filter, self.edge_features.size)
                                    for _ in range(cfg.num_layers))
        self.readout_norm = EquivariantRMSNorm(cfg.lmax, cfg.channels) if cfg.norm else None
        self.readout = EnergyReadout(cfg.channels, cfg.readout_hidden)
        self.wigner = EdgeWignerD(cfg.lmax)
        # how the convolutions are evaluated, not what they compute: in the edge frame where
        # that is exact (parity-even paths), else with per-edge filters (set False to compare)
        self.in_edge_frame = cfg.lmax >= 1 and self.layers[0].conv.frame_ok
        self._finish_init()

    def node_energies(self, graph, species, vectors):
        r = torch.linalg.vector_norm(vectors, dim=-1)  # [E]
        basis, envelope = self.basis(r), self.envelope(r)  # [E, num_radial], [E]
        if self.in_edge_frame:  # D^l of the edge frames, shared by all layers
            filters = so2.frame_of(self.wigner, vectors, self.config.lmax)
        else:
            filters = self.layers[0].conv.filters(self.sh(vectors))  # shared by all layers
        edge = self.edge_features(basis, species, graph[K.EDGE_INDEX])
        x = self.embedding(species)  # [N, (lmax+1)^2, C]
        for layer in self.layers:
            x = layer(x, graph[K.EDGE_INDEX], edge, envelope, filters)
        return self.readout(self.readout_norm(x) if self.readout_norm is not None else x)
