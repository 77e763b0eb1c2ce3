"""Neighbour lists: vesin (exact, O(N)) for every boundary condition ASE supports.

vesin's full neighbour lists match ``ase.neighborlist.neighbor_list`` exactly (pairs and integer
cell shifts; tested), for molecules, fully and partly periodic cells, skewed cells and cells
smaller than the cutoff (several images of the same neighbour, and images of an atom itself).
"""

from __future__ import annotations

import numpy as np
from vesin import NeighborList

from ase_so3.errors import ConfigError


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


class VerletNeighborList:
    """Neighbour list with a Verlet skin, reused while atoms move little.

    The pair list is built with ``cutoff + skin``; later calls reuse it (keeping only pairs now
    closer than ``cutoff``) until some atom has moved more than ``skin / 2`` since the build, or
    the cell, periodicity or number of atoms changed. Results equal a fresh list's up to the order
    of the pairs (tested over MD runs). ``builds`` counts rebuilds.
    """

    def __init__(self, cutoff: float, skin: float = 0.5):
        if skin < 0:
            raise ConfigError("skin must be >= 0")
        self.cutoff, self.skin = float(cutoff), float(skin)
        self.builds = 0
        self._ref = None  # (positions, cell, pbc, centre, neighbour, shifts)

    def _stale(self, positions, cell, pbc) -> bool:
        if self._ref is None or self.skin == 0:
            return True
        pos0, cell0, pbc0 = self._ref[:3]
        if pos0.shape != positions.shape or not np.array_equal(cell0, cell) \
                or not np.array_equal(pbc0, pbc):
            return True
        moved = np.sqrt(((positions - pos0) ** 2).sum(1)).max() if len(positions) else 0.0
        return moved > 0.5 * self.skin

    def __call__(self, positions, cell, pbc):
        positions = np.asarray(positions, dtype=np.float64)
        cell = np.asarray(cell, dtype=np.float64)
        pbc = np.asarray(pbc, dtype=bool)
        if self._stale(positions, cell, pbc):
            i, j, s, _ = neighbor_list(positions, cell, pbc, self.cutoff + self.skin)
            self._ref = (positions.copy(), cell.copy(), pbc.copy(), i, j, s)
            self.builds += 1
        i, j, s = self._ref[3:]
        d = np.linalg.norm(positions[j] - positions[i] + s @ cell, axis=1)
        keep = d < self.cutoff
        return i[keep], j[keep], s[keep], d[keep]
