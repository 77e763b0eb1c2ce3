"""The Clebsch–Gordan tensor-product convolution of TFN, shared by TFN and the SE(3)-Transformer.

For an edge from neighbour j to centre i with vector r, filter weights w (from a radial network)
and source features x = x_j::

    m[lo, mo, c] = sum_{paths (li, lf, lo)} w[path, c] sum_{mi, mf} C[li mi, lf mf, lo mo]
                                                   Y^{lf}_{mf}(r_hat) x[li, mi, c]

i.e. the filter is ``F(r) = R(r) Y(r_hat)`` with one learned radial function per path and channel
("uvu" in e3nn terms; channels are then mixed by the self-interaction). Paths obey the triangle
rule and, by default, the parity rule ``li + lf + lo`` even (see :mod:`ase_so3.keys`). With
``degrees`` (e.g. ``(0, 1, 3)``) only paths between those feature degrees exist, so features of
the other degrees below ``lmax`` stay exactly zero.

The geometric part ``T[e, path, mo, mi] = sum_mf C Y`` does not depend on channels or on the
layer, so models compute it once per forward (:meth:`TensorProductConv.filters`) and every layer,
key and value convolution reuses it.

The same tensor product in the edge frame (:meth:`TensorProductConv.frame_mix`,
:meth:`TensorProductConv.in_frame`): equivariance gives ``T(r_hat) = D(R)^T T(+y) D(R)`` for the
rotation ``R`` that takes ``r_hat`` to the polar axis, and ``Y(+y)`` is non-zero only at
``mf = 0``, so ``T(+y)`` couples ``(li, m)`` only to ``(lo, m)``, with one coefficient for ``+m``
and ``-m`` on parity-even paths. The message is then: rotate ``x`` into the edge frame, mix the
degrees of each ``m`` with per-edge weights ``v[(m, lo, li), c] = sum_path K[(m, lo, li), path]
w[path, c]`` (``K`` folded into the radial network's last layer, no per-edge cost), rotate back.
The same numbers to round-off (tested), with the per-edge rotations of :mod:`ase_so3.so3.so2`
(fused CPU kernels) instead of one small product per degree pair.
"""

from __future__ import annotations

from collections import defaultdict

import torch
from torch import nn

from ase_so3.keys import POLAR_AXIS, num_lm
from ase_so3.so3 import so2
from ase_so3.so3.clebsch_gordan import clebsch_gordan, tensor_product_paths
from ase_so3.so3.spherical_harmonics import SphericalHarmonics


class TensorProductConv(nn.Module):
    """Weighted CG tensor product of edge source features with ``Y(r_hat)``."""

    def __init__(self, lmax_in: int, lmax_out: int, lmax_filter: int, parity: bool = True,
                 degrees=None):
        super().__init__()
        self.lmax_in, self.lmax_out, self.lmax_filter = lmax_in, lmax_out, lmax_filter
        paths = tensor_product_paths(lmax_in, lmax_filter, lmax_out, parity=parity)
        if degrees is not None:  # feature degrees in use: no path reads or writes the others
            paths = [p for p in paths if p[0] in degrees and p[2] in degrees]
        by_pair: dict[tuple[int, int], list[int]] = defaultdict(list)
        for li, lf, lo in paths:
            by_pair[(li, lo)].append(lf)
        per_lo = defaultdict(int)
        for li, lf, lo in paths:
            per_lo[lo] += 1
        sentinel = num_lm(lmax_filter)  # index of an appended zero column of Y
        self.groups: list[tuple[int, int, int, int]] = []  # (li, lo, first path, number of paths)
        self.paths: list[tuple[int, int, int]] = []
        for k, ((li, lo), lfs) in enumerate(sorted(by_pair.items())):
            width = 2 * max(lfs) + 1
            index = torch.full((len(lfs), width), sentinel, dtype=torch.long)
            cg = torch.zeros((len(lfs), width, 2 * lo + 1, 2 * li + 1), dtype=torch.float64)
            for q, lf in enumerate(lfs):
                index[q, :2 * lf + 1] = torch.arange(lf * lf, (lf + 1) ** 2)
                # [mi, mf, mo] -> [mf, mo, mi], normalised by the number of paths into lo
                cg[q, :2 * lf + 1] = clebsch_gordan(li, lf, lo).permute(1, 2, 0) / per_lo[lo] ** 0.5
            self.register_buffer(f"index_{k}", index, persistent=False)
            self.register_buffer(f"cg_{k}", cg, persistent=False)
            self.groups.append((li, lo, len(self.paths), len(lfs)))
            self.paths.extend((li, lf, lo) for lf in lfs)

        self._frame_layout()

    def _frame_layout(self) -> None:
        """``frame_mix`` ``[Q, paths]`` (rows: ``(m, lo, li)`` for m = 0..lmax, ``lo``, ``li`` =
        m..lmax) from ``T(+y)``, and whether it reproduces ``T(+y)`` exactly (``in_frame`` is
        valid: every path parity-even, ``lmax_in == lmax_out``)."""
        lmax = self.lmax_in
        if self.lmax_out != lmax:  # the m-blocks of input and output would differ
            self.frame_ok, self.frame_rows = False, []
            self.register_buffer("frame_mix_matrix", torch.zeros(0, self.num_paths,
                                                                 dtype=torch.float64), False)
            return
        sh = SphericalHarmonics(self.lmax_filter)(torch.tensor([POLAR_AXIS], dtype=torch.float64))
        t_frame = [t[0] for t in self.filters(sh)]  # per group [q, 2lo+1, 2li+1]
        rows = [(m, lo, li) for m in range(lmax + 1) for lo in range(m, lmax + 1)
                for li in range(m, lmax + 1)]
        mix = torch.zeros((len(rows), self.num_paths), dtype=torch.float64)
        rebuilt = [torch.zeros_like(t) for t in t_frame]
        for (li, lo, start, n), t, back in zip(self.groups, t_frame, rebuilt):
            for m in range(min(li, lo) + 1):
                coeff = t[:, lo + m, li + m]  # [q]: the +m coefficient of each path
                mix[rows.index((m, lo, li)), start:start + n] = coeff
                back[:, lo + m, li + m] = coeff
                back[:, lo - m, li - m] = coeff
        self.frame_ok = all(
            torch.allclose(a, b, rtol=0, atol=1e-12) for a, b in zip(t_frame, rebuilt))
        self.register_buffer("frame_mix_matrix", mix, persistent=False)
        self.frame_rows = rows

    @property
    def num_paths(self) -> int:
        return len(self.paths)

    def frame_mix(self) -> torch.Tensor:
        """``[Q, paths]``: per-edge path weights ``w`` -> the edge-frame weights of
        :meth:`in_frame`, ``v = frame_mix @ w`` along the path axis."""
        return self.frame_mix_matrix

    def in_frame(self, x_rot: list[torch.Tensor], v: torch.Tensor) -> list[torch.Tensor]:
        """The convolution in the edge frame: ``x_rot`` m-blocks ``[E, rows_m, C]`` (from
        :func:`~ase_so3.so3.so2.rotate_to_edge_frame` with ``mmax = lmax``), ``v`` ``[E, Q, C]``
        or ``[E, Q, K, C]`` (weights through :meth:`frame_mix`) -> message m-blocks
        ``[E, rows_m, K * C]`` (the K convolutions side by side in the channels, so that one
        :func:`~ase_so3.so3.so2.rotate_from_edge_frame` takes them all back)."""
        e, c = v.shape[0], v.shape[-1]
        k = v.shape[2] if v.dim() == 4 else 1
        v = v.view(e, len(self.frame_rows), k, c)
        out, start = [], 0
        for m, x in enumerate(x_rot):
            n, signs = self.lmax_in - m + 1, (1 if m == 0 else 2)
            vm = v[:, start:start + n * n].view(e, 1, n, n, k, c)  # [E, sign, lo, li, K, C]
            start += n * n
            y = (vm * x.view(e, signs, 1, n, 1, c)).sum(3)  # [E, sign, lo, K, C]
            out.append(y.reshape(e, signs * n, k * c))
        return out

    def through_frame(self, x: torch.Tensor, frame, v: torch.Tensor) -> torch.Tensor:
        """The convolution of ``x`` ``[E, (lmax+1)^2, C]`` by way of the edge ``frame``
        (:class:`~ase_so3.so3.so2.EdgeFrame`, ``mmax = lmax``): rotate in, :meth:`in_frame`,
        rotate back; ``[E, (lmax+1)^2, K * C]``."""
        return so2.rotate_from_edge_frame(self.in_frame(so2.rotate_to_edge_frame(x, frame), v),
                                          frame)

    def filters(self, sh: torch.Tensor) -> list[torch.Tensor]:
        """``sh`` ``[E, (lmax_filter+1)^2]`` -> per (li, lo) group ``[E, paths, 2lo+1, 2li+1]``."""
        ext = torch.cat([sh, sh.new_zeros((sh.shape[0], 1))], dim=1)
        out = []
        for k in range(len(self.groups)):
            y = ext[:, getattr(self, f"index_{k}")]  # [E, q, width]
            out.append(torch.einsum("eqf,qfoi->eqoi", y, getattr(self, f"cg_{k}")))
        return out

    def forward(self, x: torch.Tensor, filters: list[torch.Tensor],
                weights: torch.Tensor) -> torch.Tensor:
        """``x`` ``[E, (lmax_in+1)^2, C]`` (source features per edge), ``weights`` ``[E, paths, C]``
        -> messages ``[E, (lmax_out+1)^2, C]``.

        ``weights`` ``[E, paths, K, C]`` gives ``K`` convolutions of the same features at once
        (the SE(3)-Transformer's key and value), ``[E, K, (lmax_out+1)^2, C]``: the contraction of
        the filters with ``x``, the costly part, is then done once for all ``K``."""
        stacked = weights.dim() == 4
        w = weights if stacked else weights.unsqueeze(2)  # [E, paths, K, C]
        parts: list[list[torch.Tensor]] = [[] for _ in range(self.lmax_out + 1)]
        for (li, lo, start, n), t in zip(self.groups, filters):
            tx = torch.einsum("eqoi,eic->eqoc", t, x[:, li * li:(li + 1) ** 2])
            parts[lo].append(torch.einsum("eqoc,eqkc->ekoc", tx, w[:, start:start + n]))
        e, k, c = x.shape[0], w.shape[2], x.shape[2]
        out = [torch.stack(p).sum(0) if p else x.new_zeros((e, k, 2 * lo + 1, c))
               for lo, p in enumerate(parts)]
        out = torch.cat(out, dim=2)
        return out if stacked else out[:, 0]
