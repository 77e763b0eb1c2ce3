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

import torch

from ase_so3.so3.clebsch_gordan import clebsch_gordan


def m_major_index(lmax: int, mmax: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """For each ``m = 0..mmax``: (indices of ``(l, +m)``, indices of ``(l, -m)``) on the (l, m)
    axis for ``l = m..lmax``. For ``m = 0`` both are the ``(l, 0)`` indices."""
    out = []
    for m in range(mmax + 1):
        plus = torch.tensor([l * l + l + m for l in range(m, lmax + 1)], dtype=torch.long)
        minus = torch.tensor([l * l + l - m for l in range(m, lmax + 1)], dtype=torch.long)
        out.append((plus, minus))
    return out


def rotate_to_edge_frame(x: torch.Tensor, blocks: list[torch.Tensor], mmax: int) -> list[torch.Tensor]:
    """Per degree ``l``: ``D^l x_l`` keeping only rows ``|m| <= mmax``: ``[E, rows_l, C]``."""
    out = []
    for l, d in enumerate(blocks):
        k = min(l, mmax)
        out.append(d[:, l - k:l + k + 1] @ x[:, l * l:(l + 1) ** 2])
    return out


def rotate_from_edge_frame(y: list[torch.Tensor], blocks: list[torch.Tensor], mmax: int) -> torch.Tensor:
    """Inverse of :func:`rotate_to_edge_frame`: ``D^{l T}`` on the kept rows -> ``[E, D, C]``."""
    out = []
    for l, (d, yl) in enumerate(zip(blocks, y)):
        k = min(l, mmax)
        out.append(d[:, l - k:l + k + 1].transpose(1, 2) @ yl)
    return torch.cat(out, dim=1)


def so2_linear(x_rot: list[torch.Tensor], weights: list[torch.Tensor], lmax: int,
               mmax: int, input_scale: list[torch.Tensor] | None = None) -> list[torch.Tensor]:
    """Apply ``W_m`` to the edge-frame features.

    ``x_rot``: output of :func:`rotate_to_edge_frame` (``c_in`` channels). ``weights[m]``:
    ``[n_m * c_in, n_m * c_out]`` shared by all edges, or ``[E, n_m * c_in, n_m * c_out]`` per
    edge, where ``n_m = lmax - m + 1`` and the flattened index is ``(l - m) * c + channel``.
    ``input_scale[m]`` (optional, ``[E, n_m * c_in]``) multiplies the inputs first: the same as
    per-edge weights ``diag(scale) W_m`` without materialising them.
    Returns the edge-frame outputs in the same per-degree layout.
    """
    e, c_in = x_rot[0].shape[0], x_rot[0].shape[-1]
    c_out = weights[0].shape[-1] // (lmax + 1)
    out_parts: list[list[torch.Tensor]] = [[None] * (2 * min(l, mmax) + 1) for l in range(lmax + 1)]
    for m in range(mmax + 1):
        n = lmax - m + 1
        rows = []  # per sign: [E, n * c_in]
        for sign in ((1,) if m == 0 else (1, -1)):
            rows.append(torch.stack([x_rot[l][:, min(l, mmax) + sign * m] for l in range(m, lmax + 1)],
                                    dim=1).reshape(e, n * c_in))
        xm = torch.stack(rows, dim=1)  # [E, 1 or 2, n * c_in]
        if input_scale is not None:
            xm = xm * input_scale[m][:, None, :]
        ym = (xm @ weights[m]).reshape(e, len(rows), n, c_out)
        for s, sign in enumerate((1,) if m == 0 else (1, -1)):
            for k, l in enumerate(range(m, lmax + 1)):
                out_parts[l][min(l, mmax) + sign * m] = ym[:, s, k]
    return [torch.stack(parts, dim=1) for parts in out_parts]


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
