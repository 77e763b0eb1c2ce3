"""Fused CPU kernels for the eSCN edge frame (optional backend, C++ in ``so3/kernels/``).

The torch-native path builds the Wigner-D blocks of each edge frame with a few passes over
``[E, T]`` tensors (:meth:`~ase_so3.so3.edge_frame.EdgeWignerD.assemble`), applies one batched
product per degree and reorders rows into m-blocks (:func:`ase_so3.so3.so2.rotate_to_edge_frame`).
On CPU that is bound by memory traffic, not arithmetic. The kernels do each edge's work in cache:

- ``wigner_forward``/``wigner_backward``: the same Wigner-D formula, per edge (the product with the
  fixed fold table as one GEMM per chunk of 256 edges), flattened ``[E, T]`` (degrees 1..lmax);
- ``rotate_in``: ``out[r] = D^l[a_r] . x^l`` (``[E, (lmax+1)^2, C]`` -> m-blocks
  ``[E, rows_m, C]``, separate tensors as the SO(2) maps take them, rows in m-major order),
- ``rotate_out``: ``out^l = sum_r D^l[a_r]^T y[r]`` (the transpose),
- ``rotation_grad_d``: ``G^l[a_r, b] = g[r] . x^l[b]`` (the ``D``-gradient of either rotation).

The three rotation kernels are bilinear and each one's gradients are the others, so each autograd
function's backward is made of the other functions: gradients of any order (forces, then a force
loss's parameter gradients) stay exact. The Wigner backward is a kernel for first derivatives and
the torch-native formula under ``create_graph``. Results equal the torch-native path to round-off
and do not depend on the thread count (tested).

Selection: ``set_backend("cpp")`` or ``ASE_SO3_KERNELS=cpp``. The first use compiles the sources
with PyTorch's extension builder (g++ and ninja, about 40 s, cached under ``TORCH_EXTENSIONS_DIR``
per source and CPU); CUDA tensors and ``torch.compile`` always take the torch-native path.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import os
import platform
from pathlib import Path

import torch

from ase_so3.errors import ConfigError, UnavailableError
from ase_so3.keys import num_lm

_BACKENDS = ("torch", "cpp")
_BACKEND = os.environ.get("ASE_SO3_KERNELS", "torch")
_MODULE = None
if _BACKEND not in _BACKENDS:
    raise ConfigError(f"ASE_SO3_KERNELS={_BACKEND!r} is not a kernel backend; use 'torch' "
                      "(the default) or 'cpp'")


def set_backend(name: str) -> None:
    """``"torch"`` (default: batched products per degree) or ``"cpp"`` (the fused CPU kernels,
    compiled now if they were not yet)."""
    global _BACKEND
    if name not in _BACKENDS:
        raise ConfigError(f"unknown kernel backend {name!r}; use 'torch' or 'cpp'")
    if name == "cpp":
        build()
    _BACKEND = name


def build() -> None:
    """Compile the kernels now if they were not yet (UnavailableError if they cannot be
    built)."""
    _load()


def get_backend() -> str:
    return _BACKEND


def resolve(choice: str, applies: bool, log=print) -> str:
    """The backend for a ``kernels`` option (``auto``, ``cpp`` or ``torch``): ``auto`` is
    ``cpp`` where the kernels ``apply`` (a model with edge frames on CPU) and build, else the
    current backend."""
    if choice != "auto":
        return choice
    if not applies:
        return _BACKEND
    try:
        build()  # on first use on this machine (g++, ninja)
    except UnavailableError as exc:
        log(f"without the fused CPU kernels (kernels: torch): {exc}")
        return "torch"
    return "cpp"


@contextlib.contextmanager
def using(name: str):
    """The backend ``name`` inside the ``with`` block, the one before it afterwards."""
    before = _BACKEND
    set_backend(name)
    try:
        yield
    finally:
        set_backend(before)


def use_kernels(x: torch.Tensor) -> bool:
    """Whether the fused kernels apply to features ``x``."""
    return (_BACKEND == "cpp" and x.device.type == "cpu" and not torch.compiler.is_compiling()
            and x.dtype in (torch.float32, torch.float64))


def _load():
    """Compile (once per machine and source) and import the C++ kernels."""
    global _MODULE
    if _MODULE is None:
        from torch.utils.cpp_extension import load
        _ninja_on_path()
        folder = Path(__file__).with_name("kernels")
        sources = sorted(folder.glob("*.cpp"))
        # -march=native: the build is cached per source and CPU, never moved between machines
        text = b"".join(f.read_bytes() for f in sorted(folder.glob("*.[ch]*")))
        tag = hashlib.sha256(text + (platform.machine() + _cpu_flags()).encode()).hexdigest()[:12]
        try:
            _MODULE = load(name=f"ase_so3_cpu_kernels_{tag}", sources=[str(f) for f in sources],
                           extra_cflags=["-O3", "-march=native", "-ffp-contract=fast"],
                           verbose=False)
        except Exception as exc:  # no compiler, no ninja, a failed build
            raise UnavailableError(
                "could not build the C++ kernels of ase_so3.so3.cpu_kernels (needs g++ and ninja; "
                f"`pip install ninja`); use the default backend ASE_SO3_KERNELS=torch: {exc}"
            ) from exc
    return _MODULE


def _ninja_on_path() -> None:
    """PyTorch's builder runs ``ninja`` from PATH; the PyPI ``ninja`` package (extra ``kernels``)
    may sit in an environment whose scripts folder is not on it."""
    import shutil
    if shutil.which("ninja") is None:
        try:
            import ninja
        except ImportError:
            return
        os.environ["PATH"] = ninja.BIN_DIR + os.pathsep + os.environ.get("PATH", "")


def _cpu_flags() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next((line for line in f if line.startswith("flags")), "")
    except OSError:
        return ""


class RotationLayout:
    """Index tables for one ``(lmax, mmax)``: for each edge-frame row (m-major order,
    :func:`ase_so3.so3.so2.m_major_rows`) its degree, its row of ``D^l``, its m-block and its row
    in that block; and where each ``D^l`` starts in the flattened ``[E, T]`` blocks."""

    def __init__(self, lmax: int, mmax: int):
        from ase_so3.so3.so2 import block_sizes, m_major_rows
        self.lmax, self.mmax = lmax, mmax
        owner = [k for k, n in enumerate(block_sizes(lmax, mmax)) for _ in range(n)]
        rows, seen = [], [0] * (mmax + 1)
        for lm, k in zip(m_major_rows(lmax, mmax), owner):
            l = math.isqrt(lm)
            rows.append((l, lm - l * l, k, seen[k]))  # row a = l + m of D^l
            seen[k] += 1
        self.rows = torch.tensor(rows, dtype=torch.long)
        starts = [0, 0]
        for l in range(1, lmax):
            starts.append(starts[-1] + (2 * l + 1) ** 2)
        self.offsets = torch.tensor(starts[:lmax + 1], dtype=torch.long)
        self.total = sum((2 * l + 1) ** 2 for l in range(1, lmax + 1))
        self.width = num_lm(lmax)


_LAYOUTS: dict = {}


def layout(lmax: int, mmax: int) -> RotationLayout:
    if (lmax, mmax) not in _LAYOUTS:
        _LAYOUTS[lmax, mmax] = RotationLayout(lmax, mmax)
    return _LAYOUTS[lmax, mmax]


# unit0: degree 0 passes through (D^0 = 1); False where d is a gradient, which has no D^0 entry.
# Edge-frame features travel as m-blocks [E, rows_m, C], one tensor each.

class _RotateIn(torch.autograd.Function):
    """``y = D x`` into the edge-frame m-blocks."""

    @staticmethod
    def forward(ctx, d, x, lay, unit0):
        ctx.save_for_backward(d, x)
        ctx.lay, ctx.unit0 = lay, unit0
        return tuple(_load().rotate_in(d, x, lay.rows, lay.offsets, lay.lmax, unit0))

    @staticmethod
    def backward(ctx, *g):
        d, x = ctx.saved_tensors
        gd = _GradD.apply(x, ctx.lay, *g) if ctx.needs_input_grad[0] else None
        gx = _RotateOut.apply(d, ctx.lay, ctx.unit0, *g) if ctx.needs_input_grad[1] else None
        return gd, gx, None, None


class _RotateOut(torch.autograd.Function):
    """``x = D^T y`` from the m-blocks ``y``: the transpose of :class:`_RotateIn`."""

    @staticmethod
    def forward(ctx, d, lay, unit0, *y):
        ctx.save_for_backward(d, *y)
        ctx.lay, ctx.unit0 = lay, unit0
        return _load().rotate_out(d, list(y), lay.rows, lay.offsets, lay.lmax, unit0)

    @staticmethod
    def backward(ctx, g):
        d, *y = ctx.saved_tensors
        gd = _GradD.apply(g, ctx.lay, *y) if ctx.needs_input_grad[0] else None
        gy = (_RotateIn.apply(d, g, ctx.lay, ctx.unit0) if any(ctx.needs_input_grad[3:])
              else (None,) * len(y))
        return (gd, None, None, *gy)


class _GradD(torch.autograd.Function):
    """``G[a_r, b] = g[r] . x^l[b]`` over channels (``g`` as m-blocks): the ``D``-gradient of
    both rotations."""

    @staticmethod
    def forward(ctx, x, lay, *g):
        ctx.save_for_backward(x, *g)
        ctx.lay = lay
        return _load().rotation_grad_d(x, list(g), lay.rows, lay.offsets, lay.lmax, lay.total)

    @staticmethod
    def backward(ctx, gg):
        x, *g = ctx.saved_tensors
        grad_x = _RotateOut.apply(gg, ctx.lay, False, *g) if ctx.needs_input_grad[0] else None
        grad_g = (_RotateIn.apply(gg, x, ctx.lay, False) if any(ctx.needs_input_grad[2:])
                  else (None,) * len(g))
        return (grad_x, None, *grad_g)


def rotate_in(d: torch.Tensor, x: torch.Tensor, lmax: int, mmax: int) -> list[torch.Tensor]:
    """Flattened Wigner blocks ``d`` ``[E, T]``, features ``[E, (lmax+1)^2, C]`` -> edge-frame
    m-blocks ``[E, rows_m, C]`` (:func:`ase_so3.so3.so2.block_sizes`)."""
    return list(_RotateIn.apply(d, x, layout(lmax, mmax), True))


def rotate_out(d: torch.Tensor, y: list[torch.Tensor], lmax: int, mmax: int) -> torch.Tensor:
    """Edge-frame m-blocks -> features ``[E, (lmax+1)^2, C]``."""
    return _RotateOut.apply(d, layout(lmax, mmax), True, *y)


class _WignerFlat(torch.autograd.Function):
    """:meth:`ase_so3.so3.edge_frame.EdgeWignerD.flat` from its multiples, fused per edge.
    The first derivative is a kernel too; under ``create_graph`` (a force loss's parameter
    gradients) the backward differentiates the torch-native formula instead, so every order stays
    exact."""

    @staticmethod
    def forward(ctx, cs_b, cos_a, sin_a, tilted, module):
        ctx.save_for_backward(cs_b, cos_a, sin_a, tilted)
        ctx.module = module
        return _load().wigner_forward(cs_b, cos_a, sin_a, tilted, *_wigner_tables(module))

    @staticmethod
    def backward(ctx, gd):
        cs_b, cos_a, sin_a, tilted = ctx.saved_tensors
        if torch.is_grad_enabled():  # a graph of the gradient is wanted
            d = ctx.module.assemble(cs_b, cos_a, sin_a, tilted)
            grads = torch.autograd.grad(d, (cs_b, cos_a, sin_a), gd, create_graph=True,
                                        allow_unused=True)
        else:
            grads = _load().wigner_backward(cs_b, cos_a, sin_a, tilted,
                                            *_wigner_tables(ctx.module), gd)
        return (*grads, None, None)


def _wigner_tables(module) -> tuple:
    lay = layout(module.lmax, module.lmax)
    return (module.fold, module.col_m, module.col_sign, module.chart_flat, module.chart_flat_t,
            lay.offsets, module.lmax)


def wigner_flat(module, cs_b, cos_a, sin_a, tilted) -> torch.Tensor:
    """The fused form of ``module.assemble(cs_b, cos_a, sin_a, tilted)``
    (``module``: an :class:`~ase_so3.so3.edge_frame.EdgeWignerD`)."""
    return _WignerFlat.apply(cs_b, cos_a, sin_a, tilted, module)
