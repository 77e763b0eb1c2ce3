"""Property-based tests: any structure gives finite, consistent results or a clear error."""

import numpy as np
import pytest
from ase import Atoms
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ase_so3 import SO3Calculator
from ase_so3.errors import InvalidStructureError, UnknownElementError
from tests.conftest import make_model

FUZZ = settings(max_examples=25, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
MODELS = {name: make_model(name, channels=4, num_layers=1, lmax=1, **extra)
          for name, extra in (("tfn", {}), ("escn", {"mmax": 1}))}


@st.composite
def structures(draw):
    n = draw(st.integers(1, 40))
    seed = draw(st.integers(0, 2 ** 31 - 1))
    rng = np.random.default_rng(seed)
    pbc = draw(st.sampled_from([(False,) * 3, (True,) * 3, (True, True, False), (True, False, False)]))
    lengths = draw(st.lists(st.floats(0.7, 9.0), min_size=3, max_size=3))
    skew = draw(st.floats(0.0, 0.6))
    cell = np.diag(lengths) + skew * np.array([[0, 0, 0], [lengths[0], 0, 0], [0.3, lengths[1], 0]])
    offset = draw(st.sampled_from([0.0, 1e3, -5e4]))
    scaled = rng.uniform(size=(n, 3))
    pos = scaled @ cell + offset
    numbers = rng.choice([1, 6, 8], size=n)
    return Atoms(numbers=numbers, positions=pos, cell=cell, pbc=pbc)


def _far_enough(atoms, dmin=0.5):
    if len(atoms) < 2 and not atoms.pbc.any():
        return True
    from ase.neighborlist import neighbor_list
    d = neighbor_list("d", atoms, dmin)
    return len(d) == 0


@pytest.mark.parametrize("name", sorted(MODELS))
@FUZZ
@given(atoms=structures())
def test_random_structures_give_finite_translation_invariant_results(name, atoms):
    calc = SO3Calculator(MODELS[name], min_distance=None)
    atoms.calc = calc
    if not _far_enough(atoms, 1e-6 + 1e-9):
        with pytest.raises(InvalidStructureError):
            atoms.get_potential_energy()
        return
    e = atoms.get_potential_energy()
    f = atoms.get_forces()
    assert np.isfinite(e) and np.isfinite(f).all()
    assert np.abs(f.sum(0)).max() < 1e-8 * max(1.0, np.abs(f).max()) * len(atoms)
    if atoms.pbc.all():
        assert np.isfinite(atoms.get_stress()).all()
    moved = atoms.copy()
    moved.positions += [0.37, -1.1, 2.3]
    moved.calc = SO3Calculator(MODELS[name], min_distance=None)
    assert abs(moved.get_potential_energy() - e) < 1e-8 * max(1.0, abs(e))


@FUZZ
@given(n=st.integers(2, 30), which=st.integers(0, 29), seed=st.integers(0, 1000))
def test_duplicate_positions_are_a_clear_error(n, which, seed):
    rng = np.random.default_rng(seed)
    pos = rng.uniform(0, 6, size=(n, 3))
    pos[which % n] = pos[(which + 1) % n]
    atoms = Atoms(numbers=[6] * n, positions=pos)
    atoms.calc = SO3Calculator(MODELS["tfn"], min_distance=None)
    with pytest.raises(InvalidStructureError, match="same position"):
        atoms.get_potential_energy()


@FUZZ
@given(z=st.integers(1, 118).filter(lambda z: z not in (1, 6, 8)), n=st.integers(1, 10))
def test_unknown_elements_are_a_clear_error(z, n):
    atoms = Atoms(numbers=[z] + [6] * n, positions=np.arange(3 * (n + 1)).reshape(-1, 3) * 0.7)
    atoms.calc = SO3Calculator(MODELS["escn"])
    with pytest.raises(UnknownElementError, match=f"Z={z}"):
        atoms.get_potential_energy()


@FUZZ
@given(bad=st.sampled_from([np.nan, np.inf, -np.inf]), idx=st.integers(0, 8), axis=st.integers(0, 2))
def test_non_finite_positions_are_a_clear_error(bad, idx, axis, ethanol):
    atoms = ethanol.copy()
    atoms.positions[idx, axis] = bad
    atoms.calc = SO3Calculator(MODELS["tfn"])
    with pytest.raises(InvalidStructureError, match="NaN or infinite"):
        atoms.get_potential_energy()
