"""Bad structures and options given to the calculator and the configs: a clear error that
says what to do."""

import numpy as np
import pytest
from ase import Atoms
from ase.calculators.calculator import PropertyNotImplementedError

from ase_so3 import SO3Calculator
from ase_so3.errors import InvalidStructureError, UnknownElementError
from tests.conftest import make_model


@pytest.fixture
def calc():
    return SO3Calculator(make_model("tfn"))


def test_unknown_element(calc):
    atoms = Atoms("CFe", positions=[[0, 0, 0], [1.5, 0, 0]])
    atoms.calc = calc
    with pytest.raises(UnknownElementError, match=r"trained on H, C, O only .* Fe \(Z=26\)"):
        atoms.get_potential_energy()


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_positions(calc, bad):
    atoms = Atoms("CO", positions=[[0, 0, 0], [1.2, bad, 0]])
    atoms.calc = calc
    with pytest.raises(InvalidStructureError, match="NaN or infinite"):
        atoms.get_potential_energy()


def test_pbc_without_cell(calc):
    atoms = Atoms("CO", positions=[[0, 0, 0], [1.2, 0, 0]], pbc=True)
    atoms.calc = calc
    with pytest.raises(InvalidStructureError, match="cell vector is zero.*set atoms.cell"):
        atoms.get_potential_energy()
    flat = Atoms("CO", positions=[[0, 0, 0], [1.2, 0, 0]], cell=[[2, 0, 0], [4, 0, 0], [0, 0, 3]],
                 pbc=True)
    flat.calc = calc
    with pytest.raises(InvalidStructureError, match="volume is zero"):
        flat.get_potential_energy()


def test_coincident_atoms_raise_and_close_atoms_warn(calc):
    atoms = Atoms("COH", positions=[[0, 0, 0], [0, 0, 0], [1.0, 0, 0]])
    atoms.calc = calc
    with pytest.raises(InvalidStructureError, match="same position.*remove the duplicate"):
        atoms.get_potential_energy()
    close = Atoms("CO", positions=[[0, 0, 0], [0.3, 0, 0]])
    close.calc = calc
    with pytest.warns(UserWarning, match="closer than min_distance"):
        assert np.isfinite(close.get_potential_energy())


def test_stress_of_a_non_periodic_structure_says_why():
    calc = SO3Calculator(make_model("escn", channels=4, num_layers=1, lmax=1, mmax=1))
    slab = Atoms("CO", positions=[[0, 0, 5], [0, 0, 6.1]], cell=[6, 6, 12], pbc=[True, True, False])
    slab.calc = calc
    with pytest.raises(PropertyNotImplementedError, match="periodic in all three directions"):
        slab.get_stress()
    assert np.isfinite(slab.get_forces()).all()  # energies and forces still work


def test_invalid_configs():
    from ase_so3.potentials import ESCN, SE3Transformer, TFN
    with pytest.raises(ValueError, match="unknown chemical symbol"):
        TFN(species=["Xx"])
    with pytest.raises(ValueError, match="mmax"):
        ESCN(lmax=2, mmax=3)
    with pytest.raises(ValueError, match="distance_features"):
        SE3Transformer(distance_features="r2")
    with pytest.raises(ValueError, match="cutoff must be positive"):
        TFN(cutoff=-1)
