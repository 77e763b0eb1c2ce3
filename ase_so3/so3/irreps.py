"""Bookkeeping for the ``x[node, (l, m), channel]`` layout (see :mod:`ase_so3.keys`)."""

from __future__ import annotations

import torch

from ase_so3.keys import num_lm
from ase_so3.so3._e3nn import o3


def degree_slices(lmax: int) -> list[slice]:
    """``slices[l]`` selects the ``2l + 1`` components of degree ``l`` on the (l, m) axis."""
    return [slice(l * l, (l + 1) * (l + 1)) for l in range(lmax + 1)]


def degree_of_index(lmax: int, device=None) -> torch.Tensor:
    """``[num_lm(lmax)]`` long tensor: the degree l of each position on the (l, m) axis."""
    return torch.tensor([l for l in range(lmax + 1) for _ in range(2 * l + 1)], dtype=torch.long,
                        device=device)


def order_of_index(lmax: int, device=None) -> torch.Tensor:
    """``[num_lm(lmax)]`` long tensor: the order m of each position on the (l, m) axis."""
    return torch.tensor([m for l in range(lmax + 1) for m in range(-l, l + 1)], dtype=torch.long,
                        device=device)


def irreps(lmax: int, channels: int):
    """The e3nn ``Irreps`` of a feature block: ``channels`` copies of each degree, natural parity.

    Note e3nn stores irreps channel-major (``[mul, 2l+1]`` per degree); use
    :func:`to_e3nn_layout` / :func:`from_e3nn_layout` to convert.
    """
    return o3.Irreps([(channels, (l, (-1) ** l)) for l in range(lmax + 1)])


def to_e3nn_layout(x: torch.Tensor, lmax: int) -> torch.Tensor:
    """``[n, (l,m), c]`` -> e3nn's flat ``[n, sum_l c * (2l+1)]`` (channel-major per degree)."""
    n, _, c = x.shape
    parts = [x[:, s, :].transpose(1, 2).reshape(n, c * (s.stop - s.start))
             for s in degree_slices(lmax)]
    return torch.cat(parts, dim=1)


def from_e3nn_layout(x: torch.Tensor, lmax: int, channels: int) -> torch.Tensor:
    """Inverse of :func:`to_e3nn_layout`."""
    n = x.shape[0]
    out, start = [], 0
    for l in range(lmax + 1):
        width = channels * (2 * l + 1)
        out.append(x[:, start:start + width].reshape(n, channels, 2 * l + 1).transpose(1, 2))
        start += width
    return torch.cat(out, dim=1)


__all__ = ["num_lm", "degree_slices", "degree_of_index", "order_of_index", "irreps",
           "to_e3nn_layout", "from_e3nn_layout"]
