"""Segment sums and softmax over edges or atoms, torch-native with an optional torch-scatter path.

``scatter_sum`` uses ``torch.index_add`` by default. If ``torch_scatter`` is installed and
``set_backend("torch_scatter")`` was called (or ``ASE_SO3_SCATTER=torch_scatter`` is set), it uses
``torch_scatter.scatter_add`` instead; both give the same sums (tested where torch-scatter exists).
"""

from __future__ import annotations

import os

import torch

from ase_so3.errors import ConfigError
_BACKEND = os.environ.get("ASE_SO3_SCATTER", "torch")


def set_backend(name: str) -> None:
    """``"torch"`` (default) or ``"torch_scatter"`` (requires the optional torch-scatter package)."""
    global _BACKEND
    if name not in ("torch", "torch_scatter"):
        raise ConfigError(f"unknown scatter backend {name!r}; use 'torch' or 'torch_scatter'")
    if name == "torch_scatter":
        try:
            import torch_scatter  # noqa: F401
        except ImportError as exc:
            raise ImportError("the torch_scatter backend needs `pip install torch-scatter` "
                              "(or ase_so3[scatter])") from exc
    _BACKEND = name


def get_backend() -> str:
    return _BACKEND


def scatter_sum(src: torch.Tensor, index: torch.Tensor, dim_size: int) -> torch.Tensor:
    """``out[k] = sum of src[n] over n with index[n] == k`` along dim 0, ``out`` has ``dim_size`` rows."""
    if _BACKEND == "torch_scatter":
        import torch_scatter
        return torch_scatter.scatter_add(src, index, dim=0, dim_size=dim_size)
    out = torch.zeros((dim_size,) + tuple(src.shape[1:]), dtype=src.dtype, device=src.device)
    return out.index_add(0, index, src)


def segment_softmax(logits: torch.Tensor, index: torch.Tensor, dim_size: int,
                    weights: torch.Tensor | None = None) -> torch.Tensor:
    """Softmax of ``logits`` ``[E, H]`` over the edges sharing ``index`` (their centre atom).

    With ``weights`` ``[E]`` (e.g. a smooth cutoff envelope) it returns
    ``w_e exp(s_e) / sum_e' w_e' exp(s_e')``, so an edge whose weight goes to zero leaves the
    others unchanged in the limit: no jump when a neighbour crosses the cutoff.
    The per-segment maximum is subtracted for stability; the result does not depend on it, so
    its gradient is exactly zero and it is computed without autograd.
    """
    with torch.no_grad():
        seg_max = torch.full((dim_size,) + tuple(logits.shape[1:]), -torch.inf,
                             dtype=logits.dtype, device=logits.device)
        idx = index.reshape(-1, *([1] * (logits.dim() - 1))).expand_as(logits)
        seg_max = seg_max.scatter_reduce(0, idx, logits, "amax", include_self=True)
        seg_max = torch.nan_to_num(seg_max, neginf=0.0)
    ex = torch.exp(logits - seg_max[index])
    if weights is not None:
        ex = ex * weights.reshape(-1, *([1] * (logits.dim() - 1)))
    den = scatter_sum(ex, index, dim_size)
    return ex / den[index].clamp_min(torch.finfo(logits.dtype).tiny)
