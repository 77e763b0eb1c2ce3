"""Whether code is being traced, where data-dependent shapes and host synchronisation are not
allowed: under ``torch.compile`` or while a CUDA graph is captured (:mod:`ase_so3.cuda_graphs`).
Hot paths that would otherwise take a shortcut with such an operation (``nonzero``, a check read
back to the host) take their static form then."""

from __future__ import annotations

import torch


def static_shapes_required(t: torch.Tensor) -> bool:
    """True under ``torch.compile`` or during CUDA-graph capture on ``t``'s device."""
    if torch.compiler.is_compiling():
        return True
    return t.is_cuda and torch.cuda.is_current_stream_capturing()
