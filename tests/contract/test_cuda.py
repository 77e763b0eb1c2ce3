"""The CUDA paths: equal to the CPU in float64, compiled equal to eager, batched
equal to one by one, float32 and float64 side by side. Skipped where CUDA is not available (the
CI machine); run on a GPU with ``python -m pytest tests/contract/test_cuda.py``."""

import numpy as np
import pytest
import torch
from ase import units
from ase.md.velocitydistribution import MaxwellBoltzmannDistribution
from ase.md.verlet import VelocityVerlet

from ase_so3.calculator import SO3Calculator
from tests.conftest import make_model

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def _same(a, b, tol):
    assert abs(a.get_potential_energy() - b.get_potential_energy()) < tol
    np.testing.assert_allclose(a.get_forces(), b.get_forces(), atol=tol, rtol=0)
    if a.pbc.all():
        np.testing.assert_allclose(a.get_stress(), b.get_stress(), atol=tol, rtol=0)


def test_cuda_stress_and_partly_periodic_match_cpu(model_spec, small_cell, slab):
    model = make_model(model_spec)
    cpu_calc = SO3Calculator(model, device="cpu")
    gpu_calc = SO3Calculator(model, device="cuda")
    for atoms in (small_cell, slab, small_cell.repeat((2, 2, 1))):
        cpu, gpu = atoms.copy(), atoms.copy()
        cpu.calc, gpu.calc = cpu_calc, gpu_calc
        _same(cpu, gpu, 1e-9)


def test_compiled_cuda_equals_eager_over_md(ethanol, small_cell):
    """``compile=True`` on CUDA: the same energies, forces and stress as eager CUDA at every step
    of a short MD, where positions and the neighbour count change. (CUDA graphs are
    ``cuda_graphs=True``, tests/contract/test_cuda_graphs.py: inductor's own, ``"reduce-overhead"``,
    crashed in the backward with torch 2.11 on an H100.)"""
    from torch._dynamo.utils import counters
    counters.clear()
    model = make_model("escn", lmax=2, mmax=1, channels=8, num_layers=2)
    eager_calc = SO3Calculator(model, device="cuda", skin=0.0)
    compiled_calc = SO3Calculator(model, device="cuda", compile=True, skin=0.0)
    for atoms in (ethanol, small_cell):
        atoms = atoms.copy()
        MaxwellBoltzmannDistribution(atoms, temperature_K=2000, rng=np.random.default_rng(0))
        atoms.calc = compiled_calc
        dyn = VelocityVerlet(atoms, timestep=0.5 * units.fs)
        for _ in range(6):
            dyn.run(1)
            ref = atoms.copy()
            ref.calc = eager_calc
            _same(atoms, ref, 1e-9)
    assert counters["stats"]["unique_graphs"] >= 1


def test_cuda_calculate_many_equals_one_by_one(ethanol, small_cell, slab):
    calc = SO3Calculator(make_model("escn"), device="cuda")
    images = [ethanol, small_cell, slab, small_cell.repeat((1, 2, 1))]
    batched = calc.calculate_many(images, batch_size=3)
    for atoms, res in zip(images, batched):
        single = atoms.copy()
        single.calc = SO3Calculator(make_model("escn"), device="cuda")
        assert abs(res["energy"] - single.get_potential_energy()) < 1e-9
        np.testing.assert_allclose(res["forces"], single.get_forces(), atol=1e-9, rtol=0)


def test_cuda_float32_and_float64_coexist(ethanol):
    model = make_model("tfn")
    f64 = SO3Calculator(model, device="cuda", dtype="float64")
    f32 = SO3Calculator(model, device="cuda", dtype="float32")
    a, b = ethanol.copy(), ethanol.copy()
    a.calc, b.calc = f64, f32
    e64, e32 = a.get_potential_energy(), b.get_potential_energy()
    assert torch.get_default_dtype() == torch.float32
    assert abs(e64 - e32) < 1e-3 * max(1.0, abs(e64))
    np.testing.assert_allclose(b.get_forces(), a.get_forces(), atol=1e-3, rtol=0)
    again = ethanol.copy()
    again.calc = SO3Calculator(model, device="cuda", dtype="float64")
    assert again.get_potential_energy() == e64
