"""compile=True: the compiled potential gives the eager energies, forces and stresses."""

import numpy as np
import pytest

from ase_so3.calculator import SO3Calculator
from tests.conftest import make_model


def _compare(spec, structures, **overrides):
    from torch._dynamo.utils import counters
    counters.clear()
    model = make_model(spec, **overrides)
    eager = SO3Calculator(model)
    compiled = SO3Calculator(model, compile=True)
    for atoms in structures:  # different sizes: dynamic shapes, no wrong reuse of a graph
        ref, got = atoms.copy(), atoms.copy()
        ref.calc, got.calc = eager, compiled
        assert abs(got.get_potential_energy() - ref.get_potential_energy()) < 1e-10
        np.testing.assert_allclose(got.get_forces(), ref.get_forces(), atol=1e-10, rtol=0)
        if atoms.pbc.all():
            np.testing.assert_allclose(got.get_stress(), ref.get_stress(), atol=1e-10, rtol=0)
    assert counters["stats"]["unique_graphs"] >= 1  # dynamo really compiled the model body


def test_compiled_escn_equals_eager(small_cell, chiral):
    _compare("escn", [small_cell, chiral, small_cell.repeat((2, 1, 1))], lmax=1, mmax=1,
             channels=4, num_layers=1)


@pytest.mark.slow
def test_compiled_equals_eager_every_model(model_spec, small_cell, chiral):
    _compare(model_spec, [small_cell, chiral])
