"""Neighbour lists: vesin (exact, O(N)) for every boundary condition ASE supports.

vesin's full neighbour lists match ``ase.neighborlist.neighbor_list`` exactly (pairs and integer
cell shifts; tested), for molecules, fully and partly periodic cells, skewed cells and cells
smaller than the cutoff (several images of the same neighbour, and images of an atom itself).
"""

from __future__ import annotations

import numpy as np
from vesin import NeighborList


def neighbor_list(positions: np.ndarray, cell: np.ndarray, pbc: np.ndarray, cutoff: float):
    """Full list of pairs closer than ``cutoff``.

    Returns ``(centre, neighbour, unit_shifts, distances)`` with
    ``positions[neighbour] - positions[centre] + unit_shifts @ cell`` the edge vector (Å) of
    length ``distances`` (see :mod:`ase_so3.keys` for the edge convention).
    """
    positions = np.ascontiguousarray(positions, dtype=np.float64)
    cell = np.ascontiguousarray(cell, dtype=np.float64)
    pbc = np.asarray(pbc, dtype=bool)
    if len(positions) == 0:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, np.zeros((0, 3), dtype=np.int64), np.zeros(0)
    nl = NeighborList(cutoff=float(cutoff), full_list=True)
    i, j, shifts, d = nl.compute(points=positions, box=cell, periodic=[bool(p) for p in pbc],
                                 quantities="ijSd")
    return (i.astype(np.int64), j.astype(np.int64), shifts.astype(np.int64),
            d.astype(np.float64))
