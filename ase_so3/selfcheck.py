"""``ase-so3 check POTENTIAL [STRUCTURE ...]``: the physics self-check of a potential.

Runs the functions of :mod:`ase_so3.checks` on the given structures, or by default on a structure
the potential was trained on (recorded in potentials written by ``ase-so3 train``; the shipped
molecule for a shipped potential), a random cluster of its elements, a periodic cell smaller than
twice the cutoff, a slab with vacuum and a molecule far from the origin, and prints one row per
check: worst error, tolerance, pass/fail. The NVE row runs on the first structure, the training
one where there is one: dynamics far outside the training data test the data, not the
implementation; and it reports the drift left when the integrator's O(dt^2) error is extrapolated
away (runs at 0.25 and 0.125 fs), which a sound potential keeps near zero even where its surface is
rough and a non-conservative force field does not.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from ase import Atoms

from ase_so3 import checks


@dataclass
class CheckRow:
    check: str
    structure: str
    worst: float
    tolerance: float

    @property
    def passed(self) -> bool:
        return bool(np.isfinite(self.worst) and self.worst <= self.tolerance)


def default_structures(model) -> dict[str, Atoms]:
    """Test structures built from the potential's own elements and cutoff. For a shipped
    potential the molecule is the one it was trained on (dynamics far outside the training data
    would test the data, not the implementation)."""
    z = list(model.species)
    rng = np.random.default_rng(0)
    mol_numbers = [z[k % len(z)] for k in range(6)]
    mol = Atoms(numbers=mol_numbers, positions=_spread(6, 1.3, rng))
    metadata = getattr(model, "metadata", {}) or {}
    name = metadata.get("pretrained_name")
    trained_on = None
    if name:
        from ase_so3.data import load_named_structure, named_structures
        from ase_so3.pretrained import model_card
        molecule = model_card(name).get("molecule")
        if molecule in named_structures():
            mol = load_named_structure(molecule)
    elif metadata.get("reference_structures"):
        r = metadata["reference_structures"][0]
        trained_on = Atoms(numbers=r["numbers"], positions=r["positions"], cell=r["cell"],
                           pbc=r["pbc"])
    rc = model.cutoff
    a = 0.8 * rc  # every lattice vector shorter than twice the cutoff
    cell = np.array([[a, 0, 0], [0.15 * a, 0.95 * a, 0], [0.1 * a, 0.2 * a, 0.9 * a]])
    n_bulk = 4
    bulk = Atoms(numbers=[z[k % len(z)] for k in range(n_bulk)],
                 scaled_positions=rng.uniform(size=(n_bulk, 3)), cell=cell, pbc=True)
    _push_apart(bulk, 1.1)
    slab = Atoms(numbers=mol_numbers, positions=_spread(6, 1.3, rng) + [0, 0, 5.0],
                 cell=[[1.23 * a, 0, 0], [0.11 * a, 1.31 * a, 0], [0, 0, 4 * rc]],
                 pbc=[True, True, False])
    _push_apart(slab, 1.1)
    far = (trained_on if trained_on is not None and not trained_on.pbc.any() else mol).copy()
    far.positions += 1.0e4
    first = {"training structure": trained_on} if trained_on is not None else {}
    return {**first, "molecule": mol, "periodic cell": bulk, "slab": slab, "far from origin": far}


def _spread(n: int, bond: float, rng) -> np.ndarray:
    """n points, each at ~bond length from an earlier one, none closer than 0.9 * bond."""
    pts = [np.zeros(3)]
    while len(pts) < n:
        base = pts[rng.integers(len(pts))]
        cand = base + bond * _unit(rng.normal(size=3))
        if min(np.linalg.norm(cand - p) for p in pts) > 0.9 * bond:
            pts.append(cand)
    return np.array(pts)


def _unit(v):
    return v / np.linalg.norm(v)


def _push_apart(atoms: Atoms, dmin: float, iterations: int = 200) -> None:
    for _ in range(iterations):
        d = atoms.get_all_distances(mic=True)
        np.fill_diagonal(d, np.inf)
        i, j = np.unravel_index(np.argmin(d), d.shape)
        if d[i, j] >= dmin:
            return
        vec = atoms.get_distance(i, j, mic=True, vector=True)
        atoms.positions[j] += 0.2 * _unit(vec + 1e-9)


def run_checks(model, structures: dict[str, Atoms] | None = None,
               nve_steps: int = 200) -> list[CheckRow]:
    structures = structures or default_structures(model)
    rows: list[CheckRow] = []
    for name, atoms in structures.items():
        for key, err in checks.symmetry_errors(model, atoms, draws=4).items():
            quantity, transform = key.split("_")
            rows.append(CheckRow(f"{quantity} {transform}", name, err, 1e-8 if quantity == "energy"
                                 else 1e-7))
        for key, err in checks.finite_difference_errors(model, atoms).items():
            rows.append(CheckRow(f"{key} vs finite differences", name, err, 1e-6))
    for key, err in checks.cutoff_continuity(model, delta=1e-6).items():
        rows.append(CheckRow(f"{key} continuity at cutoff", "trimer", err, 1e-6))
    first = next(iter(structures.values()))
    nve = checks.nve_drift_without_timestep_error(model, first, steps=nve_steps, timestep_fs=0.25)
    rows.append(CheckRow("NVE drift, dt -> 0 (eV/atom/ps)", next(iter(structures)),
                         abs(nve["drift_eV_per_atom_per_ps"]), 1e-3))
    for key, err in checks.batch_consistency(model, list(structures.values())).items():
        rows.append(CheckRow(f"{key} batch consistency", "all", err, 1e-8))
    return rows


def format_table(rows: list[CheckRow]) -> str:
    lines = [f"{'check':<34} {'structure':<16} {'worst error':>12} {'tolerance':>10}  result"]
    for r in rows:
        lines.append(f"{r.check:<34} {r.structure:<16} {r.worst:>12.3e} {r.tolerance:>10.1e}  "
                     f"{'pass' if r.passed else 'FAIL'}")
    n_fail = sum(not r.passed for r in rows)
    lines.append(f"{len(rows) - n_fail} passed, {n_fail} failed")
    return "\n".join(lines)
