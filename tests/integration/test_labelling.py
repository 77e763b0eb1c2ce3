"""The PySCF labeller (extra ``dft``): the ASE calculator contract, forces that are the energy's
derivative, and labels that reproduce revised MD17's own (PBE/def2-SVP)."""

import numpy as np
import pytest
from ase import Atoms, units
from ase.build import molecule

pytest.importorskip("pyscf", reason="the labeller needs PySCF (pip install 'ase_so3[dft]')")

from ase_so3.errors import ConfigError  # noqa: E402
from ase_so3.labelling import PySCFCalculator  # noqa: E402
from tests.conftest import RMD17  # noqa: E402


def test_forces_are_the_derivative_of_the_energy():
    water = molecule("H2O")
    water.positions[0] += [0.05, -0.03, 0.02]  # off the minimum: forces of a few eV/Å
    water.calc = PySCFCalculator(basis="sto-3g", grid_level=2, conv_tol=1e-11)
    forces = water.get_forces()
    assert np.abs(forces).max() > 0.1
    h, numeric = 1e-3, np.zeros(3)
    for axis in range(3):
        energies = []
        for step in (h, -h):
            moved = water.copy()
            moved.positions[1, axis] += step
            moved.calc = PySCFCalculator(basis="sto-3g", grid_level=2, conv_tol=1e-11)
            energies.append(moved.get_potential_energy())
        numeric[axis] = -(energies[0] - energies[1]) / (2 * h)
    # analytic DFT gradients leave out the grid's own response: agreement to a few meV/Å
    np.testing.assert_allclose(forces[1], numeric, atol=5e-3)
    assert water.calc.results["scf_cycles"] > 0 and "PBE/sto-3g" in water.calc.level_of_theory()
    assert water.calc.todict()["basis"] == "sto-3g"


def test_labels_reproduce_an_rmd17_structure():
    """PBE/def2-SVP on an rMD17 ethanol test structure: forces within a few meV/Å of the
    dataset's labels (computed with ORCA), energy up to a constant offset of meV."""
    data = np.load(RMD17 / "rmd17_ethanol_test_01.npz")
    kcal = units.kcal / units.mol
    atoms = Atoms(numbers=data["nuclear_charges"], positions=data["coords"][0])
    atoms.calc = PySCFCalculator()
    forces_mae = np.abs(atoms.get_forces() - data["forces"][0] * kcal).mean()
    offset = atoms.get_potential_energy() - data["energies"][0] * kcal
    assert forces_mae < 5e-3, forces_mae  # eV/Å
    assert abs(offset) < 0.05, offset  # eV


def test_bad_settings_and_periodic_cells_are_refused():
    with pytest.raises(ConfigError, match="grid_level must be an integer from 0 to 9"):
        PySCFCalculator(grid_level=12)
    cell = Atoms("H2", positions=[[0, 0, 0], [0.74, 0, 0]], cell=[5, 5, 5], pbc=True)
    cell.calc = PySCFCalculator(basis="sto-3g")
    with pytest.raises(ConfigError, match="labels molecules"):
        cell.get_potential_energy()
