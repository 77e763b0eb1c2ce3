"""The ASE Calculator contract, dynamics and optimisers, dtypes, devices, plugin discovery."""

import warnings

import numpy as np
import pytest
import torch
from ase.calculators.calculator import PropertyNotImplementedError
from ase.md.verlet import VelocityVerlet
from ase import units
from ase.optimize import BFGS

from ase_so3 import SO3Calculator
from tests.conftest import make_model


@pytest.fixture
def calc():
    return SO3Calculator(make_model("tfn"))


def test_properties_and_shapes(calc, ethanol, small_cell):
    ethanol.calc = calc
    e = ethanol.get_potential_energy()
    assert isinstance(e, float)
    assert ethanol.get_forces().shape == (9, 3)
    assert ethanol.get_potential_energies().shape == (9,)
    assert np.isclose(ethanol.get_potential_energies().sum(), e, atol=1e-10)
    assert ethanol.get_potential_energy(force_consistent=True) == e  # free_energy
    assert np.abs(ethanol.get_forces().sum(0)).max() < 1e-10  # no net force
    with pytest.raises(PropertyNotImplementedError):
        ethanol.get_stress()  # molecules have no stress
    small_cell.calc = SO3Calculator(make_model("tfn"))
    assert small_cell.get_stress().shape == (6,)
    assert small_cell.get_stress(voigt=False).shape == (3, 3)


def test_results_are_cached_and_invalidated(calc, ethanol, monkeypatch):
    ethanol.calc = calc
    calls = []
    original = calc.calculate
    monkeypatch.setattr(calc, "calculate", lambda *a, **k: (calls.append(1), original(*a, **k)))
    e0 = ethanol.get_potential_energy()
    f0 = ethanol.get_forces()
    assert len(calls) == 1  # forces came from the same evaluation
    assert calc.check_state(ethanol) == []
    ethanol.positions[0, 0] += 0.05
    assert "positions" in calc.check_state(ethanol)
    e1 = ethanol.get_potential_energy()
    assert len(calls) == 2 and e1 != e0
    ethanol.positions[0, 0] -= 0.05
    assert np.allclose(ethanol.get_forces(), f0, atol=1e-12)
    calc.reset()
    assert calc.results == {}
    ethanol.numbers[1] = 8  # C -> O is a system change too
    ethanol.get_potential_energy()
    assert len(calls) == 4


def test_works_with_md_and_optimizer(ethanol):
    ethanol.calc = SO3Calculator(make_model("escn", scale=30.0))
    ethanol.rattle(0.05, seed=0)
    opt = BFGS(ethanol, logfile=None, maxstep=0.02)
    e0 = ethanol.get_potential_energy()
    assert np.abs(ethanol.get_forces()).max() > 1e-2
    opt.run(fmax=1e-3, steps=5)
    assert ethanol.get_potential_energy() < e0
    dyn = VelocityVerlet(ethanol, timestep=0.5 * units.fs)
    dyn.run(5)
    assert np.isfinite(ethanol.get_positions()).all()


def test_float32_and_float64_calculators_coexist(ethanol):
    default = torch.get_default_dtype()
    model = make_model("se3_transformer-r")
    c64 = SO3Calculator(model, dtype="float64")
    c32 = SO3Calculator(model, dtype="float32")
    a64, a32 = ethanol.copy(), ethanol.copy()
    a64.calc, a32.calc = c64, c32
    e64, e32 = a64.get_potential_energy(), a32.get_potential_energy()
    assert e64 != e32 and abs(e64 - e32) < 1e-4 * max(1.0, abs(e64))
    assert np.abs(a64.get_forces() - a32.get_forces()).max() < 1e-3
    assert next(c32.potential.parameters()).dtype == torch.float32
    assert next(c64.potential.parameters()).dtype == torch.float64
    assert next(model.parameters()).dtype == torch.float64  # the caller's model is untouched
    assert torch.get_default_dtype() == default
    a64.positions[0] += 0.01  # one atom: a translation of all of them leaves E exactly unchanged
    assert a64.get_potential_energy() != e64 and a32.get_potential_energy() == e32


def test_loads_from_file_and_by_bad_name(tmp_path, ethanol):
    model = make_model("escn")
    model.save(tmp_path / "m.pt")
    ethanol.calc = SO3Calculator(str(tmp_path / "m.pt"))
    ref = ethanol.copy()
    ref.calc = SO3Calculator(model)
    assert ethanol.get_potential_energy() == ref.get_potential_energy()
    with pytest.raises(ValueError, match="neither a potential file nor a shipped potential"):
        SO3Calculator("no-such-potential")


def test_todict_records_the_options_and_trajectories_keep_them(ethanol, tmp_path):
    """ASE's conventions: the calculator's options are its parameters, so todict() and a
    trajectory written with it record potential, dtype and device; they cannot change later."""
    from ase.io import Trajectory, read
    model = make_model("escn")
    calc = SO3Calculator(model, dtype="float32", skin=0.3)
    params = calc.todict()
    assert params["dtype"] == "float32" and params["device"] == "cpu" and params["skin"] == 0.3
    assert params["potential"]["model"] == "escn"
    assert params["potential"]["config"]["lmax"] == model.config.lmax
    ethanol.calc = calc
    ethanol.get_forces()
    with Trajectory(tmp_path / "t.traj", "w") as traj:
        traj.write(ethanol)
    assert read(tmp_path / "t.traj").calc.parameters["dtype"] == "float32"
    with pytest.raises(ValueError, match="dtype of an SO3Calculator cannot change"):
        calc.set(dtype="float64")
    calc.set(dtype="float32")  # unchanged: allowed, as in ASE


def test_cuda_request_without_cuda_is_a_clear_error():
    if torch.cuda.is_available():
        pytest.skip("CUDA is available here; the CUDA path is exercised by test_cuda_matches_cpu")
    with pytest.raises(RuntimeError, match="CUDA is not available"):
        SO3Calculator(make_model("tfn"), device="cuda")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu(model_spec, ethanol, small_cell):
    model = make_model(model_spec)
    for atoms in (ethanol, small_cell):
        cpu, gpu = atoms.copy(), atoms.copy()
        cpu.calc = SO3Calculator(model, device="cpu")
        gpu.calc = SO3Calculator(model, device="cuda")
        assert abs(cpu.get_potential_energy() - gpu.get_potential_energy()) < 1e-9
        assert np.abs(cpu.get_forces() - gpu.get_forces()).max() < 1e-9


def test_ase_plugin_discovery():
    from importlib.metadata import entry_points
    eps = [ep for ep in entry_points(group="ase.plugins") if ep.value == "ase_so3.ase_plugin"]
    assert eps, "ase_so3 is not registered in the ase.plugins entry-point group (pip install -e .)"
    plugins = pytest.importorskip("ase._4.plugins")
    from ase._4.plugins.plugin import CalculatorPlugin
    ours = [p for p in plugins.plugins if isinstance(p, CalculatorPlugin) and p.name == "so3"]
    assert ours and ours[0].implementation is SO3Calculator


def test_close_atoms_warn(ethanol):
    ethanol.calc = SO3Calculator(make_model("tfn"), min_distance=1.2)
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        ethanol.get_potential_energy()
    assert any("closer than min_distance" in str(x.message) for x in w)


def test_float32_far_from_origin_matches_float64(ethanol):
    model = make_model("escn")
    far = ethanol.copy()
    far.positions += 2.0e4
    ref = ethanol.copy()
    ref.calc = SO3Calculator(model, dtype="float64")
    far.calc = SO3Calculator(model, dtype="float32")
    assert abs(far.get_potential_energy() - ref.get_potential_energy()) < 1e-4
    assert np.abs(far.get_forces() - ref.get_forces()).max() < 1e-4


def test_ase_classic_calculator_lookup_finds_so3():
    from ase.calculators.calculator import get_calculator_class
    assert get_calculator_class("so3") is SO3Calculator
