"""MD stability ("Forces are not enough", Fu et al. 2022): Langevin NVT at 500 K from test
structures, run until the simulation breaks or the time limit is reached.

A run breaks when a bond (a pair closer than 1.25 x the sum of covalent radii in the starting
structure) deviates from its starting length by more than ``bond_tolerance`` (0.5 Å, as in the
paper), or when the energy or positions stop being finite. Reported per model: the time to break
of each run (the limit if it never broke), their mean and the fraction that broke.
"""

from __future__ import annotations

import time

import numpy as np


def bonds_of(atoms, factor: float = 1.25) -> tuple[np.ndarray, np.ndarray]:
    from ase.data import covalent_radii
    pos = atoms.positions
    d = np.linalg.norm(pos[:, None] - pos[None], axis=-1)
    r = covalent_radii[atoms.numbers]
    i, j = np.nonzero(np.triu(d < factor * (r[:, None] + r[None]), k=1))
    return np.stack([i, j], axis=1), d[i, j]


def run_stability(calc, atoms, temperature_K: float = 500.0, max_ps: float = 1.0,
                  timestep_fs: float = 0.5, friction_per_fs: float = 0.01,
                  bond_tolerance: float = 0.5, check_every: int = 10, seed: int = 0,
                  frames: list | None = None, frames_every: int = 0) -> dict:
    """One run (see the module). With ``frames`` (a list) and ``frames_every`` (MD steps, a
    multiple of ``check_every``), a copy of the structure is appended to ``frames`` every
    ``frames_every`` steps while the run is intact (the frame where it broke is left out)."""
    from ase_so3.md import make_dynamics, maxwell_boltzmann
    if frames_every and frames_every % check_every:
        raise ValueError(f"frames_every ({frames_every}) must be a multiple of check_every "
                         f"({check_every})")
    atoms = atoms.copy()
    atoms.calc = calc
    bonds, lengths = bonds_of(atoms)
    rng = np.random.default_rng(seed)
    maxwell_boltzmann(atoms, temperature_K, rng)
    dyn = make_dynamics(atoms, "nvt", timestep_fs, temperature_K, friction_per_fs, rng)
    max_steps = int(round(max_ps * 1000 / timestep_fs))
    steps, reason, worst = 0, None, 0.0
    start = time.perf_counter()
    while steps < max_steps:
        n = min(check_every, max_steps - steps)
        try:
            dyn.run(n)
        except Exception as exc:  # a potential that blows up may raise (e.g. atoms too close)
            reason = f"error: {type(exc).__name__}: {str(exc)[:80]}"
            break
        steps += n
        pos = atoms.positions
        if not np.all(np.isfinite(pos)) or not np.isfinite(atoms.get_potential_energy()):
            reason = "non-finite energy or positions"
            break
        dev = np.abs(np.linalg.norm(pos[bonds[:, 0]] - pos[bonds[:, 1]], axis=1) - lengths)
        worst = max(worst, float(dev.max()) if len(dev) else 0.0)
        if worst > bond_tolerance:
            reason = f"bond deviated by {worst:.2f} Å"
            break
        if frames is not None and frames_every and steps % frames_every == 0:
            frame = atoms.copy()
            frame.calc = None
            frames.append(frame)
    seconds = time.perf_counter() - start
    return {"stable_ps": steps * timestep_fs / 1000, "max_ps": max_ps, "broke": reason is not None,
            "reason": reason or "", "max_bond_deviation_A": worst,
            "steps_per_s": steps / max(seconds, 1e-9)}


def summarize(runs: list[dict]) -> dict:
    t = np.array([r["stable_ps"] for r in runs])
    return {"runs": len(runs), "mean_stable_ps": float(t.mean()), "min_stable_ps": float(t.min()),
            "broke_fraction": float(np.mean([r["broke"] for r in runs])),
            "max_ps": runs[0]["max_ps"]}
