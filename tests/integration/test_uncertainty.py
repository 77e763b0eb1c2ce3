"""The feature-distance uncertainty (ase_so3.uncertainty): its formula, calibration, storage, and
every client that reports it (calculator, calculate_many, chunked evaluation, MD, torch-sim, CLI,
training)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.io import read

from ase_so3 import SO3Calculator
from ase_so3.errors import ConfigError
from ase_so3.graph import atoms_to_graph
from ase_so3.loading import load_potential
from ase_so3.training.data import GraphSet
from ase_so3.training.hdf5 import HDF5Dataset
from ase_so3.uncertainty import (FeatureUncertainty, assess, calibrate_potential, collect,
                                 readout_features)
from tests.conftest import ETHANOL, RMD17


@pytest.fixture(scope="module")
def calibrated(tmp_path_factory):
    """The shipped ethanol eSCN calibrated on 80 training and 20 validation structures of the
    rMD17 subset in tests/data; the report on 100 test_01 structures."""
    from ase_so3.training.convert import convert_to_hdf5
    folder = tmp_path_factory.mktemp("unc")
    data = folder / "ethanol.h5"
    convert_to_hdf5(ETHANOL, data, n_train=80, n_val=20, seed=0)
    out = folder / "ethanol-unc.pt"
    report = calibrate_potential("escn-rmd17-ethanol", data, out, test_split="test")
    return out, data, report


def _uncalibrated():
    """The shipped ethanol eSCN without its calibration."""
    model = load_potential("escn-rmd17-ethanol")
    del model.metadata["uncertainty"]
    return model


def _test_atoms(data, k=0):
    ds = HDF5Dataset(data)
    atoms = ds[int(ds.split("test")[k])].to_atoms()
    ds.close()
    return atoms


def test_formula_is_the_regularised_mahalanobis_norm_per_element(calibrated):
    path, data, _ = calibrated
    model = load_potential(path)
    cal = FeatureUncertainty.of(model)
    ds = HDF5Dataset(data)
    train = collect(model, GraphSet(ds, ds.split("train"), model.cutoff))
    f = torch.cat([train["features"], torch.ones_like(train["features"][:, :1])], 1).numpy()
    z = train["numbers"].numpy()
    atoms = _test_atoms(data)
    calc = SO3Calculator(path)
    atoms.calc = calc
    atoms.get_forces()
    with readout_features(calc.potential) as holder:
        calc.potential(atoms_to_graph(atoms, model.cutoff, dtype=torch.float64))
    g = np.concatenate([holder["features"].numpy(), np.ones((len(atoms), 1))], 1)
    expected = []
    for i, zi in enumerate(atoms.numbers):
        x = f[z == zi]
        C = x.T @ x / len(x)
        lam = np.linalg.eigvalsh(C)
        C_reg = C + cal.reg * np.clip(lam, 0, None).mean() * np.eye(len(C))
        expected.append(g[i] @ np.linalg.solve(C_reg, g[i]))
    expected = np.asarray(expected)
    # the regularised covariance is ill-conditioned, so this solve (numpy) and the package's
    # (torch) agree to about 1e-6, depending on the BLAS kernels (1.8e-6 on an AVX2-only VM);
    # a wrong formula is off by far more
    assert np.allclose(calc.results["forces_std"], cal.forces_scale * np.sqrt(expected), rtol=1e-5)
    assert np.isclose(calc.results["energy_std"], cal.energy_scale * np.sqrt(expected.sum()),
                      rtol=1e-5)


def test_every_shipped_potential_is_calibrated():
    from ase_so3.pretrained import list_potentials
    for name in list_potentials():
        cal = FeatureUncertainty.of(load_potential(name))
        assert cal is not None and cal.forces_scale > 0, name


def test_calibration_is_stored_and_ranks_errors(calibrated):
    path, _, report = calibrated
    payload = torch.load(path, weights_only=True)  # plain data, weights-only loadable
    stored = payload["metadata"]["uncertainty"]
    assert FeatureUncertainty.from_dict(stored).forces_scale == pytest.approx(report["forces_scale"])
    # the file keeps the shipped weights exactly, in their stored dtypes
    from ase_so3.pretrained import potential_path
    source = torch.load(potential_path("escn-rmd17-ethanol"), weights_only=True)
    assert payload["checksum"] == source["checksum"]
    for k, v in source["state_dict"].items():
        assert payload["state_dict"][k].dtype == v.dtype and torch.equal(payload["state_dict"][k], v)
    test = report["test"]
    assert test["structures"] == 100
    assert test["spearman_structure_forces"] > 0.3  # measured 0.74 on all 1000 test_01
    ratio = test["forces_rmse_predicted_meV_per_A"] / test["forces_rmse_observed_meV_per_A"]
    assert 0.5 < ratio < 2.0
    assert FeatureUncertainty.from_dict({**stored, "version": 1}).reg == report["reg"]
    with pytest.raises(ConfigError, match="unknown uncertainty calibration"):
        FeatureUncertainty.from_dict({**stored, "version": 99})


def test_uncertainty_rises_far_from_the_training_data(calibrated):
    """The ethanol potential on aspirin (same elements): forces hundreds of meV/Å off, and the
    predicted error must say so."""
    path, data, _ = calibrated
    near = _test_atoms(data)
    arrays = np.load(RMD17 / "rmd17_aspirin_test_01.npz")
    far = Atoms(numbers=arrays["nuclear_charges"], positions=arrays["coords"][0])
    stds = []
    for atoms in (near, far):
        atoms.calc = SO3Calculator(path)
        atoms.get_forces()
        stds.append(np.median(atoms.calc.results["forces_std"]))
    assert stds[1] > 5 * stds[0]


def test_every_client_reports_the_same_uncertainty(calibrated, tmp_path):
    path, data, _ = calibrated
    atoms = _test_atoms(data)
    rotated = atoms.copy()
    rotated.rotate(73, (1, 2, 0.5), center="COM")
    atoms.calc = SO3Calculator(path)
    atoms.get_forces()
    ref = atoms.calc.results
    assert ref["forces_std"].shape == (len(atoms),) and np.isscalar(ref["energy_std"])
    assert atoms.calc.get_property("forces_std") is not None
    many = SO3Calculator(path).calculate_many([atoms, rotated])
    for r in many:  # batched, and invariant under rotation
        assert np.allclose(r["forces_std"], ref["forces_std"], rtol=1e-8)
        assert r["energy_std"] == pytest.approx(ref["energy_std"], rel=1e-8)
    chunked = SO3Calculator(path, max_atoms_per_chunk=4)
    atoms.calc = chunked
    atoms.get_forces()
    assert np.allclose(chunked.results["forces_std"], ref["forces_std"], rtol=1e-8)
    assert chunked.results["energy_std"] == pytest.approx(ref["energy_std"], rel=1e-8)
    # a potential without calibration: nothing reported, and asking for it is an error
    plain = SO3Calculator(_uncalibrated())
    assert "forces_std" not in plain.implemented_properties
    with pytest.raises(ConfigError, match="ase-so3 calibrate"):
        SO3Calculator(_uncalibrated(), uncertainty=True)
    with pytest.raises(ConfigError, match="uncertainty must be"):
        SO3Calculator(path, uncertainty="yes")
    off = SO3Calculator(path, uncertainty=False)
    atoms.calc = off
    atoms.get_forces()
    assert "forces_std" not in off.results
    assert SO3Calculator(path).todict()["uncertainty"] == "auto"


def test_md_logs_uncertainty_and_stops_or_saves_over_the_threshold(calibrated, tmp_path):
    from ase_so3.md import run_md
    path, data, _ = calibrated
    atoms = _test_atoms(data)
    res = run_md(atoms, SO3Calculator(path), steps=3, output=tmp_path / "a", progress=False,
                 uncertainty_threshold=1e-9, on_uncertain="stop")
    assert res.stopped_uncertain and res.steps_done == 1
    assert len(read(tmp_path / "a" / "uncertain.extxyz", index=":")) == 2  # start and step 1
    res = run_md(atoms, SO3Calculator(path), steps=3, output=tmp_path / "b", progress=False,
                 uncertainty_threshold=100.0)
    assert res.steps_done == 3 and res.uncertain_frames == 0
    header = (tmp_path / "b" / "log.csv").read_text().splitlines()[0]
    assert "max_forces_std_eV_per_A" in header and "energy_std_eV" in header
    with pytest.raises(ConfigError, match="forces_std"):
        run_md(atoms, SO3Calculator(_uncalibrated()), steps=1, output=tmp_path / "c",
               progress=False, uncertainty_threshold=0.1)


def test_torchsim_returns_the_calculator_uncertainty(calibrated):
    pytest.importorskip("torch_sim")
    import torch_sim as ts

    from ase_so3.engines.torchsim import SO3TorchSimModel
    path, data, _ = calibrated
    atoms = _test_atoms(data)
    atoms.calc = SO3Calculator(path)
    atoms.get_forces()
    model = SO3TorchSimModel(path)
    out = model(ts.io.atoms_to_state([atoms, atoms], device=model.device, dtype=model.dtype))
    assert np.allclose(out["forces_std"][:len(atoms)].numpy(), atoms.calc.results["forces_std"])
    assert out["energy_std"].shape == (2,)


def test_cli_calibrate_and_training_attach_a_calibration(calibrated, tmp_path, small_h5):
    from ase_so3.cli import main
    _, data, _ = calibrated
    out = tmp_path / "cal.pt"
    assert main(["calibrate", "escn-rmd17-ethanol", str(data), "-o", str(out),
                 "--test-split", "test"]) == 0
    assert FeatureUncertainty.of(load_potential(out)) is not None
    assert main(["calibrate", "escn-rmd17-ethanol", str(data), "-o", str(out),
                 "--val-split", "nope"]) == 2  # a user error, said in one line
    assert main(["train", "model=tfn", f"data={small_h5}", f"output={tmp_path / 'run'}",
                 "max_epochs=1", "progress=false", "batch_size=4",
                 "model_config.channels=4", "model_config.num_layers=1"]) == 0
    assert FeatureUncertainty.of(load_potential(tmp_path / "run" / "potential.pt")) is not None


def test_assess_bins_cover_every_atom(calibrated):
    path, data, _ = calibrated
    model = load_potential(path)
    ds = HDF5Dataset(data)
    d = collect(model, GraphSet(ds, ds.split("val"), model.cutoff))
    r = assess(FeatureUncertainty.of(model), d, bins=4)
    assert sum(b["atoms"] for b in r["forces_bins"]) == r["atoms"] == 20 * 9
    preds = [b["predicted_meV_per_A"] for b in r["forces_bins"]]
    assert preds == sorted(preds)
