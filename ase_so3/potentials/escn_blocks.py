"""Blocks of eSCN / eSEN messages in the edge frame (Passaro & Zitnick 2023; fairchem
``models/escn``, ``models/esen``), on the m-blocks of :func:`ase_so3.so3.so2.rotate_to_edge_frame`.

- :class:`SO2Convolution`: ``y_m = W_m (rad_m(edge) * x_m)``, one radially modulated SO(2) linear
  map (the convolution itself; equal to a CG tensor product for ``mmax = lmax``).
- :class:`GatedSO2Message`: two SO(2) linear maps with a gate between them: the first, radially
  modulated, also makes the gate scalars from its m = 0 block (invariant under rotations about
  the edge); the second is shared by all edges. The message is then a nonlinear function of the
  edge's features, as in eSCN and eSEN, instead of a linear one.
- :class:`EdgeDegreeEmbedding`: l > 0 node features from the edge directions before the first
  layer (eSCN's edge-degree embedding): per edge an m = 0 block from the radial network,
  rotated back to the global frame and summed at the receiver.
"""

from __future__ import annotations

import torch
from torch import nn

from ase_so3.potentials.blocks import RadialWeights, gate
from ase_so3.scatter import scatter_sum
from ase_so3.so3 import so2


def _so2_weights(lmax: int, mmax: int, c_in: int, c_out: int, extra_m0: int = 0):
    sizes = [lmax - m + 1 for m in range(mmax + 1)]
    return nn.ParameterList(
        nn.Parameter(torch.randn(n * c_in, n * c_out + (extra_m0 if m == 0 else 0))
                     / (n * c_in) ** 0.5) for m, n in enumerate(sizes))


class SO2Convolution(nn.Module):
    """Radially modulated SO(2) linear map: ``y_m = W_m (rad_m(edge) * x_m)`` for each ``|m|``."""

    def __init__(self, lmax: int, mmax: int, c_in: int, c_out: int, num_basis: int, hidden: int,
                 extra_m0: int = 0):
        super().__init__()
        self.lmax, self.mmax = lmax, mmax
        sizes = [lmax - m + 1 for m in range(mmax + 1)]
        self.weights = _so2_weights(lmax, mmax, c_in, c_out, extra_m0)
        self.splits = [n * c_in for n in sizes]
        self.radial = RadialWeights(num_basis, hidden, (sum(self.splits),))
        self.c_in = c_in

    def forward(self, x_rot: list[torch.Tensor], edge: torch.Tensor,
                envelope: torch.Tensor) -> list[torch.Tensor]:
        rad = torch.split(self.radial(edge, envelope), self.splits, dim=1)  # per m: [E, n*c_in]
        return so2.so2_linear(x_rot, list(self.weights), self.lmax, self.mmax, input_scale=list(rad))


class GatedSO2Message(nn.Module):
    """``W2_m gate(W1_m (rad_m(edge) * x_m))``: c_in -> hidden -> c_out channels."""

    def __init__(self, lmax: int, mmax: int, c_in: int, hidden: int, c_out: int, num_basis: int,
                 radial_hidden: int):
        super().__init__()
        self.lmax, self.mmax, self.hidden = lmax, mmax, hidden
        self.conv1 = SO2Convolution(lmax, mmax, c_in, hidden, num_basis, radial_hidden,
                                    extra_m0=lmax * hidden)
        self.weights2 = _so2_weights(lmax, mmax, hidden, c_out)
        # the degree of each row of the m = 0 block: l = 0..lmax
        self.register_buffer("degree0", torch.arange(lmax + 1), persistent=False)

    def forward(self, x_rot: list[torch.Tensor], edge: torch.Tensor,
                envelope: torch.Tensor) -> list[torch.Tensor]:
        c1 = self.conv1
        rad = torch.split(c1.radial(edge, envelope), c1.splits, dim=1)
        e, n0, h = edge.shape[0], self.lmax + 1, self.hidden
        y = []
        for m, part in enumerate(x_rot[:self.mmax + 1]):
            n, signs = self.lmax - m + 1, (1 if m == 0 else 2)
            out = (part.reshape(e, signs, n * c1.c_in) * rad[m][:, None, :]) @ c1.weights[m]
            if m == 0:
                gates = out[:, 0, n0 * h:].reshape(e, self.lmax, h)
                out = out[:, :, :n0 * h]
            y.append(out.reshape(e, signs * n, h))
        y[0] = gate(y[0], gates, self.degree0)
        if len(y) > 1:
            sig = torch.sigmoid(gates)  # once for all m > 0 blocks
            for m in range(1, len(y)):  # rows l = m..lmax for +m, then for -m: a broadcast
                n = self.lmax - m + 1
                y[m] = (y[m].view(e, 2, n, h) * sig[:, None, m - 1:]).view(e, 2 * n, h)
        return so2.so2_linear(y, list(self.weights2), self.lmax, self.mmax)


class EdgeDegreeEmbedding(nn.Module):
    """``x_i += sum_j R^T(ij) [w_l(edge_ij) at m = 0] / avg_num_neighbors``: every degree of the
    initial features from the directions of the edges (``R^T e_(l,0)`` is ``Y_l`` of the edge)."""

    def __init__(self, lmax: int, mmax: int, channels: int, num_basis: int, hidden: int,
                 avg_num_neighbors: float):
        super().__init__()
        self.lmax, self.mmax, self.channels = lmax, mmax, channels
        self.radial = RadialWeights(num_basis, hidden, (lmax + 1, channels))
        self.inv_avg_neighbors = 1.0 / avg_num_neighbors

    def forward(self, x: torch.Tensor, edge: torch.Tensor, envelope: torch.Tensor,
                frame, receiver: torch.Tensor) -> torch.Tensor:
        m0 = self.radial(edge, envelope)  # [E, lmax + 1, C]
        blocks = [m0] + [m0.new_zeros((m0.shape[0], size, self.channels))
                         for size in so2.block_sizes(self.lmax, self.mmax)[1:]]
        msg = so2.rotate_from_edge_frame(blocks, frame)
        return x + scatter_sum(msg, receiver, x.shape[0]) * self.inv_avg_neighbors
