"""SO(2) convolutions in the edge frame (eSCN, Passaro & Zitnick 2023).

Rotate the source features of an edge into the frame where the edge lies on the polar axis
(``+y``, see :mod:`ase_so3.keys`). There ``Y^{lf}(r_hat)`` is non-zero only at ``m_f = 0`` and
``C[li mi, lf 0, lo mo]`` is non-zero only for ``mo = ±mi``, so the tensor-product convolution
collapses to independent linear maps for each ``|m|`` that mix degrees and channels.

Parity rule (package-wide, :mod:`ase_so3.keys`): features have natural parity and only paths with
``li + lf + lo`` even are kept. In the real basis those paths couple ``m -> m`` with the *same*
coefficient for ``+m`` and ``-m``; the ``m -> -m`` couplings come only from odd paths, which would
break reflection invariance, and are dropped. So for each ``|m|`` one matrix ``W_m`` acts on the
``+m`` and on the ``-m`` components alike::

    y[(lo, +m)] = W_m x[(li, +m)],     y[(lo, -m)] = W_m x[(li, -m)],     l >= |m|.

With ``mmax = lmax`` and per-edge ``W_m`` this reproduces the full TFN convolution exactly
(:func:`tfn_weights_to_so2`, tested to 1e-10); ``mmax < lmax`` truncates high orders.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from ase_so3.so3 import cpu_kernels
from ase_so3.so3.clebsch_gordan import clebsch_gordan


def m_major_rows(lmax: int, mmax: int) -> list[int]:
    """The (l, m) indices kept in the edge frame, in m-major order: ``(l, 0)`` for l = 0..lmax,
    then for each m = 1..mmax the ``(l, +m)`` for l = m..lmax followed by the ``(l, -m)``."""
    rows = [l * l + l for l in range(lmax + 1)]
    for m in range(1, mmax + 1):
        rows += [l * l + l + m for l in range(m, lmax + 1)]
        rows += [l * l + l - m for l in range(m, lmax + 1)]
    return rows


DENSE_FRAME_MAX_L = 3  # degrees up to this share one dense block of the edge frame


class EdgeFrame(NamedTuple):
    """The per-edge rotation into the edge frame, in the form that is cheapest to apply: one
    block-diagonal matrix for the degrees ``0..min(lmax, DENSE_FRAME_MAX_L)`` and one ``D^l``
    for each higher degree, each restricted to its rows with ``|m| <= mmax`` (``[E, rows, cols]``).

    Measured on CPU at 100k edges: a batched product costs mostly a fixed time per edge, nearly the
    same for 3x3 as for 13x13 blocks, so the low degrees go together (one 16x16 product instead of
    four small ones); the high degrees stay apart, where a dense block-diagonal matrix would waste
    a factor growing like lmax."""

    matrices: tuple
    lmax: int
    mmax: int
    flat: torch.Tensor | None = None  # set instead of matrices: the fused CPU kernels' input


class _Group(NamedTuple):
    degrees: list  # the degrees in this block of the frame
    lms: list  # its kept rows as (l, m)
    scatter: tuple | None  # multi-degree groups: where each block entry goes (see edge_frame)


_LAYOUTS: dict = {}  # a plain dict, not functools.lru_cache, which torch.compile warns about


def _frame_layout(lmax: int, mmax: int, dense_max: int):
    """Per group of degrees (:class:`_Group`): the kept rows as (l, m) in degree-major order
    (m-major when there is one group), and for a multi-degree group where each entry of its
    blocks goes in the flattened ``[rows, cols]`` frame matrix."""
    key = (lmax, mmax, dense_max)
    if key not in _LAYOUTS:
        _LAYOUTS[key] = _build_layout(lmax, mmax, dense_max)
    return _LAYOUTS[key]


def _build_layout(lmax: int, mmax: int, dense_max: int):
    top = min(lmax, dense_max)
    groups = [list(range(top + 1))] + [[l] for l in range(top + 1, lmax + 1)]
    layout = []
    for degrees in groups:
        lms, positions, offset = [], [], 0
        for l in degrees:
            for m in range(-min(l, mmax), min(l, mmax) + 1):
                lms.append((l, m))
                positions.append(offset + l + m)
            offset += 2 * l + 1
        layout.append((degrees, lms, positions))
    if len(layout) == 1:  # one group: its rows in m-major order, so the product gives the blocks
        rank = {row: i for i, row in enumerate(m_major_rows(lmax, mmax))}
        order = sorted(range(len(lms)),
                       key=lambda i: rank[lms[i][0] ** 2 + lms[i][0] + lms[i][1]])
        layout = [(degrees, [lms[i] for i in order], [positions[i] for i in order])]
    return [_Group(degrees, lms, _scatter(degrees, positions) if len(degrees) > 1 else None)
            for degrees, lms, positions in layout]


def _scatter(degrees: list[int], positions: list[int]) -> tuple:
    """Source entries (in the concatenated flattened blocks) and their targets in the flattened
    ``[len(positions), sum(2l+1)]`` matrix whose row r is row ``positions[r]`` of the
    block-diagonal matrix."""
    cols = sum(2 * l + 1 for l in degrees)
    row_of = {p: r for r, p in enumerate(positions)}
    source, target, start, offset = [], [], 0, 0
    for l in degrees:
        n = 2 * l + 1
        for a in range(n):
            if offset + a in row_of:
                source += range(start + a * n, start + (a + 1) * n)
                target += range(row_of[offset + a] * cols + offset,
                                row_of[offset + a] * cols + offset + n)
        start, offset = start + n * n, offset + n
    return source, target, len(positions), cols


_INDICES: dict = {}


def _indices(key: tuple, scatter: tuple, device) -> tuple:
    """A group's ``scatter`` with its index lists as tensors on ``device``, made once per layout
    ``key`` and device (no host-to-device copy per forward)."""
    key = key + (str(device),)
    if key not in _INDICES:
        source, target, rows, cols = scatter
        as_index = lambda v: torch.tensor(v, dtype=torch.long, device=device)  # noqa: E731
        _INDICES[key] = (as_index(source), as_index(target), rows, cols)
    return _INDICES[key]


def edge_frame(blocks: list[torch.Tensor], lmax: int, mmax: int,
               flat: torch.Tensor | None = None) -> EdgeFrame:
    """Wigner-D blocks ``[D^0, D^1, ...]`` (``[E, 2l+1, 2l+1]``) -> :class:`EdgeFrame`, to pass
    to :func:`rotate_to_edge_frame` and :func:`rotate_from_edge_frame`. With ``flat`` (the same
    blocks as :meth:`~ase_so3.so3.edge_frame.EdgeWignerD.flat` gives them) and the ``cpp`` kernel
    backend (:mod:`~ase_so3.so3.cpu_kernels`) on CPU, the rotations use the fused kernels."""
    if flat is not None and cpu_kernels.use_kernels(flat):
        return EdgeFrame((), lmax, mmax, flat)
    mats = []
    for k, (degrees, _, scatter) in enumerate(_frame_layout(lmax, mmax, DENSE_FRAME_MAX_L)):
        if scatter is not None:  # one copy in, one gather in backward (block_diagonal: many)
            source, target, rows, cols = _indices((lmax, mmax, DENSE_FRAME_MAX_L, k), scatter,
                                                  blocks[0].device)
            e = blocks[0].shape[0]
            flat = torch.cat([blocks[l].reshape(e, (2 * l + 1) ** 2) for l in degrees], dim=1)
            if source.numel() < flat.shape[1]:
                flat = flat[:, source]
            mats.append(flat.new_zeros((e, rows * cols)).index_copy(1, target, flat)
                        .view(e, rows, cols))
        else:
            l, kept = degrees[0], min(degrees[0], mmax)
            mats.append(blocks[l] if kept == l else blocks[l][:, l - kept:l + kept + 1])
    return EdgeFrame(tuple(mats), lmax, mmax)


def frame_of(wigner, vectors: torch.Tensor, mmax: int) -> EdgeFrame:
    """The :class:`EdgeFrame` of edge ``vectors`` from an
    :class:`~ase_so3.so3.edge_frame.EdgeWignerD` (its flattened blocks, for the fused kernels)."""
    flat = wigner.flat(vectors)  # D^l of the edge frame, flattened side by side
    return edge_frame(wigner.split(flat), wigner.lmax, mmax, flat=flat)


def block_sizes(lmax: int, mmax: int) -> list[int]:
    """Rows of each m-block of the edge-frame features: ``lmax + 1`` for m = 0, then
    ``2 (lmax - m + 1)`` (the ``+m`` rows, then the ``-m`` rows)."""
    return [(1 if m == 0 else 2) * (lmax - m + 1) for m in range(mmax + 1)]


def rotate_to_edge_frame(x: torch.Tensor, frame: EdgeFrame) -> list[torch.Tensor]:
    """``[E, (lmax+1)^2, C]`` -> edge-frame features as m-blocks ``[E, rows_m, C]`` for
    m = 0..mmax (:func:`block_sizes`; concatenated, the rows of :func:`m_major_rows`)."""
    lmax, mmax = frame.lmax, frame.mmax
    if frame.flat is not None:
        return cpu_kernels.rotate_in(frame.flat, x, lmax, mmax)
    if len(frame.matrices) == 1:  # small lmax: one product, rows already in m-major order
        return list((frame.matrices[0] @ x).split(block_sizes(lmax, mmax), dim=1))
    layout = _frame_layout(lmax, mmax, DENSE_FRAME_MAX_L)
    parts = x.split([sum(2 * l + 1 for l in g[0]) for g in layout], dim=1)  # one backward copy
    rows = {}
    for mat, part, (degrees, lms, _) in zip(frame.matrices, parts, layout):
        out = part if degrees == [0] else mat @ part  # D^0 = 1
        # rows as views (unbind: its backward is one stack), then one stack per m-block
        rows.update(zip(lms, out.unbind(1)))
    blocks = [torch.stack([rows[l, 0] for l in range(lmax + 1)], dim=1)]
    for m in range(1, mmax + 1):
        blocks.append(torch.stack([rows[l, m] for l in range(m, lmax + 1)]
                                  + [rows[l, -m] for l in range(m, lmax + 1)], dim=1))
    return blocks


def rotate_from_edge_frame(y: list[torch.Tensor], frame: EdgeFrame) -> torch.Tensor:
    """Inverse of :func:`rotate_to_edge_frame` on the kept rows: m-blocks -> ``[E, D, C]``."""
    lmax, mmax = frame.lmax, frame.mmax
    if frame.flat is not None:
        return cpu_kernels.rotate_out(frame.flat, y, lmax, mmax)
    if len(frame.matrices) == 1:
        return frame.matrices[0].transpose(1, 2) @ torch.cat(y, dim=1)
    rows = {}
    for m, block in enumerate(y):
        views, n = block.unbind(1), lmax - m + 1
        rows.update(((l, m), views[l - m]) for l in range(m, lmax + 1))
        if m:
            rows.update(((l, -m), views[n + l - m]) for l in range(m, lmax + 1))
    out = []
    for mat, (degrees, lms, _) in zip(frame.matrices, _frame_layout(lmax, mmax,
                                                                    DENSE_FRAME_MAX_L)):
        kept = torch.stack([rows[lm] for lm in lms], dim=1)
        out.append(kept if degrees == [0] else mat.transpose(1, 2) @ kept)
    return torch.cat(out, dim=1)


def so2_linear(x_rot: list[torch.Tensor], weights: list[torch.Tensor], lmax: int, mmax: int,
               input_scale: list[torch.Tensor] | None = None) -> list[torch.Tensor]:
    """Apply ``W_m`` to the edge-frame m-blocks ``[E, rows_m, c_in]``
    (from :func:`rotate_to_edge_frame`).

    ``weights[m]``: ``[n_m * c_in, n_m * c_out]`` shared by all edges, or
    ``[E, n_m * c_in, n_m * c_out]`` per edge, where ``n_m = lmax - m + 1`` and the flattened
    index is ``(l - m) * c + channel``. ``input_scale[m]`` (optional, ``[E, n_m * c_in]``)
    multiplies the inputs first: the same as per-edge weights ``diag(scale) W_m`` without
    materialising them. The same ``W_m`` acts on the ``+m`` and the ``-m`` rows. Returns the
    m-blocks ``[E, rows_m, c_out]``.
    """
    e, c_in = x_rot[0].shape[0], x_rot[0].shape[2]
    c_out = weights[0].shape[-1] // (lmax + 1)
    out = []
    for m, part in enumerate(x_rot[:mmax + 1]):
        n, signs = lmax - m + 1, (1 if m == 0 else 2)
        xm = part.reshape(e, signs, n * c_in)  # a view when the block is contiguous
        if input_scale is not None:
            xm = xm * input_scale[m][:, None, :]
        out.append((xm @ weights[m]).view(e, signs * n, c_out))
    return out


def tfn_weights_to_so2(path_weights: torch.Tensor, paths: list[tuple[int, int, int]], lmax: int,
                       per_lo_norm: dict[int, float] | None = None) -> list[torch.Tensor]:
    """Per-edge TFN path weights ``[E, paths, C]`` -> per-edge SO(2) weights (``mmax = lmax``).

    ``W_m[(li, c), (lo, c)] = sum_lf w[(li, lf, lo), c] C[li m, lf 0, lo m] Y^{lf}_0(+y) / norm_lo``
    (diagonal in channels: TFN mixes channels only in its self-interaction). ``per_lo_norm``
    holds the convolution's normalisation of each output degree.
    """
    e, _, c = path_weights.shape
    eye = torch.eye(c, dtype=path_weights.dtype, device=path_weights.device)
    out = []
    for m in range(lmax + 1):
        n = lmax - m + 1
        w = path_weights.new_zeros((e, n, c, n, c))
        for p, (li, lf, lo) in enumerate(paths):
            if li < m or lo < m:
                continue
            coeff = float(clebsch_gordan(li, lf, lo)[li + m, lf, lo + m]) * (2 * lf + 1) ** 0.5
            if per_lo_norm is not None:
                coeff /= per_lo_norm[lo]
            w[:, li - m, :, lo - m, :] += coeff * path_weights[:, p, :, None] * eye
        out.append(w.reshape(e, n * c, n * c))
    return out
