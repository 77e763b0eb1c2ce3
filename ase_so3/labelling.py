"""DFT labels for new structures: :class:`PySCFCalculator`, an ASE calculator that computes
Kohn-Sham DFT energies and forces with PySCF (the optional ``dft`` extra), by default at
PBE/def2-SVP, the level of theory of revised MD17, so its labels can be mixed with rMD17 data.

    from ase_so3.labelling import PySCFCalculator
    atoms.calc = PySCFCalculator()                 # PBE/def2-SVP, grid level 3
    energy, forces = atoms.get_potential_energy(), atoms.get_forces()   # eV, eV/Å

Any other ASE calculator can label structures just as well; this one records its level of theory
in :meth:`level_of_theory` for the data set's provenance. Molecules only (no periodic cells).
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
