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
    /structures/has_energy bool    [S]       optional, default all true: which structures carry
    /structures/has_forces bool    [S]       an energy / forces label (missing ones stored NaN)
    /structures/level      int32   [S]       optional: index into the root attribute
                                             levels_of_theory (JSON list of strings) naming
                                             how each structure was labelled; -1 unrecorded
    /splits/<name>         int64   [k]       structure indices; attrs: description

Every stored label is finite: writing refuses NaN and infinities, and :meth:`HDF5Dataset.check`
(run when a split is opened for training or evaluation) names the file, split, structure and
field of any that a hand-made file holds.

Reading is lazy (only the requested structures are read), and each process (DataLoader worker)
opens its own handle. Files are written atomically.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from ase_so3.errors import ASESO3Error, DataError, UnknownNameError
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
    energy: float | None  # None: no energy label
    forces: np.ndarray | None  # None: no force labels
    cell: np.ndarray = field(default_factory=lambda: np.zeros((3, 3)))
    pbc: np.ndarray = field(default_factory=lambda: np.zeros(3, dtype=bool))
    stress: np.ndarray | None = None
    weight: float = 1.0
    level_of_theory: str = ""  # how the labels were computed ("" if not recorded)

    def non_finite(self) -> list[str]:
        """The fields (positions, cell, energy, forces, stress) holding NaN or infinities."""
        fields = {"positions": self.positions, "cell": self.cell, "energy": self.energy,
                  "forces": self.forces, "stress": self.stress}
        return [k for k, v in fields.items() if v is not None and not np.all(np.isfinite(v))]

    def to_atoms(self):
        from ase import Atoms
        from ase.calculators.singlepoint import SinglePointCalculator
        atoms = Atoms(numbers=self.numbers, positions=self.positions, cell=self.cell, pbc=self.pbc)
        results = {}
        if self.energy is not None:
            results["energy"] = float(self.energy)
        if self.forces is not None:
            results["forces"] = np.array(self.forces)
        if self.stress is not None:
            from ase.stress import full_3x3_to_voigt_6_stress
            results["stress"] = full_3x3_to_voigt_6_stress(self.stress)
        if results:
            atoms.calc = SinglePointCalculator(atoms, **results)
        return atoms

    @classmethod
    def from_atoms(cls, atoms, energy=None, forces=None, stress=None, weight: float = 1.0,
                   level_of_theory: str = ""):
        """Labels from the arguments, else from the results the attached calculator holds
        (none computed here); a label found in neither stays missing (None)."""
        results = getattr(atoms.calc, "results", None) or {}
        energy = results.get("energy") if energy is None else energy
        forces = results.get("forces") if forces is None else forces
        if stress is None and "stress" in results:
            from ase.stress import voigt_6_to_full_3x3_stress
            stress = np.asarray(results["stress"])
            stress = voigt_6_to_full_3x3_stress(stress) if stress.shape == (6,) else stress
        return cls(numbers=np.asarray(atoms.numbers), positions=atoms.get_positions(),
                   energy=None if energy is None else float(energy),
                   forces=None if forces is None else np.asarray(forces, dtype=np.float64),
                   cell=np.asarray(atoms.cell.array, dtype=np.float64),
                   pbc=np.asarray(atoms.pbc, dtype=bool),
                   stress=None if stress is None else np.asarray(stress, dtype=np.float64),
                   weight=weight, level_of_theory=level_of_theory)


def write_dataset(path, structures: list[Structure], splits: dict[str, np.ndarray] | None = None,
                  provenance: str = "", split_descriptions: dict[str, str] | None = None) -> None:
    """Write structures (and named splits) to ``path`` atomically. Labels may be missing per
    structure and field (energy, forces); every value written must be finite."""
    if not structures:
        raise DataError("no structures to write")
    counts = np.array([len(s.numbers) for s in structures], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(counts)])
    has_stress = [s.stress is not None for s in structures]
    if any(has_stress) and not all(has_stress):
        raise DataError("either every structure has a stress or none has")
    for k, s in enumerate(structures):
        n = len(s.numbers)
        if s.positions.shape != (n, 3) or (s.forces is not None and s.forces.shape != (n, 3)):
            raise DataError(f"structure {k}: positions/forces must be [n_atoms, 3]")
        bad = s.non_finite()
        if bad:
            raise DataError(f"structure {k}: {', '.join(bad)} hold NaN or infinite values; "
                            "fix or drop this structure before writing")
    levels = sorted({s.level_of_theory for s in structures} - {""})
    has_energy = np.array([s.energy is not None for s in structures])
    has_forces = np.array([s.forces is not None for s in structures])
    nan3 = [np.full((len(s.numbers), 3), np.nan) for s in structures]
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
            a.create_dataset("forces", data=np.concatenate(
                [s.forces if s.forces is not None else m for s, m in zip(structures, nan3)]))
            g = f.create_group("structures")
            g.create_dataset("offsets", data=offsets)
            g.create_dataset("energy", data=np.array(
                [s.energy if s.energy is not None else np.nan for s in structures], dtype=float))
            g.create_dataset("cell", data=np.stack([s.cell for s in structures]))
            g.create_dataset("pbc", data=np.stack([s.pbc for s in structures]))
            g.create_dataset("weight", data=np.array([s.weight for s in structures]))
            if all(has_stress):
                g.create_dataset("stress", data=np.stack([s.stress for s in structures]))
            if not has_energy.all():
                g.create_dataset("has_energy", data=has_energy)
            if not has_forces.all():
                g.create_dataset("has_forces", data=has_forces)
            if levels:
                f.attrs["levels_of_theory"] = json.dumps(levels)
                g.create_dataset("level", data=np.array(
                    [levels.index(s.level_of_theory) if s.level_of_theory else -1
                     for s in structures], dtype=np.int32))
            sp = f.create_group("splits")
            for name, idx in (splits or {}).items():
                idx = np.asarray(idx, dtype=np.int64)
                if len(idx) and (idx.min() < 0 or idx.max() >= len(structures)):
                    raise DataError(f"split {name!r} has indices outside 0..{len(structures) - 1}")
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
            self.has_energy = (f["structures/has_energy"][()].astype(bool)
                               if "structures/has_energy" in f else None)  # None: all labelled
            self.has_forces = (f["structures/has_forces"][()].astype(bool)
                               if "structures/has_forces" in f else None)
            self.levels_of_theory = json.loads(f.attrs.get("levels_of_theory", "[]"))
            self._level = f["structures/level"][()] if "structures/level" in f else None

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
        labelled_e = self.has_energy is None or self.has_energy[i]
        labelled_f = self.has_forces is None or self.has_forces[i]
        try:
            return Structure(
                numbers=f["atoms/numbers"][a:b].astype(np.int64),
                positions=f["atoms/positions"][a:b],
                forces=f["atoms/forces"][a:b] if labelled_f else None,
                energy=float(f["structures/energy"][i]) if labelled_e else None,
                cell=f["structures/cell"][i],
                pbc=f["structures/pbc"][i].astype(bool),
                stress=f["structures/stress"][i] if self.has_stress else None,
                weight=float(f["structures/weight"][i]) if "structures/weight" in f else 1.0,
                level_of_theory=(self.levels_of_theory[self._level[i]]
                                 if self._level is not None and self._level[i] >= 0 else ""))
        except OSError as exc:
            raise DatasetFileError(f"{self.path}: structure {i} cannot be read ({exc}); the file "
                                   "is damaged") from exc

    def check(self, indices, split: str | None = None, labels: bool = True) -> None:
        """Raise :class:`DatasetFileError` naming the file, split, structure and field if a
        structure among ``indices`` holds a NaN or infinite value, or (``labels``) lacks its
        energy or force labels."""
        f = self._handle()
        indices = np.asarray(indices, dtype=np.int64)
        where = f" of split {split!r}" if split else ""
        advice = ("fix or drop it in the source data and convert again (`ase-so3 convert` "
                  "refuses non-finite values)")
        if labels:
            for name, mask in (("energy", self.has_energy), ("forces", self.has_forces)):
                if mask is not None and not mask[indices].all():
                    i = int(indices[~mask[indices]][0])
                    n = int((~mask[indices]).sum())
                    raise DatasetFileError(
                        f"{self.path}: structure {i}{where} has no {name} label ({n} structures "
                        f"of the split lack one); training and evaluation need energies and "
                        "forces for every structure: label them or leave them out of the split")
        atom_rows = np.concatenate([np.arange(self.offsets[i], self.offsets[i + 1])
                                    for i in indices]) if len(indices) else np.zeros(0, int)
        per_atom = ["positions"] + (["forces"] if labels else [])
        per_structure = ["cell"] + (["energy"] if labels else []) + (
            ["stress"] if self.has_stress else [])
        for name in per_atom + per_structure:
            group = "atoms" if name in per_atom else "structures"
            data = f[f"{group}/{name}"][()]
            rows = atom_rows if name in per_atom else indices
            values = data[rows].reshape(len(rows), -1)
            bad = ~np.isfinite(values).all(axis=1)
            if name == "forces" and self.has_forces is not None:
                bad &= np.repeat(self.has_forces[indices], np.diff(self.offsets)[indices])
            if name == "energy" and self.has_energy is not None:
                bad &= self.has_energy[indices]
            if bad.any():
                k = int(np.argmax(bad))
                if name in per_atom:
                    s = int(np.searchsorted(self.offsets, rows[k], side="right") - 1)
                    what = f"atom {int(rows[k] - self.offsets[s])} of structure {s}"
                else:
                    what = f"structure {int(rows[k])}"
                raise DatasetFileError(
                    f"{self.path}: {what}{where} has a non-finite {name} value "
                    f"({values[k].tolist()}); {advice}")

    def split(self, name: str) -> np.ndarray:
        if name not in self.split_names:
            raise UnknownNameError(f"{self.path} has no split {name!r}; it has {self.split_names}")
        return self._handle()[f"splits/{name}"][()]

    def split_description(self, name: str) -> str:
        self.split(name)  # the clear error for an unknown split
        return str(self._handle()[f"splits/{name}"].attrs.get("description", ""))

    def all_numbers(self) -> np.ndarray:
        return self._handle()["atoms/numbers"][()]


def append_structures(path, structures: list[Structure], split: str | list | None = None,
                      description: str = "", provenance: str = "") -> np.ndarray:
    """Add labelled structures to the data set at ``path`` and, with ``split`` (one name, or one
    per structure), their indices to that split (created if missing). The whole file is
    rewritten atomically: an interrupted append leaves the old file. Returns the new structures'
    indices."""
    ds = HDF5Dataset(path)
    old = [ds[i] for i in range(len(ds))]
    splits = {name: ds.split(name) for name in ds.split_names}
    descriptions = {name: ds.split_description(name) for name in ds.split_names}
    note = ds.provenance
    ds.close()
    new = np.arange(len(old), len(old) + len(structures), dtype=np.int64)
    names = [split] * len(new) if isinstance(split, str) or split is None else list(split)
    if len(names) != len(new):
        raise DataError(f"{len(names)} split names for {len(new)} structures")
    for name in dict.fromkeys(n for n in names if n is not None):
        mine = new[[n == name for n in names]]
        splits[name] = np.concatenate([splits.get(name, np.zeros(0, np.int64)), mine])
        if description or name not in descriptions:
            descriptions[name] = description
    if provenance:
        note = f"{note}; {provenance}" if note else provenance
    write_dataset(path, old + list(structures), splits, note, descriptions)
    return new
