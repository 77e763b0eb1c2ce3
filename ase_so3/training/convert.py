"""Converters into and out of the ase_so3 HDF5 format.

* MD17 / revised MD17 ``.npz`` (energies kcal/mol, forces kcal/mol/Å -> eV, eV/Å, converted
  here and nowhere else). Files whose names contain ``_train_`` / ``_test_`` are the official
  rMD17 split files: the test file becomes the ``test`` split, and ``--train``/``--val``
  structures are drawn (seeded, recorded in the file) from the train file. Test structures that
  are also in a train file (the same ``old_indices``, the frame of the original MD17 trajectory)
  are left out (not stored): the official test file of one split holds a few training structures
  of another (``test_02`` five of ``train_01``), so a blind test on another split stays blind.
* Any ASE-readable file with energies and forces (extxyz with ``REF_energy``/``REF_forces`` or
  calculator results, ASE databases, trajectories).
* HDF5 -> extxyz (``REF_energy``, ``REF_forces``, ``REF_stress``), one split at a time, so other
  codes (MACE included) train on exactly the same structures.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
from ase import units

from ase_so3.errors import DataError
from ase_so3.training.hdf5 import HDF5Dataset, Structure, write_dataset

KCAL_PER_MOL = units.kcal / units.mol  # eV; 0.0433641...
ENERGY_UNITS = {"eV": 1.0, "kcal/mol": KCAL_PER_MOL, "kJ/mol": units.kJ / units.mol,
                "Hartree": units.Hartree, "meV": 1e-3}


def read_md17_npz(path) -> list[Structure]:
    """Structures of an MD17 (``z, R, E, F``) or rMD17 (``nuclear_charges, coords, energies,
    forces``) file, converted to eV and eV/Å."""
    d = np.load(path)
    if "nuclear_charges" in d:
        z, pos, e, f = d["nuclear_charges"], d["coords"], d["energies"], d["forces"]
    elif "R" in d:
        z = d["z"] if "z" in d else d["Z"]
        pos, e, f = d["R"], d["E"], d["F"]
    else:
        raise DataError(f"{path}: not an MD17/rMD17 npz file (keys {sorted(d.keys())})")
    e = np.asarray(e, dtype=np.float64).reshape(-1) * KCAL_PER_MOL
    f = np.asarray(f, dtype=np.float64) * KCAL_PER_MOL
    z = np.asarray(z, dtype=np.int64)
    return [Structure(numbers=z, positions=np.asarray(pos[i], dtype=np.float64), energy=float(e[i]),
                      forces=f[i]) for i in range(len(e))]


def md17_frame_indices(path) -> np.ndarray | None:
    """The original-MD17 frame of each structure of an rMD17 file (``old_indices``), else None."""
    d = np.load(path)
    return np.asarray(d["old_indices"], dtype=np.int64) if "old_indices" in d else None


def _labels_from_atoms(atoms, energy_key: str, forces_key: str):
    results = atoms.calc.results if atoms.calc is not None else {}
    energy = results.get("energy", atoms.info.get(energy_key))
    forces = results.get("forces", atoms.arrays.get(forces_key))
    return energy, forces


def read_ase_file(path, energy_key: str = "REF_energy", forces_key: str = "REF_forces",
                  energy_unit: str = "eV") -> list[Structure]:
    """Structures with energies and forces from any ASE-readable file."""
    from ase.io import read
    scale = ENERGY_UNITS[energy_unit]
    path = Path(path)
    structures = []
    if path.suffix == ".db":
        from ase.db import connect
        for row in connect(path).select():
            atoms = row.toatoms()
            energy = row.get("energy", None)
            forces = row.get("forces", None)
            energy = row.data.get("energy", energy) if energy is None else energy
            forces = row.data.get("forces", forces) if forces is None else forces
            if energy is None or forces is None:
                raise DataError(f"{path}: row {row.id} has no energy/forces")
            structures.append(Structure.from_atoms(atoms, energy=float(np.ravel(energy)[0]) * scale,
                                                   forces=np.asarray(forces) * scale))
        return structures
    for k, atoms in enumerate(read(path, ":")):
        energy, forces = _labels_from_atoms(atoms, energy_key, forces_key)
        if energy is None or forces is None:
            raise DataError(f"{path}: structure {k} has no energy/forces (looked for calculator "
                            f"results and the keys {energy_key!r}/{forces_key!r})")
        structures.append(Structure.from_atoms(atoms, energy=float(energy) * scale,
                                               forces=np.asarray(forces) * scale))
    return structures


def _is_official(path: Path, kind: str) -> bool:
    return re.search(rf"_{kind}_\d+", path.stem) is not None


def convert_to_hdf5(inputs: list, output, n_train: int | None = None, n_val: int = 50,
                    n_test: int | None = None, seed: int = 0, energy_unit: str = "eV",
                    energy_key: str = "REF_energy", forces_key: str = "REF_forces") -> dict:
    """Convert files to one HDF5 data set with ``train``/``val``/``test`` splits; returns sizes."""
    inputs = [Path(p) for p in inputs]
    pools: dict[str, list[Structure]] = {"train": [], "test": [], "all": []}
    frames: dict[str, list] = {"train": [], "test": []}  # MD17 frame per structure, or None
    sources, test_files = [], []
    for p in inputs:
        if p.suffix == ".npz":
            structures = read_md17_npz(p)
            unit_note = "kcal/mol -> eV"
        else:
            structures = read_ase_file(p, energy_key, forces_key, energy_unit)
            unit_note = f"{energy_unit} -> eV"
        for k, st in enumerate(structures):
            bad = st.non_finite()
            if bad:
                raise DataError(f"{p}: frame {k} holds NaN or infinite values in "
                                f"{', '.join(bad)}; nothing was written. Fix or drop that "
                                "frame and convert again")
        kind = "train" if _is_official(p, "train") else "test" if _is_official(p, "test") else "all"
        pools[kind].extend(structures)
        if kind == "test":
            test_files.append(p.name)
        if kind in frames:
            found = md17_frame_indices(p) if p.suffix == ".npz" else None
            frames[kind].extend([None] * len(structures) if found is None else found.tolist())
        sources.append(f"{p.name} ({len(structures)} structures, {kind}, {unit_note})")
    rng = np.random.default_rng(seed)
    structures: list[Structure] = []
    splits: dict[str, np.ndarray] = {}
    desc: dict[str, str] = {}
    if pools["train"] or pools["test"]:
        if pools["all"]:
            raise DataError("mix of official split files (_train_/_test_) and other files")
        train_pool = pools["train"]
        perm = rng.permutation(len(train_pool))
        n_tr = len(train_pool) - n_val if n_train is None else n_train
        if n_tr + n_val > len(train_pool):
            raise DataError(f"--train {n_tr} + --val {n_val} > {len(train_pool)} structures")
        seen = {f for f in frames["train"] if f is not None}
        overlap = {k for k, f in enumerate(frames["test"]) if f is not None and f in seen}
        structures = train_pool + [s for k, s in enumerate(pools["test"]) if k not in overlap]
        splits["train"] = np.sort(perm[:n_tr])
        splits["val"] = np.sort(perm[n_tr:n_tr + n_val])
        test_idx = np.arange(len(train_pool), len(structures))
        if overlap:
            sources.append(f"{len(overlap)} test structures left out: the same MD17 frames "
                           "(old_indices) are in the train file(s)")
        if n_test is not None:
            test_idx = test_idx[:n_test]
        splits["test"] = test_idx
        desc = {"train": f"{n_tr} drawn from the official train file(s), seed {seed}",
                "val": f"{n_val} drawn from the official train file(s), seed {seed}",
                "test": f"the official test file(s) {', '.join(test_files)}" + (
                    f", without the {len(overlap)} structures also in the train file(s)"
                    if overlap else "")}
    else:
        structures = pools["all"]
        n = len(structures)
        perm = rng.permutation(n)
        n_te = n_test if n_test is not None else max(1, n // 10)
        n_tr = n - n_val - n_te if n_train is None else n_train
        if n_tr <= 0 or n_tr + n_val + n_te > n:
            raise DataError(f"cannot split {n} structures into {n_tr}/{n_val}/{n_te}")
        splits = {"train": np.sort(perm[:n_tr]), "val": np.sort(perm[n_tr:n_tr + n_val]),
                  "test": np.sort(perm[n_tr + n_val:n_tr + n_val + n_te])}
        desc = {k: f"random, seed {seed}" for k in splits}
    provenance = "converted by ase_so3 from: " + "; ".join(sources)
    write_dataset(output, structures, splits, provenance=provenance, split_descriptions=desc)
    return {k: len(v) for k, v in splits.items()}


def hdf5_to_extxyz(path, output, split: str | None = None) -> int:
    """Write structures (all, or one split) to extxyz with REF_* keys; returns the count."""
    from ase.io import write
    ds = HDF5Dataset(path)
    indices = ds.split(split) if split else np.arange(len(ds))
    images = []
    for i in indices:
        s = ds[int(i)]
        atoms = s.to_atoms()
        atoms.calc = None
        atoms.info["REF_energy"] = float(s.energy)
        atoms.arrays["REF_forces"] = np.array(s.forces)
        if s.stress is not None:
            from ase.stress import full_3x3_to_voigt_6_stress
            atoms.info["REF_stress"] = full_3x3_to_voigt_6_stress(s.stress)
        atoms.info["config_type"] = split or "all"
        atoms.info["ase_so3_index"] = int(i)
        images.append(atoms)
    write(output, images, format="extxyz")
    ds.close()
    return len(images)
