"""Wigner-D matrices of rotation matrices.

``D^l(R)`` is built from the rotation matrix itself by the exact recursion

    D^0 = 1,   D^1(R) = R,   D^l = C^T (D^{l-1} (x) R) C,   C = CG(l-1, 1 -> l),

so it is a polynomial in the entries of ``R``: differentiable everywhere, with no Euler angles and
hence no gimbal-lock poles. In e3nn's real basis ``D^1(R) = R`` because degree-1 components are
``(x, y, z)`` (see :mod:`ase_so3.keys`). The defining property ``Y(R r) = D(R) Y(r)`` is tested.

The edge frame built on these (a rotation onto the polar axis per edge, and its blocks for
eSCN) is in :mod:`ase_so3.so3.edge_frame`.
"""

from __future__ import annotations

import torch
from torch import nn

from ase_so3.keys import num_lm
from ase_so3.so3.clebsch_gordan import clebsch_gordan


class WignerD(nn.Module):
    """Rotation matrices ``[B, 3, 3]`` -> Wigner-D blocks for degrees ``0..lmax``."""

    def __init__(self, lmax: int):
        super().__init__()
        self.lmax = lmax
        for l in range(2, lmax + 1):
            c = clebsch_gordan(l - 1, 1, l)  # [2l-1, 3, 2l+1], indices (j, n, a)
            # c as [n, (j, a)] for the right factor, and as [(i, k), a] for the left one
            self.register_buffer(f"cg_right_{l}", c.permute(1, 0, 2).reshape(3, -1).contiguous(),
                                 persistent=False)
            self.register_buffer(f"cg_left_{l}", c.reshape(-1, 2 * l + 1), persistent=False)

    def blocks(self, rot: torch.Tensor) -> list[torch.Tensor]:
        """``[D^0, D^1, ..., D^lmax]``, each ``[B, 2l+1, 2l+1]``.

        ``D^l[a, a'] = sum c[i,k,a] D^{l-1}[i,j] R[k,n] c[j,n,a']``, evaluated as
        ``W = R c`` (one matrix product over all edges), ``V = D^{l-1} W`` (batched) and
        ``C^T V`` (one matrix product): every step is a large product rather than many 3x3 ones.
        """
        b = rot.shape[0]
        out = [torch.ones((b, 1, 1), dtype=rot.dtype, device=rot.device)]
        if self.lmax >= 1:
            out.append(rot)
        prev = rot
        for l in range(2, self.lmax + 1):
            p, q = 2 * l - 1, 2 * l + 1
            w = (rot.reshape(b * 3, 3) @ getattr(self, f"cg_right_{l}")).view(b, 3, p, q)
            w = w.transpose(1, 2).reshape(b, p, 3 * q)  # [B, j, (k, a')]
            v = (prev @ w).view(b, 3 * p, q)  # [B, (i, k), a']
            d_t = v.transpose(1, 2).reshape(b * q, 3 * p) @ getattr(self, f"cg_left_{l}")
            prev = d_t.view(b, q, q).transpose(1, 2)
            out.append(prev)
        return out

    def forward(self, rot: torch.Tensor) -> torch.Tensor:
        """Block-diagonal ``[B, (lmax+1)^2, (lmax+1)^2]``."""
        return block_diagonal(self.blocks(rot))


def block_diagonal(blocks: list[torch.Tensor]) -> torch.Tensor:
    """``[B, n_l, n_l]`` blocks -> one ``[B, sum n_l, sum n_l]`` block-diagonal matrix."""
    b = blocks[0].shape[0]
    size = sum(x.shape[-1] for x in blocks)
    out = blocks[0].new_zeros((b, size, size))
    start = 0
    for x in blocks:
        n = x.shape[-1]
        out[:, start:start + n, start:start + n] = x
        start += n
    return out


def random_rotation(n: int | None = None, generator=None, dtype=torch.float64,
                    device=None) -> torch.Tensor:
    """Uniformly random rotation matrices (QR of Gaussian matrices), ``[3, 3]`` or ``[n, 3, 3]``."""
    shape = (1 if n is None else n, 3, 3)
    g = torch.randn(shape, generator=generator, dtype=torch.float64)
    q, r = torch.linalg.qr(g)
    q = q * torch.sign(torch.diagonal(r, dim1=-2, dim2=-1))[:, None, :]
    q = q * torch.sign(torch.linalg.det(q))[:, None, None]
    q = q.to(dtype=dtype, device=device)
    return q[0] if n is None else q


__all__ = ["WignerD", "block_diagonal", "random_rotation", "num_lm"]
