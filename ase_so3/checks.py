"""Physics self-checks for any potential: symmetry, finite differences, cutoff continuity,
energy conservation, batch consistency. The test suite and ``ase-so3 check`` both use them.

Each function returns plain floats (worst absolute errors, eV, eV/Å or eV/Å^3) so callers can
compare them with tolerances. Everything runs in float64 on a copy of the model.
"""

from __future__ import annotations

import copy

import numpy as np
import torch

from ase_so3.graph import atoms_to_graph
from ase_so3.md import make_dynamics, maxwell_boltzmann
from ase_so3.potentials.forces import energy_forces_stress, split_by_structure
from ase_so3.so3.wigner import random_rotation


def _as_float64(model):
    m = copy.deepcopy(model).to(torch.float64).eval()
    for p in m.parameters():
        p.requires_grad_(False)
    return m


def evaluate(model, atoms_list, stress: bool | None = None) -> list[dict[str, np.ndarray]]:
    """Energies, forces (and stress for 3-D periodic structures) of a list of structures in one
    batch. ``model`` is used as is (dtype and device of its parameters)."""
    p = next(iter(model.parameters()))
    graph = atoms_to_graph(list(atoms_list), model.cutoff, dtype=p.dtype, device=p.device)
    if stress is None:
        stress = all(bool(np.all(a.pbc)) for a in atoms_list)
    with torch.enable_grad():
        out = energy_forces_stress(model, graph, forces=True, stress=stress)
    return split_by_structure(out, graph)


def _transform(atoms, rot: np.ndarray, shift: np.ndarray, perm: np.ndarray):
    a = atoms.copy()
    a.calc = None
    pos = atoms.get_positions() @ rot.T + shift
    a.set_cell(atoms.cell.array @ rot.T, scale_atoms=False)
    a.positions = pos
    return a[perm]


def symmetry_errors(model, atoms, draws: int = 8, seed: int = 0) -> dict[str, float]:
    """Worst errors of E(g x) = E(x), F(g x) = g F(x), S(g x) = g S g^T over random rotations,
    reflections (rotation times -1), translations and permutations."""
    model = _as_float64(model)
    rng = np.random.default_rng(seed)
    gen = torch.Generator().manual_seed(seed)
    periodic = bool(np.all(atoms.pbc))
    ref = evaluate(model, [atoms])[0]
    n = len(atoms)
    worst: dict[str, float] = {}
    for _ in range(draws):
        rot = random_rotation(generator=gen).numpy()
        cases = {
            "rotation": (rot, np.zeros(3), np.arange(n)),
            "reflection": (-rot, np.zeros(3), np.arange(n)),
            "translation": (np.eye(3), rng.normal(size=3) * 10.0, np.arange(n)),
            "permutation": (np.eye(3), np.zeros(3), rng.permutation(n)),
        }
        structures = [_transform(atoms, *c) for c in cases.values()]
        results = evaluate(model, structures)
        for (name, (g, _, perm)), res in zip(cases.items(), results):
            errs = {"energy": abs(res["energy"] - ref["energy"]),
                    "forces": float(np.abs(res["forces"] - (ref["forces"] @ g.T)[perm]).max())}
            if periodic:
                errs["stress"] = float(np.abs(res["stress"] - g @ ref["stress"] @ g.T).max())
            for q, e in errs.items():
                key = f"{q}_{name}"
                worst[key] = max(worst.get(key, 0.0), e)
    return worst


def finite_difference_errors(model, atoms, delta: float = 1e-4) -> dict[str, float]:
    """Worst |autograd - finite difference| for forces (and stress if 3-D periodic).

    Central differences at steps ``delta`` and ``delta / 2`` combined by Richardson extrapolation,
    so the truncation error is O(delta^4) and stiff (trained) potentials are checked as tightly as
    smooth ones."""
    model = _as_float64(model)
    periodic = bool(np.all(atoms.pbc))
    ref = evaluate(model, [atoms])[0]
    steps = (delta, 0.5 * delta)
    displaced, strained = [], []
    for h in steps:
        for i in range(len(atoms)):
            for k in range(3):
                for sign in (1, -1):
                    a = atoms.copy()
                    a.positions[i, k] += sign * h
                    displaced.append(a)
        if periodic:
            for i in range(3):
                for j in range(3):
                    for sign in (1, -1):
                        eps = np.zeros((3, 3))
                        eps[i, j] += 0.5 * sign * h
                        eps[j, i] += 0.5 * sign * h
                        a = atoms.copy()
                        a.set_cell(atoms.cell.array @ (np.eye(3) + eps), scale_atoms=True)
                        strained.append(a)
    energies = np.array([r["energy"] for r in evaluate(model, displaced + strained, stress=False)])
    e_pos = energies[:len(displaced)].reshape(2, len(atoms), 3, 2)
    d = [-(e_pos[s, ..., 0] - e_pos[s, ..., 1]) / (2 * h) for s, h in enumerate(steps)]
    fd_forces = (4 * d[1] - d[0]) / 3
    out = {"forces": float(np.abs(fd_forces - ref["forces"]).max())}
    if periodic:
        e_str = energies[len(displaced):].reshape(2, 3, 3, 2)
        d = [(e_str[s, ..., 0] - e_str[s, ..., 1]) / (2 * h) for s, h in enumerate(steps)]
        fd_stress = (4 * d[1] - d[0]) / 3 / atoms.get_volume()
        out["stress"] = float(np.abs(fd_stress - ref["stress"]).max())
    return out


def cutoff_continuity(model, symbols=None, delta: float = 1e-6) -> dict[str, float]:
    """Jumps of energy and forces when one neighbour moves from ``rc - delta`` to ``rc + delta``
    (a trimer: A at the origin, B bonded to A, C on the far side at the cutoff distance of A)."""
    from ase import Atoms
    model = _as_float64(model)
    rc = model.cutoff
    from ase.data import atomic_numbers
    numbers = [atomic_numbers[s] if isinstance(s, str) else int(s)
               for s in (symbols or [model.species[0]] * 3)]
    structures = []
    for d in (rc - delta, rc + delta):
        pos = [[0.0, 0.0, 0.0], [-1.1, 0.3, 0.2], [d * 0.6, d * 0.8, 0.0]]
        structures.append(Atoms(numbers=numbers, positions=pos))
    inside, outside = evaluate(model, structures)
    return {"energy": abs(inside["energy"] - outside["energy"]),
            "forces": float(np.abs(inside["forces"] - outside["forces"]).max())}


def nve_drift(model, atoms, steps: int = 200, timestep_fs: float = 0.5,
              temperature_K: float = 300.0, seed: int = 0) -> dict[str, float]:
    """Velocity-Verlet NVE run; returns the total-energy drift (linear fit) in eV/atom/ps and the
    largest deviation from the initial total energy in eV/atom."""
    from ase_so3.calculator import SO3Calculator
    a = atoms.copy()
    a.calc = SO3Calculator(model, dtype="float64", min_distance=None)
    maxwell_boltzmann(a, temperature_K, np.random.default_rng(seed))
    dyn = make_dynamics(a, "nve", timestep_fs)
    totals = [a.get_total_energy()]
    dyn.attach(lambda: totals.append(a.get_total_energy()), interval=1)
    dyn.run(steps)
    e = np.asarray(totals[1:]) / len(a)
    t_ps = np.arange(len(e)) * timestep_fs / 1000.0
    slope = float(np.polyfit(t_ps, e, 1)[0]) if len(e) > 1 else 0.0
    return {"drift_eV_per_atom_per_ps": slope,
            "max_deviation_eV_per_atom": float(np.abs(e - totals[0] / len(a)).max())}


def nve_drift_without_timestep_error(model, atoms, steps: int = 200, timestep_fs: float = 0.25,
                                     **kwargs) -> dict[str, float]:
    """The drift that does not vanish with the time step: two NVE runs of the same length from
    the same state, at ``dt`` and ``dt/2``; velocity Verlet's energy error is O(dt^2), so the
    Richardson extrapolation (4 d(dt/2) - d(dt)) / 3 removes it and leaves what a
    non-conservative force field puts in (which does not shrink with dt)."""
    coarse = nve_drift(model, atoms, steps=steps, timestep_fs=timestep_fs, **kwargs)
    fine = nve_drift(model, atoms, steps=2 * steps, timestep_fs=timestep_fs / 2, **kwargs)
    d1, d2 = coarse["drift_eV_per_atom_per_ps"], fine["drift_eV_per_atom_per_ps"]
    return {"drift_eV_per_atom_per_ps": (4.0 * d2 - d1) / 3.0, "drift_at_dt": d1,
            "drift_at_half_dt": d2}


def batch_consistency(model, atoms_list) -> dict[str, float]:
    """Worst difference between each structure evaluated alone and inside one batch."""
    model = _as_float64(model)
    together = evaluate(model, atoms_list, stress=False)
    worst = {"energy": 0.0, "forces": 0.0}
    for a, t in zip(atoms_list, together):
        alone = evaluate(model, [a], stress=False)[0]
        worst["energy"] = max(worst["energy"], abs(alone["energy"] - t["energy"]))
        worst["forces"] = max(worst["forces"], float(np.abs(alone["forces"] - t["forces"]).max()))
    return worst
