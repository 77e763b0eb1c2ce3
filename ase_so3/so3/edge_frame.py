"""The edge frame: for each edge vector ``r``, a rotation ``R`` with ``R r_hat = +y`` (the polar
axis, :mod:`ase_so3.keys`), and its Wigner-D blocks ``D^l(R)`` built without a per-edge recursion.

Construction (e3nn's Y-X-Y angles, on two charts so no angle is ever ill-defined): write
``b = P r_hat``, where ``P = 1`` when ``|r_y| <= 1/sqrt(2)`` and ``P = R_x(90°)`` otherwise (this
moves edges near ``±y`` to near ``±z``). Then ``b = R_y(alpha) R_x(beta) y_hat`` with
``cos(alpha), sin(alpha) = b_z / rho, b_x / rho``, ``cos(beta) = b_y``, ``sin(beta) = rho`` and
``rho = sqrt(b_x^2 + b_z^2) >= 1/sqrt(2)`` on either chart, so every quantity is smooth with
bounded derivatives, including edges exactly along ``±x``, ``±y`` or ``±z``, and

    R = R_x(-beta) R_y(-alpha) P,     D^l(R) = Q^T Y(-beta) Q Y(-alpha) D^l(P),

where ``Q = D^l(R_z(90°))`` turns a rotation about y into one about x and ``Y(theta) = D^l(R_y(theta))``
only mixes ``m`` with ``-m`` (rows ``cos(|m| theta)``, ``±sin(|m| theta)``). The fixed matrices come
from :class:`~ase_so3.so3.wigner.WignerD` of the fixed 3x3 rotations; per edge only elementwise
products with ``cos(m theta)``, ``sin(m theta)`` and two products with fixed matrices remain (large
matrix products over all edges), instead of :class:`WignerD`'s degree-by-degree recursion of small
per-edge products. Measured at 100k edges, forward and backward, one CPU thread: 0.52 s vs 0.67 s
at lmax 4, 1.33 s vs 1.78 s at lmax 6. The frame's roll about the edge jumps between the charts;
everything built on it is invariant to that roll (tested).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ase_so3.so3.wigner import WignerD

_CHART_SWITCH = 1 / math.sqrt(2)  # |r_y| above this: the tilted chart


def _rot_x(theta: float) -> torch.Tensor:
    c, s = math.cos(theta), math.sin(theta)
    return torch.tensor([[1, 0, 0], [0, c, -s], [0, s, c]], dtype=torch.float64)


def _rot_y(theta: float) -> torch.Tensor:
    c, s = math.cos(theta), math.sin(theta)
    return torch.tensor([[c, 0, s], [0, 1, 0], [-s, 0, c]], dtype=torch.float64)


def _rot_z(theta: float) -> torch.Tensor:
    c, s = math.cos(theta), math.sin(theta)
    return torch.tensor([[c, -s, 0], [s, c, 0], [0, 0, 1]], dtype=torch.float64)


def _chart(vectors: torch.Tensor):
    """Unit vectors ``b = P r_hat`` and whether the tilted chart was used."""
    a = vectors / torch.linalg.vector_norm(vectors, dim=-1, keepdim=True)
    tilted = a[:, 1].abs() > _CHART_SWITCH
    b = torch.where(tilted[:, None], torch.stack([a[:, 0], -a[:, 2], a[:, 1]], dim=-1), a)
    return b, tilted


def _angles(b: torch.Tensor):
    """``cos, sin`` of alpha and beta (``b = R_y(alpha) R_x(beta) y_hat``), each ``[E]``."""
    rho = torch.sqrt(b[:, 0] ** 2 + b[:, 2] ** 2)  # >= 1/sqrt(2) on both charts
    return b[:, 2] / rho, b[:, 0] / rho, b[:, 1], rho


def edge_rotation(vectors: torch.Tensor) -> torch.Tensor:
    """``[E, 3]`` edge vectors -> ``[E, 3, 3]`` rotations ``R`` with ``R @ r_hat = +y`` (equal to
    degree 1 of :class:`EdgeWignerD`)."""
    b, tilted = _chart(vectors)
    ca, sa, cb, sb = _angles(b)
    z = torch.zeros_like(ca)
    # R_x(-beta) R_y(-alpha), then P on the right for the tilted chart
    r = torch.stack([torch.stack([ca, z, -sa], -1),
                     torch.stack([sb * sa, cb, sb * ca], -1),
                     torch.stack([cb * sa, -sb, cb * ca], -1)], dim=1)
    p = _rot_x(math.pi / 2).to(dtype=vectors.dtype, device=vectors.device)
    return torch.where(tilted[:, None, None], r @ p, r)


class EdgeWignerD(nn.Module):
    """Edge vectors ``[E, 3]`` -> ``[D^0(R), ..., D^lmax(R)]`` for ``R = edge_rotation(vectors)``,
    each ``[E, 2l+1, 2l+1]`` (see the module docstring for the construction)."""

    def __init__(self, lmax: int):
        super().__init__()
        self.lmax = lmax
        wigner = WignerD(lmax).to(torch.float64)
        q_blocks = wigner.blocks(_rot_z(math.pi / 2)[None])
        p_blocks = wigner.blocks(_rot_x(math.pi / 2)[None])
        theta = 0.3
        y_blocks = wigner.blocks(_rot_y(theta)[None])
        signs = []
        for l in range(1, lmax + 1):
            q, mirror = q_blocks[l][0], torch.arange(2 * l, -1, -1)
            m = torch.arange(-l, l + 1).abs().to(torch.float64)
            # Y(theta)[a, a] = cos(|m| theta), Y(theta)[a, mirror(a)] = sign_a sin(|m| theta)
            off = y_blocks[l][0][torch.arange(2 * l + 1), mirror]
            sign = torch.where(m > 0, off / torch.sin(m * theta).clamp_min(1e-300),
                               torch.zeros_like(off))
            assert torch.allclose(sign.abs(), (m > 0).to(torch.float64), atol=1e-12)
            eye = torch.eye(2 * l + 1, dtype=torch.float64)
            first = torch.stack([eye, p_blocks[l][0]])  # A1 [chart, a, b]
            first = torch.stack([first, first[:, mirror]], dim=1)  # rows as is / mirrored
            middle = torch.stack([q.T, q.T[:, mirror]])  # Q^T, columns as is / mirrored
            # (Q Y(-alpha) A1)^T[b, j] = sum_a coeff[a] A1'[a, b] Q^T'[a, j] over the 4 rows
            # (chart, cos/sin) of each a: one product of the per-edge coefficients with this
            fold = torch.einsum("ckab,maj->ckambj", first, middle)
            self.register_buffer(f"fold_{l}", fold.reshape(4 * (2 * l + 1), -1).contiguous(),
                                 False)
            self.register_buffer(f"last_{l}", q.contiguous(), False)  # (Q^T)^T
            signs.append(sign)
        # |m| of each row of degrees 1..lmax, and the sign of its sin term, all degrees at once
        self.register_buffer("abs_m", torch.cat([torch.arange(-l, l + 1).abs()
                                                 for l in range(lmax + 1)])[1:], False)
        self.register_buffer("signs", torch.cat(signs) if signs else torch.zeros(0), False)

    def blocks(self, vectors: torch.Tensor) -> list[torch.Tensor]:
        e = vectors.shape[0]
        b, tilted = _chart(vectors)
        ca, sa, cb, sb = _angles(b)
        out = [torch.ones((e, 1, 1), dtype=vectors.dtype, device=vectors.device)]
        if self.lmax == 0:
            return out
        # cos(m theta), sin(-m theta) for m = 0..lmax by powers of exp(i theta)
        cos_a, sin_a = _multiples(ca, -sa, self.lmax)
        cos_b, sin_b = _multiples(cb, -sb, self.lmax)
        on = tilted.to(vectors.dtype)[:, None]
        sizes = [2 * l + 1 for l in range(1, self.lmax + 1)]
        # rows of Y(-alpha) and Y(-beta) for every degree: one gather each, split per degree
        rows = [t.index_select(1, self.abs_m) for t in (cos_a, sin_a, cos_b, sin_b)]
        rows[1], rows[3] = rows[1] * self.signs, rows[3] * self.signs
        for l, c2, s2, c1, s1 in zip(range(1, self.lmax + 1),
                                     *(t.split(sizes, dim=1) for t in rows)):
            q = 2 * l + 1
            # (Q Y(-alpha) A1)^T and the same with mirrored columns, A1 = D(P) on the tilted
            # chart: coefficients [E, (chart, cos/sin, a)] times the fixed fold
            coeff = torch.cat([c2, s2], dim=1)
            coeff = torch.cat([coeff * (1 - on), coeff * on], dim=1)
            # unbind, not t2[:, 0]: its backward is one stack, not a zero-filled tensor each
            t2, t2_mirror = (coeff @ getattr(self, f"fold_{l}")).view(e, 2, q, q).unbind(1)
            t3 = c1[:, None, :] * t2 + s1[:, None, :] * t2_mirror  # (Y(-beta) Q Y A1)^T
            d_t = (t3.reshape(e * q, q) @ getattr(self, f"last_{l}")).view(e, q, q)  # D^T
            out.append(d_t.transpose(1, 2))
        return out


def _multiples(c: torch.Tensor, s: torch.Tensor, n: int):
    """``cos(m t), sin(m t)`` for m = 0..n as ``[E, n+1]`` from ``c = cos t``, ``s = sin t``."""
    cs, ss = [torch.ones_like(c), c], [torch.zeros_like(s), s]
    for _ in range(2, n + 1):
        cs.append(cs[-1] * c - ss[-1] * s)
        ss.append(ss[-1] * c + cs[-2] * s)
    return torch.stack(cs[:n + 1], dim=1), torch.stack(ss[:n + 1], dim=1)
