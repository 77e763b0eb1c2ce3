"""Real Clebsch–Gordan coefficients in e3nn's real basis, for any degrees.

``clebsch_gordan(l1, l2, l3)[a, b, c]`` couples component ``a`` of degree ``l1`` and ``b`` of
degree ``l2`` into component ``c`` of degree ``l3``::

    out[c] = sum_ab C[a, b, c] x[a] y[b]      is equivariant:  out(D1 x, D2 y) = D3 out(x, y)

Normalisation: for fixed ``(l1, l2)`` the blocks over all ``l3`` form an orthogonal change of
basis, so ``sum_ab C[a, b, c] C[a, b, c'] = delta_cc'``. This is ``sqrt(2 l3 + 1)`` times e3nn's
``wigner_3j`` (the same real basis; tested against e3nn where e3nn provides it, which e3nn 0.4.4
does only up to degree 11). Computed exactly from the Racah formula in rational arithmetic, then
changed to the real basis; cached as float64 on the CPU.
"""

from __future__ import annotations

import functools
import math
from fractions import Fraction

import torch


def _su2_cg(j1: int, m1: int, j2: int, m2: int, j3: int, m3: int) -> float:
    """Complex-basis Clebsch–Gordan <j1 m1 j2 m2 | j3 m3> (Condon–Shortley phase), Racah formula."""
    if m3 != m1 + m2 or not abs(j1 - j2) <= j3 <= j1 + j2:
        return 0.0
    if abs(m1) > j1 or abs(m2) > j2 or abs(m3) > j3:
        return 0.0
    f = math.factorial
    pre = Fraction((2 * j3 + 1) * f(j3 + j1 - j2) * f(j3 - j1 + j2) * f(j1 + j2 - j3),
                   f(j1 + j2 + j3 + 1))
    pre *= (f(j3 + m3) * f(j3 - m3) * f(j1 - m1) * f(j1 + m1) * f(j2 - m2) * f(j2 + m2))
    total = Fraction(0)
    for k in range(0, j1 + j2 - j3 + 1):
        args = (k, j1 + j2 - j3 - k, j1 - m1 - k, j2 + m2 - k, j3 - j2 + m1 + k, j3 - j1 - m2 + k)
        if min(args) < 0:
            continue
        den = 1
        for a in args:
            den *= f(a)
        total += Fraction((-1) ** k, den)
    sign = 1.0 if total >= 0 else -1.0
    return sign * math.sqrt(pre * total * total)


@functools.lru_cache(maxsize=None)
def real_to_complex(l: int) -> torch.Tensor:
    """Unitary change of basis between complex and real degree-``l`` harmonics (e3nn's real basis).

    Rows index the complex (``m``) components, columns the real ones; the phase ``(-i)^l`` makes
    the real Clebsch–Gordan coefficients real.
    """
    q = torch.zeros((2 * l + 1, 2 * l + 1), dtype=torch.complex128)
    s = 2 ** -0.5
    for m in range(-l, 0):
        q[l + m, l + abs(m)] = s
        q[l + m, l - abs(m)] = -1j * s
    q[l, l] = 1.0
    for m in range(1, l + 1):
        q[l + m, l + abs(m)] = (-1) ** m * s
        q[l + m, l - abs(m)] = 1j * (-1) ** m * s
    return (-1j) ** l * q


@functools.lru_cache(maxsize=None)
def _clebsch_gordan64(l1: int, l2: int, l3: int) -> torch.Tensor:
    c = torch.zeros((2 * l1 + 1, 2 * l2 + 1, 2 * l3 + 1), dtype=torch.complex128)
    for m1 in range(-l1, l1 + 1):
        for m2 in range(-l2, l2 + 1):
            m3 = m1 + m2
            if abs(m3) <= l3:
                c[l1 + m1, l2 + m2, l3 + m3] = _su2_cg(l1, m1, l2, m2, l3, m3)
    q1, q2, q3 = real_to_complex(l1), real_to_complex(l2), real_to_complex(l3)
    # the first index of Q is the complex one: real[a,b,c] = sum Q1[i,a] Q2[j,b] conj(Q3[k,c]) c[i,j,k]
    real = torch.einsum("ia,jb,kc,ijk->abc", q1, q2, q3.conj(), c)
    if real.imag.abs().max() > 1e-10:  # pragma: no cover - a basis error, never expected
        raise RuntimeError(f"Clebsch-Gordan ({l1},{l2},{l3}) is not real in the real basis")
    out = real.real.contiguous()
    out.requires_grad_(False)
    return out


def clebsch_gordan(l1: int, l2: int, l3: int, dtype=torch.float64, device=None) -> torch.Tensor:
    """``[2l1+1, 2l2+1, 2l3+1]`` real CG coefficients (zero tensor if the triangle rule fails)."""
    if min(l1, l2, l3) < 0:
        raise ValueError("degrees must be non-negative")
    if not abs(l1 - l2) <= l3 <= l1 + l2:
        return torch.zeros((2 * l1 + 1, 2 * l2 + 1, 2 * l3 + 1), dtype=dtype, device=device)
    return _clebsch_gordan64(l1, l2, l3).to(dtype=dtype, device=device)


def tensor_product_paths(lmax_in: int, lmax_filter: int, lmax_out: int,
                         parity: bool = True) -> list[tuple[int, int, int]]:
    """All ``(l_in, l_filter, l_out)`` allowed by the triangle rule.

    With ``parity=True`` (the package default, see :mod:`ase_so3.keys`) only paths with
    ``l_in + l_filter + l_out`` even are kept, which keeps natural-parity features and makes
    the models reflection invariant.
    """
    paths = []
    for li in range(lmax_in + 1):
        for lo in range(lmax_out + 1):
            for lf in range(abs(li - lo), min(li + lo, lmax_filter) + 1):
                if parity and (li + lf + lo) % 2:
                    continue
                paths.append((li, lf, lo))
    return paths
