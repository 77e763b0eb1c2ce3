"""Large temporary tensors without a page fault every 4 KiB.

glibc's malloc serves every request above its mmap threshold (at most 32 MiB) with a fresh
``mmap`` and unmaps it on ``free``. A model pass over tens of thousands of edges allocates dozens
of temporary tensors of 10-300 MB, so each is page-faulted in again, one 4 KiB page at a time.
Measured on the 2-core CI machine (PyTorch 2.13 CPU, one thread), cloning an 83 MB tensor:
52 ms by default, 13 ms with 2 MiB transparent huge pages, 10 ms with freed memory kept (9 ms to
copy into memory that is already mapped). One layer at 100k edges, forward and backward
(``ase-so3 benchmark scaling``, docs/benchmarks.md), lmax 4 / 6: eSCN 3.0 / 7.8 s by default and
2.0 / 4.1 s with huge pages; TFN 26.5 / 113 s and 16.5 / 58 s.

Two remedies, both for the whole process:

* Huge pages: PyTorch's own ``THP_MEM_ALLOC_ENABLE=1`` backs CPU tensors of 2 MiB and more with
  transparent huge pages (``madvise``). Memory is still returned on free; the peak resident size
  can grow by partly used 2 MiB pages (eSCN on a 1,344-atom box: 651 -> 850 MB above the
  process's footprint; one layer at 100k edges: unchanged). PyTorch reads the variable once, at
  its first allocation, so it must be in the environment before PyTorch loads: the ``ase-so3``
  command sets it for its own process before importing anything (``ase_so3_command.py``); in
  Python, set it before starting the interpreter (``THP_MEM_ALLOC_ENABLE=1 python ...``):
  ``import ase_so3`` leaves the environment alone. It works only where the kernel allows THP
  (``/sys/kernel/mm/transparent_hugepage/enabled`` not ``never``).
* :func:`keep_freed_memory` (opt-in, ``ASE_SO3_MALLOC=keep``; the ``ase-so3`` commands and
  benchmark workers apply it) makes malloc serve blocks below 512 MiB from its heap and never trim
  the heap (``mallopt(M_MMAP_THRESHOLD, 512 MiB)``, ``mallopt(M_TRIM_THRESHOLD, -1)``): freed
  memory is reused without a page fault (once the heap has settled: 2 MiB-aligned huge-page blocks
  can grow it a few times first, see tests/contract/test_allocator.py), while larger blocks still come from
  ``mmap`` and go back on free, which bounds the fragmentation of the heap. The process keeps the
  heap of its largest step. Measured 2026-11-24 (commit 8538e7a; one layer at 100k edges, forward + backward,
  one thread): TFN lmax 6 39-42 s at a 21.2-22.0 GB peak (a 256 MiB threshold: 50 s at 20.5 GB;
  huge pages alone: 58 s at 19.8 GB); eSCN lmax 6 3.2-3.3 s (256 MiB: 3.6 s; huge pages alone:
  3.9 s). Keeping *every* block on the heap (``M_MMAP_MAX = 0``, this mode's first version) ran that
  TFN layer out of 24 GB.

``ASE_SO3_MALLOC=system`` leaves the allocator alone. Results are bit-identical either way
(tested); the benchmarks record which setting they ran with.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

_M_TRIM_THRESHOLD = -1  # from glibc's malloc.h
_M_MMAP_THRESHOLD = -3
_NEVER_TRIM = -1  # M_TRIM_THRESHOLD -1: never give the heap's free top back (mallopt(3))
KEEP_BELOW = 512 * 2 ** 20  # blocks this large and up still come from mmap and go back on free

_state = {"kept": False}


def _mode() -> str:
    return os.environ.get("ASE_SO3_MALLOC", "").strip().lower()


def huge_pages() -> bool:
    """Whether PyTorch was asked for huge pages (``THP_MEM_ALLOC_ENABLE=1`` in the
    environment; the ``ase-so3`` command sets it, see the module docstring)."""
    return os.environ.get("THP_MEM_ALLOC_ENABLE") == "1"


def keep_freed_memory() -> bool:
    """Make glibc malloc keep freed memory for reuse (see the module docstring). Returns whether
    the setting is in effect; False with ``ASE_SO3_MALLOC=system`` or without glibc."""
    if _mode() == "system":
        return False
    if _state["kept"]:
        return True
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").mallopt
    except (OSError, AttributeError):  # not glibc (musl has no mallopt)
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    _state["kept"] = bool(mallopt(_M_MMAP_THRESHOLD, KEEP_BELOW)) and bool(
        mallopt(_M_TRIM_THRESHOLD, _NEVER_TRIM))
    return _state["kept"]


def configure_from_environment() -> str:
    """What the ``ase-so3`` commands and benchmark workers call: with ``ASE_SO3_MALLOC=keep``,
    :func:`keep_freed_memory`. Returns a description of the setting in effect (huge pages as the
    environment asked for them), for logs and benchmark records."""
    if _mode() == "system":
        return "system default"
    kept = _mode() == "keep" and keep_freed_memory()
    huge = huge_pages()
    return " + ".join([s for s, on in (("huge pages", huge), ("freed memory kept", kept)) if on]
                      ) or "system default"
