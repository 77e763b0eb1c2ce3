"""Structures for the speed benchmarks: a molecule alone, and periodic boxes of randomly oriented
copies of it (a molecular liquid at roughly its density) from ~100 to ~10,000 atoms."""

from __future__ import annotations

import numpy as np
from ase import Atoms

from ase_so3.so3.wigner import random_rotation

# lattice spacing (Å) per molecule so that randomly oriented copies do not clash
_SPACING = {"ethanol": 5.5, "aspirin": 8.0, "benzene": 6.0, "uracil": 6.0, "toluene": 6.5,
            "malonaldehyde": 5.5, "naphthalene": 7.5, "paracetamol": 7.5, "salicylic": 7.0,
            "azobenzene": 9.0}


def molecule(name: str) -> Atoms:
    from ase_so3.data import load_named_structure
    atoms = load_named_structure(name)
    atoms.calc = None
    return atoms


def molecular_box(name: str, copies_per_side: int, seed: int = 0,
                  min_distance: float = 1.0) -> Atoms:
    """``copies_per_side**3`` randomly rotated copies of a molecule on a cubic lattice, periodic."""
    import torch
    base = molecule(name)
    centred = base.positions - base.positions.mean(0)
    extent = float(np.linalg.norm(centred, axis=1).max())
    spacing = max(_SPACING.get(name, 2 * extent + 2.0), 2.0)
    k = int(copies_per_side)
    n = len(base)
    gen = torch.Generator().manual_seed(seed)
    centres = (np.array(list(np.ndindex(k, k, k)), dtype=np.float64) + 0.5) * spacing
    rots = random_rotation(k ** 3, generator=gen, dtype=torch.float64).numpy()
    atoms = Atoms(numbers=np.tile(base.numbers, k ** 3), cell=np.eye(3) * spacing * k, pbc=True)
    from ase_so3.neighbors import neighbor_list
    for _ in range(200):  # re-draw the orientation of molecules that clash with a neighbour
        atoms.positions = (np.einsum("mab,nb->mna", rots, centred) + centres[:, None]).reshape(-1, 3)
        i, j, s, _ = neighbor_list(atoms.positions, atoms.cell.array, atoms.pbc, min_distance)
        clash = (i // n != j // n) | np.any(s != 0, axis=1)
        if not clash.any():
            return atoms
        bad = np.unique(i[clash] // n)
        rots[bad] = random_rotation(len(bad), generator=gen, dtype=torch.float64).numpy()
    raise ValueError(f"could not place copies of {name} {min_distance} Å apart at spacing {spacing} Å")


def box_sizes(name: str, targets=(100, 1000, 10000)) -> list[int]:
    """Copies per side giving the box nearest each target atom count."""
    n = len(molecule(name))
    return sorted({max(1, round((t / n) ** (1 / 3))) for t in targets})
