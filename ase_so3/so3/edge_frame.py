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
from :class:`~ase_so3.so3.wigner.WignerD` of the fixed 3x3 rotations. Per edge:
``N(beta) = Q^T Y(-beta) Q`` is a sum of fixed matrices weighted by ``cos(k beta)``, ``sin(k beta)``
(one product of ``[E, 2 lmax + 1]`` multiples with a fixed fold, all degrees at once); ``Y(-alpha)``
on its right scales and mixes columns elementwise; ``D(P)`` is one product with a fixed matrix on
the rows of tilted-chart edges only. This replaces :class:`WignerD`'s degree-by-degree recursion of
small per-edge products. The frame's roll about the edge jumps between the charts; everything
built on it is invariant to that roll (tested).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ase_so3.so3 import cpu_kernels
from ase_so3.so3.wigner import WignerD
from ase_so3.tracing import static_shapes_required

_CHART_SWITCH = 1 / math.sqrt(2)  # |r_y| above this: the tilted chart


def _rotation(axis: int, theta: float) -> torch.Tensor:
    """The float64 3x3 rotation by ``theta`` about coordinate axis 0 (x), 1 (y) or 2 (z)."""
    c, s = math.cos(theta), math.sin(theta)
    i, j = [(1, 2), (2, 0), (0, 1)][axis]  # the plane it turns, in right-handed order
    r = torch.eye(3, dtype=torch.float64)
    r[i, i], r[j, j], r[j, i], r[i, j] = c, c, s, -s
    return r


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
    p = _rotation(0, math.pi / 2).to(dtype=vectors.dtype, device=vectors.device)
    return torch.where(tilted[:, None, None], r @ p, r)


class EdgeWignerD(nn.Module):
    """Edge vectors ``[E, 3]`` -> ``[D^0(R), ..., D^lmax(R)]`` for ``R = edge_rotation(vectors)``,
    each ``[E, 2l+1, 2l+1]`` (see the module docstring for the construction)."""

    def __init__(self, lmax: int):
        super().__init__()
        self.lmax = lmax
        wigner = WignerD(lmax).to(torch.float64)
        q_blocks = wigner.blocks(_rotation(2, math.pi / 2)[None])
        p_blocks = wigner.blocks(_rotation(0, math.pi / 2)[None])
        theta = 0.3
        y_blocks = wigner.blocks(_rotation(1, theta)[None])
        folds, mirrored, col_m, col_sign = [], [], [], []
        for l in range(1, lmax + 1):
            q, mirror, n = q_blocks[l][0], torch.arange(2 * l, -1, -1), 2 * l + 1
            m = torch.arange(-l, l + 1).abs()
            # Y(theta)[a, a] = cos(|m| theta), Y(theta)[a, mirror(a)] = sign_a sin(|m| theta)
            off = y_blocks[l][0][torch.arange(n), mirror]
            sign = torch.where(m > 0, off / torch.sin(m.double() * theta).clamp_min(1e-300),
                               torch.zeros_like(off))
            assert torch.allclose(sign.abs(), (m > 0).double(), atol=1e-12)
            sign = sign.round()  # exactly +-1 (0 for m = 0)
            # N(beta) = Q^T Y(-beta) Q = sum_k cos(k beta) F_k + sin(k beta) G_k: one row of
            # fixed coefficients per multiple (cos 0..lmax, then sin 1..lmax)
            fold = torch.zeros(2 * lmax + 1, n, n, dtype=torch.float64)
            for a in range(n):
                fold[m[a]] += torch.outer(q[a], q[a])
                if m[a] > 0:
                    fold[lmax + m[a]] -= sign[a] * torch.outer(q[a], q[mirror[a]])
            folds.append(fold.reshape(2 * lmax + 1, -1))
            mirrored.append(fold[:, :, mirror].reshape(2 * lmax + 1, -1))  # columns mirrored
            # entry (i, j) of N Y(-alpha) = N[i, j] cos(m_j alpha) + N[i, mirror j] sign sin(..)
            col_m.append(m.repeat(n))
            col_sign.append(-sign[mirror].repeat(n))
            self.register_buffer(f"chart_{l}", p_blocks[l][0].contiguous(), False)  # D(P)
        self.register_buffer("chart_flat", torch.cat(  # the D(P) blocks as the kernels read them
            [getattr(self, f"chart_{l}").reshape(-1) for l in range(1, lmax + 1)]
            + [torch.zeros(0, dtype=torch.float64)]), False)
        self.register_buffer("chart_flat_t", torch.cat(
            [getattr(self, f"chart_{l}").T.reshape(-1) for l in range(1, lmax + 1)]
            + [torch.zeros(0, dtype=torch.float64)]), False)
        self.widths = [2 * l + 1 for l in range(1, lmax + 1)]
        self.sizes = [n * n for n in self.widths]
        empty = torch.zeros(2 * lmax + 1, 0, dtype=torch.float64)
        # all N blocks, then all column-mirrored N blocks, for one product over every degree
        self.register_buffer("fold", torch.cat(folds + mirrored, dim=1) if folds else empty,
                             False)
        for n, ms, signs in zip(self.widths, col_m, col_sign):  # the fused kernel relies on it
            assert (ms.view(n, n) == ms[:n]).all() and (signs.view(n, n) == signs[:n]).all(), \
                "m and sign of an entry depend on its column only"
        self.register_buffer("col_m", torch.cat(col_m) if col_m else torch.zeros(0).long(), False)
        self.register_buffer("col_sign", torch.cat(col_sign) if col_m else torch.zeros(0), False)

    def blocks(self, vectors: torch.Tensor) -> list[torch.Tensor]:
        return self.split(self.flat(vectors))

    def split(self, flat: torch.Tensor) -> list[torch.Tensor]:
        """:meth:`flat`'s ``[E, T]`` -> ``[D^0, ..., D^lmax]`` (views, ``D^0 = 1`` added)."""
        e = flat.shape[0]
        out = [torch.ones((e, 1, 1), dtype=flat.dtype, device=flat.device)]
        return out + [blk.view(e, 2 * l + 1, 2 * l + 1) for l, blk in
                      zip(range(1, self.lmax + 1), flat.split(self.sizes, dim=1))]

    def flat(self, vectors: torch.Tensor) -> torch.Tensor:
        """``[E, T]``: the blocks ``D^1 .. D^lmax``, each flattened row-major, side by side."""
        e = vectors.shape[0]
        if self.lmax == 0:
            return vectors.new_zeros((e, 0))
        b, tilted = _chart(vectors)
        ca, sa, cb, sb = _angles(b)
        # cos(k theta), sin(k theta) for k = 0..lmax by powers of exp(i theta)
        cos_a, sin_a = _multiples(ca, sa, self.lmax)
        cos_b, sin_b = _multiples(cb, sb, self.lmax)
        cs_b = torch.cat([cos_b, sin_b[:, 1:]], dim=1)
        if cpu_kernels.use_kernels(cs_b):  # the same formula, fused per edge
            return cpu_kernels.wigner_flat(self, cs_b, cos_a, sin_a, tilted)
        return self.assemble(cs_b, cos_a, sin_a, tilted)

    def assemble(self, cs_b, cos_a, sin_a, tilted) -> torch.Tensor:
        """:meth:`flat` from the multiples ``[cos(k beta), sin(k beta)]`` (``[E, 2 lmax + 1]``),
        ``cos(k alpha)``, ``sin(k alpha)`` (``[E, lmax + 1]``) and the chart of each edge."""
        e, total = cs_b.shape[0], sum(self.sizes)
        # N(beta) and N with mirrored columns, every degree: one product with the fixed fold
        n, n_mirror = (cs_b @ self.fold).view(e, 2, total).unbind(1)  # unbind: one stack back
        # times Y(-alpha) on the right: per column, cos and sin of its |m| alpha
        d = torch.addcmul(n * cos_a.index_select(1, self.col_m), n_mirror,
                          sin_a.index_select(1, self.col_m) * self.col_sign)
        return self._tilted_chart(d, tilted)

    def _tilted_chart(self, d: torch.Tensor, tilted: torch.Tensor) -> torch.Tensor:
        """``D = (N Y(-alpha)) D(P)`` on the tilted chart: a product with a fixed matrix on the
        rows of those edges only (every row, then a select, when compiling or capturing a CUDA
        graph: no data-dependent shapes, :mod:`ase_so3.tracing`)."""
        index = None if static_shapes_required(d) else tilted.nonzero()[:, 0]
        rows = d if index is None else d.index_select(0, index)
        k = rows.shape[0]
        fixed = torch.cat([(blk.reshape(k * w, w) @ getattr(self, f"chart_{l}")).view(k, w * w)
                           for l, w, blk in zip(range(1, self.lmax + 1), self.widths,
                                                rows.split(self.sizes, dim=1))], dim=1)
        if index is None:
            return torch.where(tilted[:, None], fixed, d)
        return d.index_copy_(0, index, fixed)  # in place: d is a temporary that no one saved


def _multiples(c: torch.Tensor, s: torch.Tensor, n: int):
    """``cos(m t), sin(m t)`` for m = 0..n as ``[E, n+1]`` from ``c = cos t``, ``s = sin t``."""
    cs, ss = [torch.ones_like(c), c], [torch.zeros_like(s), s]
    for _ in range(2, n + 1):
        cs.append(cs[-1] * c - ss[-1] * s)
        ss.append(ss[-1] * c + cs[-2] * s)
    return torch.stack(cs[:n + 1], dim=1), torch.stack(ss[:n + 1], dim=1)
