"""DFT labels for new structures: :class:`PySCFCalculator`, an ASE calculator that computes
Kohn-Sham DFT energies and forces with PySCF (the optional ``dft`` extra), by default at
PBE/def2-SVP, the level of theory of revised MD17, so its labels can be mixed with rMD17 data.

    from ase_so3.labelling import PySCFCalculator
    atoms.calc = PySCFCalculator()                 # PBE/def2-SVP, grid level 3
    energy, forces = atoms.get_potential_energy(), atoms.get_forces()   # eV, eV/Å

Any other ASE calculator can label structures just as well (:func:`make_labeller`); this one
records its level of theory in :meth:`level_of_theory` for the data set's provenance. Molecules
only (no periodic cells). :func:`sample_and_label` (``ase-so3 label``) makes a labelled data set
from one structure or a trajectory; :func:`label_images` labels frames resumably.
"""

from __future__ import annotations

import time

import numpy as np
from ase import units
from ase.calculators.calculator import Calculator, all_changes

from ase_so3.errors import ASESO3Error, ConfigError, UnavailableError


class LabellingError(ASESO3Error, RuntimeError):
    """The electronic structure calculation did not give a label (an SCF that did not
    converge)."""


class PySCFCalculator(Calculator):
    """Restricted (closed shell) or unrestricted Kohn-Sham DFT with PySCF.

    Parameters: ``xc`` (functional, default ``"pbe"``), ``basis`` (``"def2-svp"``),
    ``grid_level`` (PySCF's integration grid level, 0-9; 3 is PySCF's default), ``conv_tol``
    (SCF energy tolerance, Hartree), ``max_cycle``, ``charge`` and ``spin`` (2S; 0: restricted),
    ``threads`` (PySCF's OpenMP threads; None leaves them as they are).
    ``results["scf_cycles"]`` and ``results["seconds"]`` say what a label cost.
    """

    implemented_properties = ["energy", "free_energy", "forces"]
    default_parameters = {"xc": "pbe", "basis": "def2-svp", "grid_level": 3, "conv_tol": 1e-9,
                          "max_cycle": 100, "charge": 0, "spin": 0, "threads": None}

    def __init__(self, **kwargs):
        try:
            import pyscf  # noqa: F401
        except ImportError as exc:
            raise UnavailableError("PySCFCalculator needs PySCF: pip install 'ase_so3[dft]' "
                                   "(or pip install pyscf)") from exc
        super().__init__(**kwargs)
        level = self.parameters["grid_level"]
        if not (isinstance(level, int) and 0 <= level <= 9):
            raise ConfigError(f"grid_level must be an integer from 0 to 9, got {level!r}")

    def level_of_theory(self) -> str:
        """E.g. ``"PBE/def2-SVP (PySCF 2.14.0, grid level 3, conv_tol 1e-09)"``."""
        import pyscf
        p = self.parameters
        return (f"{p['xc'].upper()}/{p['basis']} (PySCF {pyscf.__version__}, grid level "
                f"{p['grid_level']}, conv_tol {p['conv_tol']:g})").replace("def2-svp", "def2-SVP")

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        from pyscf import dft, gto, lib
        if self.atoms.pbc.any():
            raise ConfigError("PySCFCalculator labels molecules; this structure is periodic "
                              f"(pbc={self.atoms.pbc.tolist()})")
        p = self.parameters
        if p["threads"]:
            lib.num_threads(int(p["threads"]))
        start = time.perf_counter()
        mol = gto.M(atom=list(zip(self.atoms.get_chemical_symbols(),
                                  self.atoms.positions.tolist())),
                    basis=p["basis"], unit="Angstrom", charge=p["charge"], spin=p["spin"],
                    verbose=0)
        mf = (dft.RKS(mol) if p["spin"] == 0 else dft.UKS(mol))
        mf.xc, mf.conv_tol, mf.max_cycle = p["xc"], p["conv_tol"], p["max_cycle"]
        mf.grids.level = p["grid_level"]
        cycles = []
        mf.callback = lambda env: cycles.append(env.get("cycle"))
        energy = mf.kernel()
        if not mf.converged:
            raise LabellingError(
                f"the SCF of {self.atoms.get_chemical_formula()} did not converge in "
                f"{p['max_cycle']} cycles; raise max_cycle or check the structure (atoms too "
                "close, a wrong charge or spin)")
        gradient = mf.nuc_grad_method().kernel()  # Hartree/Bohr
        self.results = {"energy": float(energy) * units.Hartree,
                        "free_energy": float(energy) * units.Hartree,
                        "forces": -np.asarray(gradient) * units.Hartree / units.Bohr,
                        "scf_cycles": len(cycles), "seconds": time.perf_counter() - start}


def make_labeller(name: str, options: dict | None = None):
    """An ASE calculator by name: ``pyscf`` (PBE/def2-SVP), ``emt`` (ASE's EMT, for tests), or
    ``package.module:Class``."""
    options = dict(options or {})
    if name == "pyscf":
        return PySCFCalculator(**options)
    if name == "emt":
        from ase.calculators.emt import EMT
        return EMT(**options)
    if ":" in name:
        import importlib
        module, cls = name.split(":", 1)
        return getattr(importlib.import_module(module), cls)(**options)
    raise ConfigError(f"unknown labeller {name!r}: use pyscf, emt or package.module:Class")


def level_of_theory(calc) -> str:
    """What the data set records of a labeller: its own description, or its class and options."""
    if hasattr(calc, "level_of_theory"):
        return calc.level_of_theory()
    params = ", ".join(f"{k}={v}" for k, v in sorted(calc.todict().items()))
    return f"{type(calc).__name__}({params})"


def label_images(images, calc, path) -> list:
    """Label ``images`` with the ASE calculator ``calc``, each written to the extxyz file ``path``
    as soon as it is computed; images already there (an interrupted run) are read back, not
    computed again. Returns the labelled images (energies and forces attached)."""
    from pathlib import Path

    from ase.io import read, write
    path = Path(path)
    done = read(path, index=":") if path.is_file() and path.stat().st_size else []
    images = list(images)
    for k, old in enumerate(done):
        if k >= len(images) or len(old) != len(images[k]) or not np.allclose(
                old.positions, images[k].positions, atol=1e-6):
            raise ConfigError(f"{path} holds labels of other structures (frame {k} differs from "
                              "the one to label now); move it away to label these, or repeat "
                              "the command that wrote it to go on with it")
    for atoms in images[len(done):]:
        atoms = atoms.copy()
        atoms.calc = calc
        atoms.get_forces()
        write(path, atoms, format="extxyz", append=True)
        done.append(read(path, index=-1))
    return done


def sample_and_label(structure, output, labeller: str = "pyscf", options: dict | None = None,
                     count: int = 20, rattle: float = 0.05, every: int = 1, val: int = 0,
                     test: int = 0, seed: int = 0) -> dict:
    """A labelled HDF5 data set from nothing: ``count`` copies of a structure with Gaussian
    displacements of ``rattle`` Å (``rattle=0``: every ``every``-th frame of the file as it is),
    labelled by ``labeller`` (:func:`make_labeller`), split into train / ``val`` / ``test`` in a
    seeded order. Labels go to ``<output>.labels.extxyz`` first, so an interrupted run resumes."""
    from pathlib import Path

    from ase.io import read

    from ase_so3.md import load_structure
    from ase_so3.training.hdf5 import Structure, write_dataset
    if Path(str(structure)).is_file():
        frames = read(structure, index=":")
    else:
        frames = [load_structure(structure)]
    rng = np.random.default_rng(seed)
    if rattle > 0:
        base = frames[0]
        frames = []
        for _ in range(count):
            a = base.copy()
            a.positions = a.positions + rng.normal(scale=rattle, size=a.positions.shape)
            frames.append(a)
    else:
        frames = frames[::every]
    if val + test >= len(frames):
        raise ConfigError(f"{len(frames)} structures cannot give {val} validation and {test} "
                          "test structures and a training set")
    calc = make_labeller(labeller, options)
    level = level_of_theory(calc)
    labelled = label_images(frames, calc, f"{output}.labels.extxyz")
    structs = [Structure.from_atoms(a, level_of_theory=level) for a in labelled]
    order = np.random.default_rng([seed, 1]).permutation(len(structs))
    splits = {"val": order[:val], "test": order[val:val + test], "train": order[val + test:]}
    how = (f"{len(structs)} copies of {structure} with Gaussian displacements of {rattle} Å"
           if rattle > 0 else f"every {every}-th frame of {structure}")
    write_dataset(output, structs, {k: v for k, v in splits.items() if len(v)},
                  provenance=f"{how}, labelled with {level} (seed {seed})",
                  split_descriptions={k: f"seeded permutation (seed {seed})" for k in splits})
    return {k: len(v) for k, v in splits.items()} | {"level_of_theory": level}
