"""SE(3)-Transformer (Fuchs et al., 2020) as an energy model.

Per layer, for centre i and neighbour j within the cutoff:

* query ``q_i`` = equivariant linear map (one matrix per degree) of ``f_i``;
* key ``k_ij`` and value ``v_ij`` = TFN convolutions ``W(x_j - x_i) f_j``, sharing the geometric
  filters (``R(r) Y(r_hat)`` with CG coefficients) of :mod:`ase_so3.potentials.convolution`, each
  with its own radial networks;
* per head, ``s_ij = q_i . k_ij / sqrt(d)`` summed over degrees, orders and the head's channels
  (invariant), and ``alpha_ij = u(r_ij) exp(s_ij) / sum_j' u(r_ij') exp(s_ij')``: a segment
  softmax weighted by the smooth cutoff envelope ``u``, so nothing jumps when a neighbour
  crosses the cutoff (``attention_envelope=False`` gives the plain softmax);
* ``f_i <- f_i + norm(act(self_interaction(f_i) + sum_j alpha_ij v_ij))``.

``distance_features`` sets the invariant input of the key and value radial networks: ``"r"``
(Bessel basis of r), ``"inverse"`` (Gaussians in 1/r) or ``"mixed"`` (the first half of the heads
use r, the second half 1/r), for the attention-invariants ablation. ``degrees`` restricts the
feature degrees (the ablation's note uses 0, 1 and 3): the layout keeps every degree up to
``max(degrees)``, and the others stay exactly zero because no path reads or writes them.

Options shared with the other models (defaults: as first released): ``edge_species`` (the key and
value radial networks also see both atoms' species), ``gate`` (the gated nonlinearity instead of
the norm one) and ``ffn_hidden`` (a gated feed-forward block after each layer). ``norm`` is
refused: the layer already ends in its own layer norm.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ase_so3 import keys as K
from ase_so3.errors import ConfigError
from ase_so3.potentials.base import Potential, PotentialConfig
from ase_so3.potentials.blocks import (BesselBasis, DegreeLinear, EdgeFeatures, EnergyReadout,
                                       GateActivation, InverseDistanceBasis, NormActivation,
                                       PolynomialEnvelope, RadialWeights, SpeciesEmbedding)
from ase_so3.potentials.equivariant import FeedForwardResidual
from ase_so3.potentials.convolution import TensorProductConv
from ase_so3.potentials.registry import register
from ase_so3.scatter import scatter_sum, segment_softmax
from ase_so3.so3 import so2
from ase_so3.so3.edge_frame import EdgeWignerD
from ase_so3.so3.irreps import degree_of_index
from ase_so3.so3.spherical_harmonics import SphericalHarmonics

DISTANCE_FEATURES = ("r", "inverse", "mixed")


@dataclass(frozen=True)
class SE3TransformerConfig(PotentialConfig):
    num_heads: int = 4
    distance_features: str = "r"
    attention_envelope: bool = True
    lmax_filter: int | None = None  # None: 2 * lmax (all paths)
    degrees: tuple[int, ...] | None = None  # feature degrees, e.g. (0, 1, 3); None: 0..lmax

    def __post_init__(self):
        super().__post_init__()
        if self.distance_features not in DISTANCE_FEATURES:
            raise ConfigError(f"distance_features must be one of {DISTANCE_FEATURES}")
        if self.channels % self.num_heads:
            raise ConfigError("channels must be divisible by num_heads")
        if self.distance_features == "mixed" and self.num_heads % 2:
            raise ConfigError("distance_features='mixed' needs an even number of heads")
        if self.degrees is not None:
            degrees = tuple(sorted({int(l) for l in self.degrees}))
            if not degrees or degrees[0] != 0:
                raise ConfigError("degrees must include 0 (the energy is read from scalars)")
            object.__setattr__(self, "degrees", degrees)
            object.__setattr__(self, "lmax", degrees[-1])  # the layout holds 0..max(degrees)
        if self.lmax > 6:
            raise ConfigError("SE3Transformer supports lmax up to 6")
        if self.lmax_filter is None:
            object.__setattr__(self, "lmax_filter", 2 * self.lmax)
        if self.norm:
            raise ConfigError("the SE(3)-Transformer layer ends in its own layer norm; "
                              "norm=True is for TFN and eSCN")


def head_feature_kinds(cfg: SE3TransformerConfig) -> list[str]:
    """The distance feature ("r" or "inverse") each head's radial networks read."""
    if cfg.distance_features == "mixed":
        half = cfg.num_heads // 2
        return ["r"] * half + ["inverse"] * (cfg.num_heads - half)
    return [cfg.distance_features] * cfg.num_heads


class HeadRadialWeights(nn.Module):
    """Radial networks producing ``[E, paths, C]`` weights, heads grouped by distance feature."""

    def __init__(self, cfg: SE3TransformerConfig, num_paths: int):
        super().__init__()
        kinds = head_feature_kinds(cfg)
        per_head = cfg.channels // cfg.num_heads
        self.kinds = list(dict.fromkeys(kinds))  # in head order, heads of one kind contiguous
        size = cfg.num_radial + (2 * len(cfg.species) if cfg.edge_species else 0)
        self.nets = nn.ModuleDict({
            k: RadialWeights(size, cfg.radial_hidden, (num_paths, kinds.count(k) * per_head))
            for k in self.kinds})

    def forward(self, bases: dict[str, torch.Tensor], envelope: torch.Tensor,
                mix: torch.Tensor | None = None) -> torch.Tensor:
        """``mix``: as :meth:`RadialWeights.forward` (the edge-frame weights)."""
        return torch.cat([self.nets[k](bases[k], envelope, mix) for k in self.kinds], dim=2)


class EquivariantLayerNorm(nn.Module):
    """Layer norm per degree: scalars centred and scaled over channels; degrees l > 0 divided by
    the root-mean-square of their norms over channels. Learned gain per degree and channel."""

    def __init__(self, lmax: int, channels: int, eps: float = 1e-6):
        super().__init__()
        self.lmax, self.eps = lmax, eps
        self.gain = nn.Parameter(torch.ones(lmax + 1, channels))
        self.register_buffer("degree", degree_of_index(lmax), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x[:, :1]
        s = (s - s.mean(-1, keepdim=True)) / torch.sqrt(s.var(-1, unbiased=False, keepdim=True) + self.eps)
        parts = [s]
        if self.lmax:
            v = x[:, 1:]
            deg = self.degree[1:] - 1
            norm2 = v.new_zeros((v.shape[0], self.lmax, v.shape[2])).index_add(1, deg, v * v)
            rms = torch.sqrt(norm2.mean(-1, keepdim=True) + self.eps)  # [N, lmax, 1]
            parts.append(v / rms[:, deg])
        return torch.cat(parts, dim=1) * self.gain[self.degree]


class SE3AttentionLayer(nn.Module):
    def __init__(self, cfg: SE3TransformerConfig):
        super().__init__()
        c = cfg.channels
        self.heads = cfg.num_heads
        self.use_envelope = cfg.attention_envelope
        self.conv = TensorProductConv(cfg.lmax, cfg.lmax, cfg.lmax_filter, degrees=cfg.degrees)
        self.query = DegreeLinear(cfg.lmax, c, c, bias=False)
        self.key_radial = HeadRadialWeights(cfg, self.conv.num_paths)
        self.value_radial = HeadRadialWeights(cfg, self.conv.num_paths)
        self.self_interaction = DegreeLinear(cfg.lmax, c, c)
        self.act = GateActivation(cfg.lmax, c) if cfg.gate else NormActivation(cfg.lmax, c)
        self.norm = EquivariantLayerNorm(cfg.lmax, c)
        self.ffn = (FeedForwardResidual(cfg.lmax, c, cfg.ffn_hidden, norm=False)
                    if cfg.ffn_hidden else None)
        degrees = cfg.degrees if cfg.degrees is not None else range(cfg.lmax + 1)
        self.scale = 1.0 / (sum(2 * l + 1 for l in degrees) * c // cfg.num_heads) ** 0.5

    def forward(self, x, edge_index, bases, envelope, filters):
        src, dst = edge_index[K.SENDER], edge_index[K.RECEIVER]
        n, d, c = x.shape
        e = src.shape[0]
        q = self.query(x)[dst]  # [E, D, C]
        xj = x[src]
        if isinstance(filters, so2.EdgeFrame):  # the same tensor product in the edge frame
            mix = self.conv.frame_mix()
            w = torch.stack([self.key_radial(bases, envelope, mix),
                             self.value_radial(bases, envelope, mix)], 2)  # [E, Q, 2, C]
            k, v = self.conv.through_frame(xj, filters, w).view(e, d, 2, c).unbind(2)
        else:
            w = torch.stack([self.key_radial(bases, envelope),
                             self.value_radial(bases, envelope)], 2)
            k, v = self.conv(xj, filters, w).unbind(1)  # key and value [E, D, C], one contraction
        logits = (q * k).reshape(e, d, self.heads, c // self.heads).sum((1, 3)) * self.scale  # [E, H]
        alpha = segment_softmax(logits, dst, n, weights=envelope if self.use_envelope else None)
        msg = (v.reshape(e, d, self.heads, c // self.heads) * alpha[:, None, :, None]).reshape(e, d, c)
        agg = scatter_sum(msg, dst, n)  # [N, D, C]
        x = x + self.norm(self.act(self.self_interaction(x) + agg))
        return (self.ffn(x) if self.ffn is not None else x), alpha


@register
class SE3Transformer(Potential):
    """SE(3)-Transformer potential. Keyword arguments are the fields of
    :class:`SE3TransformerConfig`."""

    name = "se3_transformer"
    config_class = SE3TransformerConfig
    uses_edge_frame = True

    def __init__(self, config=None, **kwargs):
        super().__init__(config, **kwargs)
        cfg = self.config
        self.embedding = SpeciesEmbedding(len(cfg.species), cfg.channels, cfg.lmax)
        self.sh = SphericalHarmonics(cfg.lmax_filter)
        kinds = set(head_feature_kinds(cfg))
        self.bases = nn.ModuleDict()
        if "r" in kinds:
            self.bases["r"] = BesselBasis(cfg.cutoff, cfg.num_radial)
        if "inverse" in kinds:
            self.bases["inverse"] = InverseDistanceBasis(cfg.cutoff, cfg.num_radial)
        self.envelope = PolynomialEnvelope(cfg.cutoff, cfg.envelope_p)
        self.edge_features = EdgeFeatures(cfg.num_radial, len(cfg.species), cfg.edge_species)
        self.layers = nn.ModuleList(SE3AttentionLayer(cfg) for _ in range(cfg.num_layers))
        self.readout = EnergyReadout(cfg.channels, cfg.readout_hidden)
        self.wigner = EdgeWignerD(cfg.lmax)
        # how the convolutions are evaluated, not what they compute (as TFN's in_edge_frame)
        self.in_edge_frame = cfg.lmax >= 1 and self.layers[0].conv.frame_ok
        self._finish_init()

    def _run(self, graph, species, vectors):
        r = torch.linalg.vector_norm(vectors, dim=-1)
        bases = {k: self.edge_features(b(r), species, graph[K.EDGE_INDEX])
                 for k, b in self.bases.items()}
        envelope = self.envelope(r)
        if self.in_edge_frame:  # shared by all layers
            filters = so2.frame_of(self.wigner, vectors, self.config.lmax)
        else:
            filters = self.layers[0].conv.filters(self.sh(vectors))
        x = self.embedding(species)
        alphas = []
        for layer in self.layers:
            x, alpha = layer(x, graph[K.EDGE_INDEX], bases, envelope, filters)
            alphas.append(alpha)
        return x, alphas

    def node_energies(self, graph, species, vectors):
        x, _ = self._run(graph, species, vectors)
        return self.readout(x)

    def attention_weights(self, graph: dict) -> list[torch.Tensor]:
        """Per layer ``[E, heads]`` attention weights ``alpha_ij`` (edge order of the batch)."""
        from ase_so3.graph import edge_vectors
        _, alphas = self._run(graph, self.species_index(graph[K.NUMBERS]), edge_vectors(graph))
        return alphas
