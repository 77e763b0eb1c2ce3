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

import functools

import torch

from ase_so3.so3.clebsch_gordan import clebsch_gordan


def m_major_rows(lmax: int, mmax: int) -> list[int]:
    """The (l, m) indices kept in the edge frame, in m-major order: ``(l, 0)`` for l = 0..lmax,
    then for each m = 1..mmax the ``(l, +m)`` for l = m..lmax followed by the ``(l, -m)``."""
    rows = [l * l + l for l in range(lmax + 1)]
    for m in range(1, mmax + 1):
        rows += [l * l + l + m for l in range(m, lmax + 1)]
        rows += [l * l + l - m for l in range(m, lmax + 1)]
    return rows


DENSE_FRAME_MAX_L = 3  # up to this lmax one dense product beats one small product per degree


def edge_frame(blocks: list[torch.Tensor], lmax: int, mmax: int):
    """The rotation into the edge frame in the form that is cheapest to apply.

    Up to ``lmax = DENSE_FRAME_MAX_L``: one matrix ``[E, K, (lmax+1)^2]`` (:func:`edge_frame_matrix`;
    on CPU one batched product beats several small ones). Above: a tuple of per-degree blocks
    ``D^l`` restricted to the rows ``|m| <= mmax`` (``[E, 2 min(l, mmax) + 1, 2l + 1]``): the dense
    matrix is block-diagonal, so applying it wastes a factor growing like lmax, and building it
    costs more than the whole SO(2) convolution. Pass the result to :func:`rotate_to_edge_frame`
    and :func:`rotate_from_edge_frame`; both forms give the same numbers (tested).
    """
    if lmax <= DENSE_FRAME_MAX_L:
        return edge_frame_matrix(blocks, lmax, mmax)
    return tuple(b[:, l - min(l, mmax):l + min(l, mmax) + 1] if mmax < l else b
                 for l, b in enumerate(blocks[:lmax + 1]))


def edge_frame_matrix(blocks: list[torch.Tensor], lmax: int, mmax: int) -> torch.Tensor:
    """Per-edge rotation into the edge frame as one matrix ``[E, K, (lmax+1)^2]``: the
    block-diagonal Wigner-D (blocks ``D^l`` ``[E, 2l+1, 2l+1]``) restricted to the rows of
    :func:`m_major_rows`. One batched product with it replaces one per degree (several times
    faster on CPU at small lmax, where small batched products are dominated by per-call overhead)."""
    from ase_so3.so3.wigner import block_diagonal
    full = block_diagonal(blocks[:lmax + 1])
    rows = torch.tensor(m_major_rows(lmax, mmax), dtype=torch.long, device=full.device)
    return full[:, rows]


@functools.lru_cache(maxsize=None)
def _degree_major_to_m_major(lmax: int, mmax: int) -> tuple[list[int], list[int]]:
    """Positions that reorder the kept rows from degree-major (``l``, then ``m = -mm..mm``) to
    the order of :func:`m_major_rows`, and back."""
    kept = [l * l + l + m for l in range(lmax + 1) for m in range(-min(l, mmax), min(l, mmax) + 1)]
    where = {row: i for i, row in enumerate(kept)}
    forward = [where[row] for row in m_major_rows(lmax, mmax)]
    backward = [0] * len(forward)
    for i, j in enumerate(forward):
        backward[j] = i
    return forward, backward


def _order(frame: tuple, which: int, device) -> torch.Tensor:
    lmax = len(frame) - 1
    mmax = max((b.shape[1] - 1) // 2 for b in frame)
    return torch.tensor(_degree_major_to_m_major(lmax, mmax)[which], dtype=torch.long,
                        device=device)


def rotate_to_edge_frame(x: torch.Tensor, frame) -> torch.Tensor:
    """``[E, (lmax+1)^2, C]`` -> edge-frame features ``[E, K, C]`` (rows of :func:`m_major_rows`);
    ``frame`` from :func:`edge_frame` (or :func:`edge_frame_matrix`)."""
    if isinstance(frame, torch.Tensor):
        return frame @ x
    parts = x.split([b.shape[2] for b in frame], dim=1)  # split: one allocation in backward
    rotated = torch.cat([b @ p for b, p in zip(frame, parts)], dim=1)
    return rotated.index_select(1, _order(frame, 0, x.device))


def rotate_from_edge_frame(y: torch.Tensor, frame) -> torch.Tensor:
    """Inverse of :func:`rotate_to_edge_frame` on the kept rows: ``[E, K, C]`` -> ``[E, D, C]``."""
    if isinstance(frame, torch.Tensor):
        return frame.transpose(1, 2) @ y
    parts = y.index_select(1, _order(frame, 1, y.device)).split([b.shape[1] for b in frame], dim=1)
    return torch.cat([b.transpose(1, 2) @ p for b, p in zip(frame, parts)], dim=1)


def so2_linear(x_rot: torch.Tensor, weights: list[torch.Tensor], lmax: int, mmax: int,
               input_scale: list[torch.Tensor] | None = None) -> torch.Tensor:
    """Apply ``W_m`` to the edge-frame features ``[E, K, c_in]`` (m-major rows).

    ``weights[m]``: ``[n_m * c_in, n_m * c_out]`` shared by all edges, or
    ``[E, n_m * c_in, n_m * c_out]`` per edge, where ``n_m = lmax - m + 1`` and the flattened
    index is ``(l - m) * c + channel``. ``input_scale[m]`` (optional, ``[E, n_m * c_in]``)
    multiplies the inputs first: the same as per-edge weights ``diag(scale) W_m`` without
    materialising them. The same ``W_m`` acts on the ``+m`` and the ``-m`` rows. Returns
    ``[E, K, c_out]`` in the same row order.
    """
    e, _, c_in = x_rot.shape
    c_out = weights[0].shape[-1] // (lmax + 1)
    sizes = [(1 if m == 0 else 2) * (lmax - m + 1) for m in range(mmax + 1)]
    out = []
    # split, not slicing: the backward of one split is one concatenation, while each slice's
    # backward would allocate a zero tensor the size of x_rot
    for m, part in enumerate(x_rot.split(sizes, dim=1)):
        n, signs = lmax - m + 1, (1 if m == 0 else 2)
        xm = part.reshape(e, signs, n * c_in)
        if input_scale is not None:
            xm = xm * input_scale[m][:, None, :]
        out.append((xm @ weights[m]).reshape(e, signs * n, c_out))
    return torch.cat(out, dim=1)


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
