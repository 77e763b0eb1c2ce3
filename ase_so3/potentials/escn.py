"""eSCN (Passaro & Zitnick, 2023): SO(2) convolutions in the edge frame.

Per layer and edge j -> i: rotate ``x_j`` into the frame where the edge lies on the polar axis
(:mod:`~ase_so3.so3.edge_frame`, deterministic and differentiable for every direction),
keep orders ``|m| <= mmax``, scale each (m, l, channel) by a radial network of the edge length
(times the smooth cutoff envelope), apply one learned matrix ``W_m`` per ``|m|`` that mixes degrees
and channels (:func:`~ase_so3.so3.so2.so2_linear`), rotate back, sum over neighbours. Cost per edge
grows as O(L^3) instead of the O(L^6) of the full tensor product.

Parity: features keep natural parity and the ``m -> -m`` couplings (from odd tensor-product paths)
are dropped, so the energy is invariant under reflections too (see :mod:`ase_so3.so3.so2`).
The defaults are the original ase_so3 eSCN (every file written by ase_so3 0.1 uses them): the
message is linear in the neighbour's features and the radial network sees only the distance;
TFN's norm nonlinearity, self-interaction and residual update the nodes. The options add the
parts of the published eSCN / eSEN (:mod:`~ase_so3.potentials.escn_blocks`):

- ``edge_species``: the radial networks also see the species of both atoms;
- ``message_centre``: messages from the receiver's features as well as the sender's;
- ``message_gate``: two SO(2) maps with a gate between them (a nonlinear message), and the node
  update ``x + W agg`` (the nonlinearity is in the message and the feed-forward block);
- ``gate`` (without ``message_gate``): the gated nonlinearity in the node update;
- ``ffn_hidden > 0``: a gated point-wise feed-forward block with a residual after each message;
- ``norm``: eSEN's RMS norm over degrees before each message, feed-forward block and the readout
  (pre-norm residual network);
- ``edge_degree_embedding``: l > 0 initial features from the edge directions.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ase_so3 import keys as K
from ase_so3.errors import ConfigError
from ase_so3.potentials.base import Potential, PotentialConfig
from ase_so3.potentials.blocks import (BesselBasis, DegreeLinear, EdgeFeatures, EnergyReadout,
                                       MessagePassingLayer, PolynomialEnvelope, SpeciesEmbedding)
from ase_so3.potentials.equivariant import EquivariantRMSNorm, FeedForwardResidual
from ase_so3.potentials.escn_blocks import EdgeDegreeEmbedding, GatedSO2Message, SO2Convolution
from ase_so3.potentials.registry import register
from ase_so3.scatter import scatter_sum
from ase_so3.so3 import so2
from ase_so3.so3.edge_frame import EdgeWignerD


@dataclass(frozen=True)
class ESCNConfig(PotentialConfig):
    lmax: int = 3
    mmax: int | None = None  # highest |m| kept in the edge frame; None: min(2, lmax)
    message_centre: bool = False
    message_gate: bool = False
    hidden_channels: int | None = None  # width inside a gated message; None: channels
    edge_degree_embedding: bool = False

    def __post_init__(self):
        super().__post_init__()
        if self.mmax is None:
            object.__setattr__(self, "mmax", min(2, self.lmax))
        if self.hidden_channels is None:
            object.__setattr__(self, "hidden_channels", self.channels)
        if self.lmax > 8:
            raise ConfigError("ESCN supports lmax up to 8")
        if not 0 <= self.mmax <= self.lmax:
            raise ConfigError("mmax must satisfy 0 <= mmax <= lmax")
        if self.hidden_channels < 1:
            raise ConfigError("hidden_channels must be >= 1")


class ESCNInteraction(nn.Module):
    """One eSCN layer: a message in the edge frame summed at the receivers, the node update, and
    (with ``ffn_hidden``) a feed-forward block."""

    def __init__(self, cfg: ESCNConfig, edge_size: int):
        super().__init__()
        c, self.cfg = cfg.channels, cfg
        c_in = 2 * c if cfg.message_centre else c
        if cfg.message_gate:
            self.conv = GatedSO2Message(cfg.lmax, cfg.mmax, c_in, cfg.hidden_channels, c,
                                        edge_size, cfg.radial_hidden)
            self.linear = DegreeLinear(cfg.lmax, c, c)
            self.inv_avg_neighbors = 1.0 / cfg.avg_num_neighbors
        else:
            self.node = MessagePassingLayer(cfg.lmax, c, cfg.avg_num_neighbors, cfg.gate)
            self.conv = SO2Convolution(cfg.lmax, cfg.mmax, c_in, c, edge_size, cfg.radial_hidden)
        if cfg.norm:
            self.norm = EquivariantRMSNorm(cfg.lmax, c)
        if cfg.ffn_hidden:
            self.ffn = FeedForwardResidual(cfg.lmax, c, cfg.ffn_hidden, cfg.norm)

    def forward(self, x, edge_index, edge, envelope, frame):
        cfg = self.cfg
        src, dst = edge_index[K.SENDER], edge_index[K.RECEIVER]
        h = self.norm(x) if cfg.norm else x
        if cfg.message_centre:  # cat([h[src], h[dst]], 2) as one gather of channel rows
            e, d, c = edge_index.shape[1], h.shape[1], h.shape[2]
            rows = (edge_index.T[:, None, :] * d
                    + torch.arange(d, device=h.device)[None, :, None]).reshape(-1)
            h_edge = h.reshape(-1, c).index_select(0, rows).view(e, d, 2 * c)
        else:
            h_edge = h[src]
        x_rot = so2.rotate_to_edge_frame(h_edge, frame)  # per |m|: [E, rows_m, C]
        msg = so2.rotate_from_edge_frame(self.conv(x_rot, edge, envelope), frame)  # [E, D, C]
        if cfg.message_gate:
            agg = scatter_sum(msg, dst, x.shape[0]) * self.inv_avg_neighbors
            x = x + self.linear(agg)
        else:
            x = self.node.update(x, msg, dst)
        return self.ffn(x) if cfg.ffn_hidden else x


# state_dict keys of files written before the options existed: the node update sat on the layer
_OLD_NODE_KEYS = ("si_message.", "si_self.", "act.")


@register
class ESCN(Potential):
    """eSCN potential. Keyword arguments are the fields of :class:`ESCNConfig`."""

    name = "escn"
    config_class = ESCNConfig
    uses_edge_frame = True

    def __init__(self, config=None, **kwargs):
        super().__init__(config, **kwargs)
        cfg = self.config
        self.embedding = SpeciesEmbedding(len(cfg.species), cfg.channels, cfg.lmax)
        self.wigner = EdgeWignerD(cfg.lmax)
        self.basis = BesselBasis(cfg.cutoff, cfg.num_radial)
        self.envelope = PolynomialEnvelope(cfg.cutoff, cfg.envelope_p)
        self.edge_features = EdgeFeatures(cfg.num_radial, len(cfg.species), cfg.edge_species)
        size = self.edge_features.size
        if cfg.edge_degree_embedding:
            self.degree_embedding = EdgeDegreeEmbedding(cfg.lmax, cfg.mmax, cfg.channels, size,
                                                        cfg.radial_hidden, cfg.avg_num_neighbors)
        self.layers = nn.ModuleList(ESCNInteraction(cfg, size) for _ in range(cfg.num_layers))
        if cfg.norm:
            self.readout_norm = EquivariantRMSNorm(cfg.lmax, cfg.channels)
        self.readout = EnergyReadout(cfg.channels, cfg.readout_hidden)
        self._finish_init()

    @property
    def receptive_hops(self) -> int:
        """Neighbour-list hops an atom's energy depends on (the edge-degree embedding adds one)."""
        return self.config.num_layers + int(self.config.edge_degree_embedding)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        for key in [k for k in state_dict if k.startswith(prefix + "layers.")]:
            head, _, rest = key[len(prefix):].partition(".")[2].partition(".")
            if rest.startswith(_OLD_NODE_KEYS):  # layers.<i>.si_message.weight -> layers.<i>.node.
                state_dict[f"{prefix}layers.{head}.node.{rest}"] = state_dict.pop(key)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def node_energies(self, graph, species, vectors):
        cfg = self.config
        r = torch.linalg.vector_norm(vectors, dim=-1)
        basis, envelope = self.basis(r), self.envelope(r)
        edge_index = graph[K.EDGE_INDEX]
        edge = self.edge_features(basis, species, edge_index)
        frame = so2.frame_of(self.wigner, vectors, cfg.mmax)
        x = self.embedding(species)
        if cfg.edge_degree_embedding:
            x = self.degree_embedding(x, edge, envelope, frame, edge_index[K.RECEIVER])
        for layer in self.layers:
            x = layer(x, edge_index, edge, envelope, frame)
        return self.readout(self.readout_norm(x) if cfg.norm else x)
