"""ASE ``Atoms`` (one or a list) -> one batch of tensors, the only data structure of the package.

The batch is a ``dict[str, torch.Tensor]`` with the keys of :mod:`ase_so3.keys`. Models read
positions, numbers, cell, edges and shifts from it and never see ASE; forces and stress come from
autograd with respect to the positions and a strain applied to positions *and* cell
(:mod:`ase_so3.potentials.forces`), which is why edge vectors are recomputed from the batch by
:func:`edge_vectors` instead of being stored.
"""

from __future__ import annotations

import warnings
from typing import Iterable, Sequence

import numpy as np
import torch

from ase_so3 import keys as K
from ase_so3.errors import CloseAtomsWarning, InvalidStructureError
from ase_so3.neighbors import neighbor_list

Graph = dict  # dict[str, torch.Tensor]

COINCIDENT = 1e-6  # Å: atoms closer than this make edge directions undefined


def validate_atoms(atoms) -> None:
    """Raise :class:`InvalidStructureError` for structures no potential can evaluate."""
    validate_arrays(atoms.get_positions(), np.asarray(atoms.cell.array, dtype=np.float64),
                    np.asarray(atoms.pbc, dtype=bool))


def validate_arrays(pos: np.ndarray, cell: np.ndarray, pbc: np.ndarray) -> None:
    """:func:`validate_atoms` on plain arrays: positions ``[N, 3]``, cell ``[3, 3]``, pbc ``[3]``."""
    if not np.all(np.isfinite(pos)):
        bad = np.where(~np.all(np.isfinite(pos), axis=1))[0]
        raise InvalidStructureError(
            f"positions of atoms {bad[:10].tolist()} are NaN or infinite; "
            "fix the structure (a previous step may have diverged)")
    if not np.all(np.isfinite(cell)):
        raise InvalidStructureError("the cell contains NaN or infinite values; set a valid cell")
    lengths = np.linalg.norm(cell, axis=1)
    for axis in np.where(pbc)[0]:
        if lengths[axis] < 1e-8:
            raise InvalidStructureError(
                f"periodic boundary conditions along cell vector {'abc'[axis]} but that cell "
                "vector is zero; set atoms.cell (e.g. atoms.set_cell([a, b, c])) or turn "
                "periodicity off with atoms.pbc = False")
    if pbc.all() and abs(np.linalg.det(cell)) < 1e-8:
        raise InvalidStructureError(
            "the cell is periodic in three directions but its volume is zero; "
            "give three linearly independent cell vectors")


def structure_arrays(atoms, cutoff: float, min_distance: float | None, pair_list=None):
    """Validated ``(positions, numbers, cell, pbc, centre, neighbour, unit_shifts)`` of one
    structure with its neighbour list (``pair_list`` as in :func:`atoms_to_graph`)."""
    return system_arrays(atoms.get_positions(), np.asarray(atoms.numbers),
                         np.asarray(atoms.cell.array, dtype=np.float64),
                         np.asarray(atoms.pbc, dtype=bool), cutoff, min_distance, pair_list)


def system_arrays(pos: np.ndarray, numbers: np.ndarray, cell: np.ndarray, pbc: np.ndarray,
                  cutoff: float, min_distance: float | None, pair_list=None):
    """:func:`structure_arrays` from plain arrays (float64 positions and cell, bool pbc), for
    engines that hold their systems as tensors (torch-sim)."""
    validate_arrays(pos, cell, pbc)
    if pair_list is None:
        centre, neigh, shifts, dist = neighbor_list(pos, cell, pbc, cutoff)
    else:
        centre, neigh, shifts, dist = pair_list(pos, cell, pbc)
    if len(dist):
        k = int(np.argmin(dist))
        dmin = float(dist[k])
        pair = (int(centre[k]), int(neigh[k]))
        if dmin < COINCIDENT:
            raise InvalidStructureError(
                f"atoms {pair[0]} and {pair[1]} are at the same position (distance {dmin:.2e} Å); "
                "remove the duplicate atom")
        if min_distance is not None and dmin < min_distance:
            warnings.warn(
                f"atoms {pair[0]} and {pair[1]} are {dmin:.3f} Å apart, closer than "
                f"min_distance={min_distance} Å; the potential was not trained on such "
                "configurations and its energies there are not trustworthy", CloseAtomsWarning,
                stacklevel=4)
    return pos, np.asarray(numbers), cell, pbc, centre, neigh, shifts


def atoms_to_graph(atoms, cutoff: float, dtype: torch.dtype = torch.float64,
                   device: torch.device | str = "cpu",
                   min_distance: float | None = None, pair_list=None) -> Graph:
    """Build the batch for one ``Atoms`` or a sequence of them.

    ``min_distance`` (Å): warn (:class:`CloseAtomsWarning`) when two atoms are closer; atoms
    at the same position always raise :class:`InvalidStructureError`. ``pair_list``: a callable
    ``(positions, cell, pbc) -> (centre, neighbour, shifts, distances)`` such as a
    :class:`~ase_so3.neighbors.VerletNeighborList` (single structure only).
    """
    structures: Sequence = [atoms] if not isinstance(atoms, (list, tuple)) else atoms
    if len(structures) == 0:
        raise ValueError("atoms_to_graph needs at least one structure")
    if pair_list is not None and len(structures) != 1:
        raise ValueError("a reusable pair list serves one structure at a time")
    parts = [structure_arrays(a, cutoff, min_distance, pair_list) for a in structures]
    return collate_arrays(parts, dtype=dtype, device=device)


def collate_arrays(parts: Iterable[tuple], dtype: torch.dtype, device) -> Graph:
    """Concatenate per-structure arrays ``(pos, numbers, cell, pbc, centre, neigh, shifts)``.

    Positions are centred per structure (in float64, before any cast): energies are translation
    invariant, and centring keeps float32 edge vectors exact for structures far from the origin.
    """
    pos_l, num_l, cell_l, pbc_l, batch_l, src_l, dst_l, sh_l, counts = [], [], [], [], [], [], [], [], [0]
    offset = 0
    for g, (pos, numbers, cell, pbc, centre, neigh, shifts) in enumerate(parts):
        n = len(pos)
        pos_l.append(pos - pos.mean(axis=0) if n else pos)
        num_l.append(numbers)
        cell_l.append(cell)
        pbc_l.append(pbc)
        batch_l.append(np.full(n, g, dtype=np.int64))
        src_l.append(neigh + offset)
        dst_l.append(centre + offset)
        sh_l.append(shifts)
        offset += n
        counts.append(offset)
    t = dict(dtype=dtype, device=device)
    li = dict(dtype=torch.long, device=device)
    return {
        K.POSITIONS: torch.as_tensor(np.concatenate(pos_l), **t),
        K.NUMBERS: torch.as_tensor(np.concatenate(num_l).astype(np.int64), **li),
        K.BATCH: torch.as_tensor(np.concatenate(batch_l), **li),
        K.EDGE_INDEX: torch.as_tensor(np.stack([np.concatenate(src_l), np.concatenate(dst_l)]),
                                      **li),
        K.UNIT_SHIFTS: torch.as_tensor(np.concatenate(sh_l), **t),
        K.CELL: torch.as_tensor(np.stack(cell_l), **t),
        K.PBC: torch.as_tensor(np.stack(pbc_l), dtype=torch.bool, device=device),
        K.PTR: torch.as_tensor(np.asarray(counts, dtype=np.int64), **li),
    }


def num_graphs(graph: Graph) -> int:
    return int(graph[K.CELL].shape[0])


def edge_vectors(graph: Graph) -> torch.Tensor:
    """``[E, 3]`` vectors ``r_ij = x_j - x_i + shift`` from centre i to neighbour j (Å)."""
    pos = graph[K.POSITIONS]
    src, dst = graph[K.EDGE_INDEX][K.SENDER], graph[K.EDGE_INDEX][K.RECEIVER]
    cell_of_edge = graph[K.CELL][graph[K.BATCH][dst]]  # [E, 3, 3]
    shift = torch.einsum("ei,eij->ej", graph[K.UNIT_SHIFTS], cell_of_edge)
    return pos[src] - pos[dst] + shift


def to_device(graph: Graph, device=None, dtype: torch.dtype | None = None) -> Graph:
    """Move a batch; floating tensors also change to ``dtype`` when given."""
    out = {}
    for k, v in graph.items():
        if dtype is not None and v.is_floating_point():
            out[k] = v.to(device=device, dtype=dtype)
        else:
            out[k] = v.to(device=device)
    return out
