"""Building blocks shared by every potential: embeddings, radial functions, equivariant
linear maps, nonlinearities and the energy readout. All act on ``x[node, (l, m), channel]``."""

from __future__ import annotations

import math

import torch
from torch import nn

from ase_so3 import keys as K
from ase_so3.so3.irreps import degree_of_index


class BesselBasis(nn.Module):
    """``sqrt(2/rc) sin(n pi r / rc) / r`` for n = 1..num (DimeNet); zero at the cutoff."""

    def __init__(self, cutoff: float, num: int):
        super().__init__()
        self.cutoff = float(cutoff)
        self.register_buffer("freq", torch.arange(1, num + 1, dtype=torch.float64) * math.pi / cutoff)

    def forward(self, r: torch.Tensor) -> torch.Tensor:  # [E] -> [E, num]
        r = r[:, None]
        return (2.0 / self.cutoff) ** 0.5 * torch.sin(self.freq.to(r.dtype) * r) / r


class InverseDistanceBasis(nn.Module):
    """Gaussians in ``1/r`` evenly spaced between ``1/rc`` and ``1/r_min`` (the "inverse" feature)."""

    def __init__(self, cutoff: float, num: int, r_min: float = 0.5):
        super().__init__()
        centers = torch.linspace(1.0 / cutoff, 1.0 / r_min, num, dtype=torch.float64)
        self.register_buffer("centers", centers)
        self.width = float(centers[1] - centers[0]) if num > 1 else 1.0

    def forward(self, r: torch.Tensor) -> torch.Tensor:  # [E] -> [E, num]
        s = 1.0 / r[:, None]
        return torch.exp(-0.5 * ((s - self.centers.to(r.dtype)) / self.width) ** 2)


class PolynomialEnvelope(nn.Module):
    """Smooth cutoff ``u(r)``: 1 at r = 0, and u, u', u'' all vanish at r = rc (DimeNet, p = 6)."""

    def __init__(self, cutoff: float, p: int = 6):
        super().__init__()
        self.cutoff, self.p = float(cutoff), int(p)

    def forward(self, r: torch.Tensor) -> torch.Tensor:  # [E] -> [E]
        p, d = self.p, r / self.cutoff
        u = (1 - 0.5 * (p + 1) * (p + 2) * d ** p + p * (p + 2) * d ** (p + 1)
             - 0.5 * p * (p + 1) * d ** (p + 2))
        return torch.where(d < 1, u, torch.zeros_like(u))


class MLP(nn.Sequential):
    """Linear layers with SiLU in between; the last layer is linear."""

    def __init__(self, sizes: list[int], bias_last: bool = True):
        layers: list[nn.Module] = []
        for k, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
            last = k == len(sizes) - 2
            layers.append(nn.Linear(a, b, bias=bias_last or not last))
            if not last:
                layers.append(nn.SiLU())
        super().__init__(*layers)


class RadialWeights(nn.Module):
    """Radial basis values ``[E, num_basis]`` -> per-edge weights ``[E, *out_shape]``, multiplied
    by the cutoff envelope, so every filter built from them goes smoothly to zero at the cutoff."""

    def __init__(self, num_basis: int, hidden: int, out_shape: tuple[int, ...]):
        super().__init__()
        self.out_shape = tuple(out_shape)
        self.mlp = MLP([num_basis, hidden, hidden, math.prod(out_shape)])

    def forward(self, basis: torch.Tensor, envelope: torch.Tensor,
                mix: torch.Tensor | None = None) -> torch.Tensor:
        """``mix`` ``[Q, out_shape[0]]``: the output mixed along its first axis, ``[E, Q,
        *out_shape[1:]]``, through the last layer's weights (no per-edge cost)."""
        # envelope * (h W + b) as one product [envelope * h, envelope] [W; b]: no pass over the
        # wide output (nor its derivatives in a force loss)
        h = basis
        for k in range(len(self.mlp) - 1):
            h = self.mlp[k](h)
        last, env = self.mlp[-1], envelope[:, None]
        if last.bias is None:
            h, weight = env * h, last.weight.T
        else:
            h, weight = torch.cat([env * h, env], dim=1), torch.cat([last.weight.T, last.bias[None]], 0)
        shape = self.out_shape
        if mix is not None:
            weight = torch.einsum("qp,kpr->kqr", mix.to(weight.dtype),
                                  weight.view(weight.shape[0], shape[0], -1))
            shape = (mix.shape[0], *shape[1:])
            weight = weight.reshape(weight.shape[0], -1)
        return (h @ weight).reshape(basis.shape[0], *shape)


class EdgeFeatures(nn.Module):
    """The invariant input of the radial networks: the distance basis ``[E, B]``, with ``species``
    followed by the one-hot species of sender and receiver, ``[E, B + 2 S]`` (eSEN's edge
    embedding; a one-hot input to a linear layer is a learned embedding)."""

    def __init__(self, num_basis: int, num_species: int, species: bool):
        super().__init__()
        self.num_species = num_species if species else 0
        self.size = num_basis + 2 * self.num_species

    def forward(self, basis: torch.Tensor, species: torch.Tensor,
                edge_index: torch.Tensor) -> torch.Tensor:
        if not self.num_species:
            return basis
        # a comparison, not F.one_hot, which reads the largest index back to the host
        classes = torch.arange(self.num_species, device=species.device)
        one_hot = (species[:, None] == classes).to(basis.dtype)
        return torch.cat([basis, one_hot[edge_index[K.SENDER]], one_hot[edge_index[K.RECEIVER]]],
                         dim=1)


class SpeciesEmbedding(nn.Module):
    """Species index -> scalar (l = 0) channels of a feature block with zeros at l > 0."""

    def __init__(self, num_species: int, channels: int, lmax: int):
        super().__init__()
        self.embed = nn.Embedding(num_species, channels)
        self.lmax = lmax

    def forward(self, species: torch.Tensor) -> torch.Tensor:  # [N] -> [N, (lmax+1)^2, C]
        h = self.embed(species)
        pad = h.new_zeros((h.shape[0], (self.lmax + 1) ** 2 - 1, h.shape[1]))
        return torch.cat([h[:, None, :], pad], dim=1)


class DegreeLinear(nn.Module):
    """Self-interaction: one ``c_in x c_out`` matrix per degree, shared by its ``2l+1`` components
    (equivariant), bias on scalars only."""

    def __init__(self, lmax: int, c_in: int, c_out: int, bias: bool = True):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(lmax + 1, c_in, c_out) / c_in ** 0.5)
        self.bias = nn.Parameter(torch.zeros(c_out)) if bias else None
        self.register_buffer("degree", degree_of_index(lmax), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [N, D, c_in] -> [N, D, c_out]
        out = torch.einsum("nkc,kcd->nkd", x, self.weight[self.degree])
        if self.bias is not None:
            out = torch.cat([out[:, :1] + self.bias, out[:, 1:]], dim=1)
        return out


class NormActivation(nn.Module):
    """TFN's norm nonlinearity: SiLU on scalars, ``x * sigmoid(|x| + b)`` on each degree l > 0
    and channel (``|x|`` smoothed by ``eps`` so its gradient is finite at zero)."""

    def __init__(self, lmax: int, channels: int, eps: float = 1e-6):
        super().__init__()
        self.lmax, self.eps = lmax, eps
        self.bias = nn.Parameter(torch.zeros(lmax, channels))
        self.register_buffer("degree", degree_of_index(lmax), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scalars = torch.nn.functional.silu(x[:, :1])
        if self.lmax == 0:
            return scalars
        sq = x[:, 1:] ** 2  # [N, D-1, C]
        deg = self.degree[1:] - 1
        norm2 = x.new_zeros((x.shape[0], self.lmax, x.shape[2])).index_add(1, deg, sq)
        norm = torch.sqrt(norm2 + self.eps ** 2)  # [N, lmax, C]
        gate = torch.sigmoid(norm - 1.0 + self.bias)[:, deg]
        return torch.cat([scalars, x[:, 1:] * gate], dim=1)


def gate(x: torch.Tensor, gates: torch.Tensor, degree: torch.Tensor) -> torch.Tensor:
    """``x`` ``[N, D, C]`` with degree ``degree[k]`` at row k (row 0: the scalars), ``gates``
    ``[N, lmax, C]`` (pre-sigmoid, one per degree l >= 1): SiLU on row 0, ``x * sigmoid(gate_l)``
    on the rows of degree l. Works in the global frame and in the edge frame alike (the gate of a
    degree is the same for all its orders, which commutes with rotations about the edge)."""
    scalars = torch.nn.functional.silu(x[:, :1])
    if x.shape[1] == 1:
        return scalars
    g = torch.sigmoid(gates)
    if x.shape[1] != gates.shape[1] + 1:  # not one row per degree (the edge frame's m = 0 block)
        g = g[:, degree[1:] - 1]
    return torch.cat([scalars, x[:, 1:] * g], dim=1)


class GateActivation(nn.Module):
    """Gated nonlinearity (NequIP, eSEN): SiLU on scalars, each degree l > 0 of each channel
    times ``sigmoid`` of a linear function of the scalars."""

    def __init__(self, lmax: int, channels: int):
        super().__init__()
        self.lmax, self.channels = lmax, channels
        self.gates = nn.Linear(channels, lmax * channels) if lmax else None
        self.register_buffer("degree", degree_of_index(lmax), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        g = (self.gates(x[:, 0]).view(x.shape[0], self.lmax, self.channels)
             if self.gates is not None else None)
        return gate(x, g, self.degree)


class MessagePassingLayer(nn.Module):
    """Shared node update of TFN-type layers: sum messages at the centre atoms, self-interaction
    of messages and of the old features, norm nonlinearity (or, with ``gate``, the gated one),
    residual connection."""

    def __init__(self, lmax: int, channels: int, avg_num_neighbors: float, gate: bool = False):
        super().__init__()
        self.si_message = DegreeLinear(lmax, channels, channels)
        self.si_self = DegreeLinear(lmax, channels, channels, bias=False)
        self.act = GateActivation(lmax, channels) if gate else NormActivation(lmax, channels)
        self.inv_avg_neighbors = 1.0 / avg_num_neighbors

    def update(self, x: torch.Tensor, messages: torch.Tensor, centre: torch.Tensor) -> torch.Tensor:
        """``x`` ``[N, D, C]``, per-edge ``messages`` ``[E, D, C]`` summed at ``centre`` ``[E]``."""
        from ase_so3.scatter import scatter_sum
        agg = scatter_sum(messages, centre, x.shape[0]) * self.inv_avg_neighbors  # [N, D, C]
        return x + self.act(self.si_message(agg) + self.si_self(x))


class EnergyReadout(nn.Module):
    """Scalar channels -> one number per atom."""

    def __init__(self, channels: int, hidden: int):
        super().__init__()
        self.mlp = MLP([channels, hidden, 1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [N, D, C] -> [N]
        return self.mlp(x[:, 0, :])[:, 0]
