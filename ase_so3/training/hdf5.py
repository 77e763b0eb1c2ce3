"""The ase_so3 HDF5 data set: many structures of varying size, ragged per-atom arrays.

Schema version 1 (all lengths in Å, energies in eV, forces in eV/Å, stress in eV/Å^3)::

    /                      attrs: format = "ase_so3.dataset", schema_version = 1,
                                  units_energy, units_length, units_forces, units_stress,
                                  provenance (free text: source files, conversions)
    /atoms/positions       float64 [N, 3]
    /atoms/numbers         int32   [N]
    /atoms/forces          float64 [N, 3]
    /structures/offsets    int64   [S + 1]   atoms of structure s: offsets[s]:offsets[s+1]
    /structures/energy     float64 [S]
    /structures/cell       float64 [S, 3, 3] rows are lattice vectors (zeros for molecules)
    /structures/pbc        bool    [S, 3]
    /structures/stress     float64 [S, 3, 3] optional
    /structures/weight     float64 [S]       optional, default 1
    /splits/<name>         int64   [k]       structure indices; attrs: description

Reading is lazy (only the requested structures are read), and each process (DataLoader worker)
opens its own handle. Files are written atomically.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from ase_so3.errors import ASESO3Error
from ase_so3.io_utils import atomic_path

FORMAT = "ase_so3.dataset"
SCHEMA_VERSION = 1
UNITS = {"units_energy": "eV", "units_length": "Å", "units_forces": "eV/Å",
         "units_stress": "eV/Å^3"}


class DatasetFileError(ASESO3Error, ValueError):
    """An HDF5 file that is not a valid ase_so3 data set."""


@dataclass
class Structure:
    """One structure with its labels (eV, Å)."""

    numbers: np.ndarray
    positions: np.ndarray
    energy: float
    forces: np.ndarray
    cell: np.ndarray = field(default_factory=lambda: np.zeros((3, 3)))
    pbc: np.ndarray = field(default_factory=lambda: np.zeros(3, dtype=bool))
    stress: np.ndarray | None = None
    weight: float = 1.0

    def to_atoms(self):
        from ase import Atoms
        from ase.calculators.singlepoint import SinglePointCalculator
        atoms = Atoms(numbers=self.numbers, positions=self.positions, cell=self.cell, pbc=self.pbc)
        results = {"energy": float(self.energy), "forces": np.array(self.forces)}
        if self.stress is not None:
            from ase.stress import full_3x3_to_voigt_6_stress
            results["stress"] = full_3x3_to_voigt_6_stress(self.stress)
        atoms.calc = SinglePointCalculator(atoms, **results)
        return atoms

    @classmethod
    def from_atoms(cls, atoms, energy=None, forces=None, stress=None, weight: float = 1.0):
        """Labels from the arguments, else from the attached calculator's results."""
        calc = atoms.calc
        if energy is None:
            if calc is None:
                raise ValueError("structure has no energy: attach results or pass energy=")
            energy = atoms.get_potential_energy()
        if forces is None:
            if calc is None:
                raise ValueError("structure has no forces: attach results or pass forces=")
            forces = atoms.get_forces()
        if stress is None and calc is not None and "stress" in calc.results:
            from ase.stress import voigt_6_to_full_3x3_stress
            stress = voigt_6_to_full_3x3_stress(calc.results["stress"])
        return cls(numbers=np.asarray(atoms.numbers), positions=atoms.get_positions(),
                   energy=float(energy), forces=np.asarray(forces, dtype=np.float64),
                   cell=np.asarray(atoms.cell.array, dtype=np.float64),
                   pbc=np.asarray(atoms.pbc, dtype=bool),
                   stress=None if stress is None else np.asarray(stress, dtype=np.float64),
                   weight=weight)


def write_dataset(path, structures: list[Structure], splits: dict[str, np.ndarray] | None = None,
                  provenance: str = "", split_descriptions: dict[str, str] | None = None) -> None:
    """Write structures (and named splits) to ``path`` atomically."""
    if not structures:
        raise ValueError("no structures to write")
    counts = np.array([len(s.numbers) for s in structures], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(counts)])
    has_stress = [s.stress is not None for s in structures]
    if any(has_stress) and not all(has_stress):
        raise ValueError("either every structure has a stress or none has")
    for k, s in enumerate(structures):
        if s.positions.shape != (len(s.numbers), 3) or s.forces.shape != (len(s.numbers), 3):
            raise ValueError(f"structure {k}: positions/forces must be [n_atoms, 3]")
        if not (np.isfinite(s.energy) and np.all(np.isfinite(s.positions))
                and np.all(np.isfinite(s.forces))):
            raise ValueError(f"structure {k} has NaN or infinite values")
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w") as f:
            f.attrs["format"] = FORMAT
            f.attrs["schema_version"] = SCHEMA_VERSION
            for k, v in UNITS.items():
                f.attrs[k] = v
            f.attrs["provenance"] = provenance
            a = f.create_group("atoms")
            a.create_dataset("positions", data=np.concatenate([s.positions for s in structures]))
            a.create_dataset("numbers", data=np.concatenate([s.numbers for s in structures])
                             .astype(np.int32))
            a.create_dataset("forces", data=np.concatenate([s.forces for s in structures]))
            g = f.create_group("structures")
            g.create_dataset("offsets", data=offsets)
            g.create_dataset("energy", data=np.array([s.energy for s in structures]))
            g.create_dataset("cell", data=np.stack([s.cell for s in structures]))
            g.create_dataset("pbc", data=np.stack([s.pbc for s in structures]))
            g.create_dataset("weight", data=np.array([s.weight for s in structures]))
            if all(has_stress):
                g.create_dataset("stress", data=np.stack([s.stress for s in structures]))
            sp = f.create_group("splits")
            for name, idx in (splits or {}).items():
                idx = np.asarray(idx, dtype=np.int64)
                if len(idx) and (idx.min() < 0 or idx.max() >= len(structures)):
                    raise ValueError(f"split {name!r} has indices outside 0..{len(structures) - 1}")
                d = sp.create_dataset(name, data=idx)
                d.attrs["description"] = (split_descriptions or {}).get(name, "")


class HDF5Dataset:
    """Lazy reader. ``len(ds)``, ``ds[i] -> Structure``, ``ds.split("train") -> indices``."""

    REQUIRED = ("atoms/positions", "atoms/numbers", "atoms/forces", "structures/offsets",
                "structures/energy", "structures/cell", "structures/pbc")

    def __init__(self, path):
        self.path = Path(path)
        self._file = None
        self._pid = None
        with self._open_checked() as f:
            self.offsets = f["structures/offsets"][()]
            self.num_structures = len(self.offsets) - 1
            self.split_names = sorted(f["splits"].keys()) if "splits" in f else []
            self.has_stress = "structures/stress" in f
            self.provenance = str(f.attrs.get("provenance", ""))

    def _open_checked(self) -> h5py.File:
        if not self.path.is_file():
            raise DatasetFileError(f"{self.path}: no such file")
        try:
            f = h5py.File(self.path, "r")
        except OSError as exc:
            raise DatasetFileError(
                f"{self.path} cannot be opened as HDF5 ({exc}); it may be truncated or not an "
                "HDF5 file. Re-create it with `ase-so3 convert`") from exc
        try:
            self._validate(f)
        except BaseException:
            f.close()
            raise
        return f

    def _validate(self, f: h5py.File) -> None:
        if f.attrs.get("format") != FORMAT:
            raise DatasetFileError(f"{self.path} is HDF5 but not an ase_so3 data set (attribute "
                                   f"format={f.attrs.get('format')!r}); convert it with "
                                   "`ase-so3 convert`")
        version = int(f.attrs.get("schema_version", -1))
        if version != SCHEMA_VERSION:
            raise DatasetFileError(f"{self.path} has schema version {version}; this ase_so3 reads "
                                   f"version {SCHEMA_VERSION}")
        missing = [k for k in self.REQUIRED if k not in f]
        if missing:
            raise DatasetFileError(f"{self.path} is missing {missing}; the file is incomplete")
        try:
            offsets = f["structures/offsets"][()]
            n_atoms = f["atoms/numbers"].shape[0]
            n_struct = f["structures/energy"].shape[0]
            ok = (offsets.ndim == 1 and len(offsets) == n_struct + 1 and offsets[0] == 0
                  and offsets[-1] == n_atoms and np.all(np.diff(offsets) >= 0)
                  and f["atoms/positions"].shape == (n_atoms, 3)
                  and f["atoms/forces"].shape == (n_atoms, 3)
                  and f["structures/cell"].shape == (n_struct, 3, 3)
                  and f["structures/pbc"].shape == (n_struct, 3))
        except (OSError, KeyError) as exc:
            raise DatasetFileError(f"{self.path} is damaged ({exc})") from exc
        if not ok:
            raise DatasetFileError(f"{self.path}: array shapes are inconsistent with the offsets "
                                   "(damaged or hand-edited file)")

    def _handle(self) -> h5py.File:
        if self._file is None or self._pid != os.getpid():  # one handle per process
            self._file = h5py.File(self.path, "r")
            self._pid = os.getpid()
        return self._file

    def close(self) -> None:
        if self._file is not None and self._pid == os.getpid():
            self._file.close()
        self._file = None

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_file"] = None
        state["_pid"] = None
        return state

    def __len__(self) -> int:
        return self.num_structures

    def __getitem__(self, i: int) -> Structure:
        if not -self.num_structures <= i < self.num_structures:
            raise IndexError(i)
        i = int(i) % self.num_structures
        f = self._handle()
        a, b = int(self.offsets[i]), int(self.offsets[i + 1])
        try:
            return Structure(
                numbers=f["atoms/numbers"][a:b].astype(np.int64),
                positions=f["atoms/positions"][a:b], forces=f["atoms/forces"][a:b],
                energy=float(f["structures/energy"][i]), cell=f["structures/cell"][i],
                pbc=f["structures/pbc"][i].astype(bool),
                stress=f["structures/stress"][i] if self.has_stress else None,
                weight=float(f["structures/weight"][i]) if "structures/weight" in f else 1.0)
        except OSError as exc:
            raise DatasetFileError(f"{self.path}: structure {i} cannot be read ({exc}); the file "
                                   "is damaged") from exc

    def split(self, name: str) -> np.ndarray:
        if name not in self.split_names:
            raise KeyError(f"{self.path} has no split {name!r}; it has {self.split_names}")
        return self._handle()[f"splits/{name}"][()]

    def all_numbers(self) -> np.ndarray:
        return self._handle()["atoms/numbers"][()]
