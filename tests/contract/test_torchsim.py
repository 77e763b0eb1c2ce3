"""torch-sim interface: the batched model equals SO3Calculator per system (float64), for a batch
of different molecules and a periodic cell; torch-sim's own interface validator passes; a short
torch-sim NVE run conserves energy."""

import numpy as np
import pytest
import torch
from ase.build import bulk

ts = pytest.importorskip("torch_sim")

from ase_so3 import SO3Calculator  # noqa: E402
from ase_so3.data import load_named_structure  # noqa: E402
from ase_so3.engines.torchsim import SO3TorchSimModel  # noqa: E402
from ase_so3.potentials import build_potential  # noqa: E402


def _model(species):
    torch.manual_seed(0)
    m = build_potential("escn", species=species, cutoff=4.0, channels=8, num_layers=2, lmax=2,
                        mmax=1)
    m.scale.fill_(30.0)
    return m


def _periodic_cell():
    a = bulk("C", "diamond", a=3.9, cubic=True)
    a.numbers[[1, 5]] = 8
    a.rattle(0.05, seed=1)
    return a


def test_batched_model_equals_the_calculator_per_system():
    model = _model(["H", "C", "O"])
    images = [load_named_structure("ethanol"), load_named_structure("aspirin"),
              load_named_structure("malonaldehyde"), _periodic_cell()]
    ts_model = SO3TorchSimModel(model, dtype=torch.float64)
    state = ts.io.atoms_to_state(images[:3], device=ts_model.device, dtype=ts_model.dtype)
    out = ts_model(state)
    periodic = ts_model(ts.io.atoms_to_state(images[3:], device=ts_model.device,
                                             dtype=ts_model.dtype))
    calc = SO3Calculator(model, dtype="float64")
    offsets = np.cumsum([0] + [len(a) for a in images[:3]])
    for k, atoms in enumerate(images[:3]):
        atoms.calc = calc
        assert abs(out["energy"][k].item() - atoms.get_potential_energy()) < 1e-10
        f = out["forces"][offsets[k]:offsets[k + 1]].numpy()
        assert np.abs(f - atoms.get_forces()).max() < 1e-10
        assert torch.count_nonzero(out["stress"][k]) == 0  # not defined for molecules
    cell = images[3]
    cell.calc = calc
    assert abs(periodic["energy"][0].item() - cell.get_potential_energy()) < 1e-10
    assert np.abs(periodic["forces"].numpy() - cell.get_forces()).max() < 1e-10
    from ase.stress import full_3x3_to_voigt_6_stress
    assert np.abs(full_3x3_to_voigt_6_stress(periodic["stress"][0].numpy())
                  - cell.get_stress()).max() < 1e-10


def test_torch_sim_validator_accepts_the_interface():
    from torch_sim.models.interface import validate_model_outputs
    model = SO3TorchSimModel(_model(["Si", "Fe"]), dtype=torch.float64)
    validate_model_outputs(model, model.device, model.dtype)


def test_torch_sim_nve_conserves_energy():
    model = SO3TorchSimModel("escn-rmd17-ethanol", dtype=torch.float64)  # physical dynamics
    replicas = [load_named_structure("ethanol") for _ in range(3)]
    state = ts.io.atoms_to_state(replicas, device=model.device, dtype=model.dtype)
    from torch_sim.integrators import nve
    from torch_sim.units import MetalUnits as U
    dt = torch.tensor(0.25e-3 * U.time, dtype=model.dtype)  # 0.25 fs
    kT = torch.tensor(300 * U.temperature, dtype=model.dtype)
    init, update = nve(model, dt=dt, kT=kT, seed=0)
    state = init(state)
    energies = []
    for _ in range(100):
        state = update(state)
        ke = ts.calc_kinetic_energy(masses=state.masses, momenta=state.momenta,
                                    system_idx=state.system_idx)
        energies.append((state.energy + ke).numpy().copy())
    energies = np.array(energies)
    per_atom = np.abs(energies - energies[0]).max(axis=0) / 9
    assert per_atom.max() < 1e-4, per_atom


def test_the_model_reads_the_state_without_building_atoms(monkeypatch):
    """Each call goes from the state's tensors to the batch: no ase.Atoms per step."""
    import ase.atoms
    import torch_sim as ts
    from ase.build import molecule

    from ase_so3.engines.torchsim import SO3TorchSimModel
    model = SO3TorchSimModel("escn-rmd17-ethanol", dtype=torch.float64)
    state = ts.io.atoms_to_state([molecule("CH3CH2OH")] * 3, device=model.device,
                                 dtype=model.dtype)

    def no_atoms(*args, **kwargs):
        raise AssertionError("an ase.Atoms was built during a model call")
    monkeypatch.setattr(ase.atoms.Atoms, "__init__", no_atoms)
    out = model(state)
    assert out["forces"].shape == (27, 3) and torch.isfinite(out["energy"]).all()
