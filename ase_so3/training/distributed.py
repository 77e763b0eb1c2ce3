"""Data-parallel training under ``torchrun``: process group, a shared clock, and DDP's one
harmless stride warning."""

from __future__ import annotations

import contextlib
import os
import warnings

import torch


def init(device: str) -> tuple[int, int]:
    """(rank, world size); the process group is started under ``torchrun`` (gloo on CPU, nccl on
    GPU)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1
    import torch.distributed as dist
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.startswith("cuda") else "gloo")
    return dist.get_rank(), dist.get_world_size()


def shared_clock(elapsed: float, world_size: int, device) -> float:
    """The slowest rank's training time, so that every rank stops at the same epoch and
    follows the same time-based learning rate."""
    if world_size == 1:
        return elapsed
    t = torch.tensor([elapsed], dtype=torch.float64, device=device)
    torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
    return float(t.item())


# DDP compares each gradient's strides with those of its bucket view. The readout's last weight,
# [1, C], gets its gradient with strides (1, 1) where the parameter has (C, 1): the same memory
# layout (a size-1 dimension's stride is arbitrary). DDP then copies those C numbers and warns;
# only that case is silenced, any other mismatch still warns.
_SAME_LAYOUT = (r"Grad strides do not match bucket view strides[\s\S]*"
                r"grad\.sizes\(\) = \[1, \d+\], strides\(\) = \[1, 1\]\s*"
                r"bucket_view\.sizes\(\) = \[1, \d+\], strides\(\) = \[\d+, 1\]")


@contextlib.contextmanager
def same_layout_strides_quiet():
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=_SAME_LAYOUT, category=UserWarning)
        yield
