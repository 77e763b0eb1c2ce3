"""One contract applied to every registered model (and its variants): symmetries, finite
differences, cutoff continuity, energy conservation, batching, save/load."""

import numpy as np
import pytest
import torch

from ase_so3 import checks, load_potential
from ase_so3.potentials import REGISTRY
from tests.conftest import MODEL_SPECS, make_model

TOL = 1e-9  # float64


def _assert_small(errors: dict, tol: float):
    bad = {k: v for k, v in errors.items() if not v < tol}
    assert not bad, f"errors above {tol}: {bad}"


def test_every_registered_model_is_covered():
    assert {spec[0] for spec in MODEL_SPECS.values()} >= set(REGISTRY)
    assert {"tfn", "se3_transformer", "escn"} <= set(REGISTRY)


@pytest.mark.parametrize("lmax", [1, 2, 3])
def test_symmetries_molecule(model_spec, lmax, chiral):
    """Three layers on a chiral molecule: a pseudoscalar made by a parity-violating path reaches
    the energy only after three TFN layers, and only a chiral structure can reveal it."""
    overrides = {"lmax": lmax, "num_layers": 3}
    if MODEL_SPECS[model_spec][0] == "escn":
        overrides["mmax"] = min(2, lmax)
    model = make_model(model_spec, **overrides)
    res = checks.evaluate(model, [chiral])[0]
    assert np.abs(res["forces"]).max() > 1e-2  # the check below is not trivial
    _assert_small(checks.symmetry_errors(model, chiral, draws=6, seed=lmax), TOL)


def test_symmetries_periodic(model_spec, small_cell, slab):
    model = make_model(model_spec)
    _assert_small(checks.symmetry_errors(model, small_cell, draws=4), TOL)
    _assert_small(checks.symmetry_errors(model, slab, draws=2), TOL)


def test_symmetry_check_detects_a_broken_model(ethanol):
    """The invariance check fails for a model that reads Cartesian x coordinates (batches hold
    positions centred per structure, so such a model is still translation invariant, but it
    breaks rotations and reflections)."""
    model = make_model("tfn")
    original = type(model).node_energies

    def broken(self, graph, species, vectors):
        return original(self, graph, species, vectors) + 0.1 * graph["positions"][:, 0] ** 2

    model.node_energies = broken.__get__(model)
    errors = checks.symmetry_errors(model, ethanol, draws=2)
    assert errors["energy_rotation"] > 1e-3 and errors["energy_reflection"] > 1e-3
    assert errors["energy_translation"] < 1e-9


def test_forces_and_stress_match_finite_differences(model_spec, ethanol, small_cell):
    model = make_model(model_spec)
    _assert_small(checks.finite_difference_errors(model, ethanol), 1e-7)
    fd = checks.finite_difference_errors(model, small_cell)
    assert set(fd) == {"forces", "stress"}
    _assert_small(fd, 1e-7)
    res = checks.evaluate(model, [small_cell])[0]
    assert np.abs(res["stress"]).max() > 1e-3


def test_continuity_at_cutoff(model_spec):
    model = make_model(model_spec)
    jumps = checks.cutoff_continuity(model, symbols=["C", "O", "H"], delta=1e-6)
    _assert_small(jumps, 1e-9)
    # the third atom really interacts just inside the cutoff
    far = checks.cutoff_continuity(model, symbols=["C", "O", "H"], delta=0.5)
    assert far["forces"] > 1e-6


def test_nve_conserves_energy(model_spec, ethanol):
    model = make_model(model_spec, scale=10.0)
    res = checks.nve_drift(model, ethanol, steps=60, timestep_fs=0.5, temperature_K=300)
    print(f"{model_spec}: NVE drift {res['drift_eV_per_atom_per_ps']:.2e} eV/atom/ps, "
          f"max deviation {res['max_deviation_eV_per_atom']:.2e} eV/atom")
    assert abs(res["drift_eV_per_atom_per_ps"]) < 1e-3
    assert res["max_deviation_eV_per_atom"] < 1e-3


def test_batch_consistency(model_spec, ethanol, small_cell, slab):
    model = make_model(model_spec)
    _assert_small(checks.batch_consistency(model, [ethanol, small_cell, slab]), 1e-10)


def test_save_load_round_trip(model_spec, tmp_path, ethanol):
    model = make_model(model_spec)
    model.atomic_energies.copy_(torch.tensor([-13.6, -1029.0, -2041.0], dtype=torch.float64))
    path = tmp_path / "model.pt"
    model.save(path, metadata={"training_data": "none (test)"})
    raw = torch.load(path, weights_only=True)
    assert raw["model"] == model.name and raw["metadata"]["units"]["energy"] == "eV"
    loaded = load_potential(path)
    assert type(loaded) is type(model) and loaded.config == model.config
    a, b = checks.evaluate(model, [ethanol])[0], checks.evaluate(loaded, [ethanol])[0]
    assert a["energy"] == b["energy"] and np.array_equal(a["forces"], b["forces"])
    assert loaded.metadata["training_data"] == "none (test)"


def test_isolated_atoms_and_single_atom(model_spec):
    from ase import Atoms
    model = make_model(model_spec)
    lone = Atoms("CO", positions=[[0, 0, 0], [10.0, 0, 0]])  # no neighbours at all
    single = Atoms("H", positions=[[0, 0, 0]])
    res = checks.evaluate(model, [lone, single])
    assert all(np.isfinite(r["energy"]) for r in res)
    assert np.all(res[0]["forces"] == 0)


def test_radial_weights_fold_the_envelope_into_the_last_product():
    """RadialWeights computes envelope * MLP(basis) as one product [env*h, env] @ [W; b]; the
    same numbers as the plain form, with and without the last bias."""
    import torch

    from ase_so3.potentials.blocks import RadialWeights
    torch.manual_seed(0)
    radial = RadialWeights(8, 16, (3, 4)).double()
    basis = torch.randn(10, 8, dtype=torch.float64)
    envelope = torch.rand(10, dtype=torch.float64)
    for _ in range(2):
        plain = (radial.mlp(basis) * envelope[:, None]).reshape(10, 3, 4)
        torch.testing.assert_close(radial(basis, envelope), plain, rtol=1e-12, atol=1e-14)
        radial.mlp[-1].bias = None
