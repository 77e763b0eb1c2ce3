"""Real spherical harmonics of any degree, in one convention for the whole package.

e3nn's real basis and ``component`` normalisation (``|Y^l(r)|^2 = 2l + 1``), with **y** as the
polar axis (see :mod:`ase_so3.keys`). Built by the exact recursion

    Y^l(r) = c_l * C(l-1, 1 -> l)^T (Y^{l-1}(r) (x) Y^1(r)),   Y^1(r) = sqrt(3) r / |r|,

with the Clebsch–Gordan blocks of :mod:`ase_so3.so3.clebsch_gordan` and ``c_l`` fixed so that
``Y^l(+y)`` is ``+sqrt(2l+1)`` at ``m = 0``. This equals e3nn's ``spherical_harmonics`` (tested up
to e3nn's own limit, degree 11) and has no degree limit. Polynomial in the unit vector: smooth
everywhere except at the zero vector, which callers must exclude.
"""

from __future__ import annotations

import torch
from torch import nn

from ase_so3.keys import num_lm
from ase_so3.so3.clebsch_gordan import clebsch_gordan


def _recursion_tensors(lmax: int) -> list[torch.Tensor]:
    out = []
    for l in range(2, lmax + 1):
        c = clebsch_gordan(l - 1, 1, l)
        scale = (2 * l + 1) ** 0.5 / ((3 * (2 * l - 1)) ** 0.5 * c[l - 1, 1, l])
        out.append(c * scale)  # [2l-1, 3, 2l+1]
    return out


class SphericalHarmonics(nn.Module):
    """``[..., 3]`` vectors -> ``[..., (lmax+1)^2]`` real spherical harmonics of their directions."""

    def __init__(self, lmax: int):
        super().__init__()
        if lmax < 0:
            raise ValueError("lmax must be >= 0")
        self.lmax = lmax
        for l, c in enumerate(_recursion_tensors(lmax), start=2):
            self.register_buffer(f"cg_{l}", c, persistent=False)

    def forward(self, vectors: torch.Tensor) -> torch.Tensor:
        shape = vectors.shape[:-1]
        v = vectors.reshape(-1, 3)
        unit = v / torch.linalg.vector_norm(v, dim=-1, keepdim=True)  # [n, 3]
        parts = [torch.ones_like(unit[:, :1])]
        if self.lmax >= 1:
            y1 = unit * 3 ** 0.5
            parts.append(y1)
            prev = y1
            for l in range(2, self.lmax + 1):
                prev = torch.einsum("na,nb,abc->nc", prev, y1, getattr(self, f"cg_{l}"))
                parts.append(prev)
        return torch.cat(parts, dim=-1).reshape(*shape, num_lm(self.lmax))


_CACHE: dict = {}


def spherical_harmonics(lmax: int, vectors: torch.Tensor) -> torch.Tensor:
    """Functional form of :class:`SphericalHarmonics` (modules cache per lmax, dtype, device)."""
    key = (lmax, vectors.dtype, vectors.device)
    if key not in _CACHE:
        _CACHE[key] = SphericalHarmonics(lmax).to(dtype=vectors.dtype, device=vectors.device)
    return _CACHE[key](vectors)


def spherical_harmonics_at_pole(lmax: int, dtype=torch.float64, device=None) -> torch.Tensor:
    """``Y(+polar axis)``: non-zero only at m = 0, where it equals ``sqrt(2l+1)``."""
    from ase_so3.keys import POLAR_AXIS
    axis = torch.tensor([POLAR_AXIS], dtype=dtype, device=device)
    return spherical_harmonics(lmax, axis)[0]
