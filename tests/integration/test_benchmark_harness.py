"""The benchmark harness: its parts on their own, and end to end against MACE on a tiny slice."""

import importlib.util
import json
import subprocess
import sys

import numpy as np
import pytest
from ase.calculators.calculator import Calculator, all_changes

from ase_so3.benchmark.stability import bonds_of, run_stability, summarize
from ase_so3.benchmark.systems import box_sizes, molecular_box, molecule
from ase_so3.neighbors import neighbor_list
from tests.conftest import RMD17



def test_molecular_box_has_no_clashes_and_the_requested_size():
    n = len(molecule("ethanol"))
    atoms = molecular_box("ethanol", 3, seed=1)
    assert len(atoms) == 27 * n and atoms.pbc.all()
    i, j, s, d = neighbor_list(atoms.positions, atoms.cell.array, atoms.pbc, 1.0)
    assert np.all(i // n == j // n) and not np.any(s)  # only bonds inside a molecule
    assert box_sizes("aspirin", (100, 1000, 10000)) == [2, 4, 8]


class _Exploding(Calculator):
    """Pushes every atom away from the centre: bonds must break."""
    implemented_properties = ["energy", "forces"]

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        r = self.atoms.positions - self.atoms.positions.mean(0)
        self.results = {"energy": -5.0 * float((r * r).sum()), "forces": 10.0 * r}


class _Harmonic(Calculator):
    """Springs on the starting bonds: stable."""
    implemented_properties = ["energy", "forces"]

    def __init__(self, atoms0):
        super().__init__()
        self.bonds, self.b0 = bonds_of(atoms0)

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        p = self.atoms.positions
        v = p[self.bonds[:, 1]] - p[self.bonds[:, 0]]
        d = np.linalg.norm(v, axis=1)
        g = 20.0 * (d - self.b0)  # dE/dd for E = 10 (d - b0)^2
        f = np.zeros_like(p)
        np.add.at(f, self.bonds[:, 0], (g / d)[:, None] * v)
        np.add.at(f, self.bonds[:, 1], -(g / d)[:, None] * v)
        self.results = {"energy": float((10.0 * (d - self.b0) ** 2).sum()), "forces": f}


def test_stability_detects_a_breaking_simulation_and_passes_a_stable_one():
    atoms = molecule("ethanol")
    kept = []
    broken = run_stability(_Exploding(), atoms, max_ps=0.2, check_every=2, frames=kept,
                           frames_every=2)
    assert broken["broke"] and "bond" in broken["reason"] and broken["stable_ps"] < 0.2
    # frames every 2 steps while intact: none at or past the check that found the break
    assert len(kept) == round(broken["stable_ps"] * 2000) // 2 - 1 and len(kept) > 0
    bonds, b0 = bonds_of(atoms)
    assert all(np.abs(np.linalg.norm(f.positions[bonds[:, 0]] - f.positions[bonds[:, 1]], axis=1)
                      - b0).max() <= 0.5 for f in kept)
    kept = []
    stable = run_stability(_Harmonic(atoms), atoms, max_ps=0.05, frames=kept, frames_every=20)
    assert not stable["broke"] and stable["stable_ps"] == pytest.approx(0.05)
    assert len(kept) == 5 and kept[0].calc is None
    assert not np.allclose(kept[0].positions, kept[-1].positions)
    s = summarize([broken, stable])
    assert s["broke_fraction"] == 0.5 and s["runs"] == 2


@pytest.mark.skipif(importlib.util.find_spec("mace") is None,
                    reason="mace-torch (the `mace` extra) is not installed")
def test_harness_end_to_end_with_mace(tmp_path):
    out = tmp_path / "bench"
    cmd = [sys.executable, "-m", "ase_so3.cli", "benchmark", "run", "--molecules", "ethanol",
           "--ours", "train", "--budget-minutes", "5", "--max-epochs", "1",
           "--our-config", "channels=4", "num_layers=1", "lmax=1",
           "--mace-setting", "num_channels=4", "max_L=0", "num_interactions=1",
           "--data-dir", str(RMD17), "--train", "20", "--val", "5", "--test-limit", "8",
           "--box-atoms", "9", "--stability-runs", "1", "--stability-ps", "0.005",
           "--speed-seconds", "0.2", "--output", str(out), "--no-progress"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads((out / "results.json").read_text())
    mol = res["molecules"]["ethanol"]
    models = ["tfn", "se3_transformer", "escn", "mace"]
    # MACE really ran: its own trainer wrote a log with epochs and a model file, which loads
    # into MACE's calculator and predicts something different from ours
    mace = mol["models"]["mace"]
    log = open(mace["log"]).read()
    assert "Epoch 0" in log and "mace_run_train" in mace["command"]
    assert mace["epochs"] == 1 and (out / "runs" / "ethanol" / "mace" / "mace.model").is_file()
    assert res["environment"]["mace"]
    acc = mol["accuracy"]
    assert set(acc) == set(models) and acc["mace"]["parameters"] > 0
    for m in models:
        assert acc[m]["test_structures"] == 8
        assert 0 < acc[m]["forces_mae_meV_per_A"] < 1e5
    mace_parity = np.load(out / acc["mace"]["parity"])
    escn_parity = np.load(out / acc["escn"]["parity"])
    assert np.array_equal(mace_parity["f_ref"], escn_parity["f_ref"])  # the same test set
    assert not np.allclose(mace_parity["f_pred"], escn_parity["f_pred"])
    for system in ("molecule", "box1"):
        for m in models:
            row = mol["speed"][system][m]
            assert "error" not in row, row
            assert row["latency_ms"] > 0 and row["peak_rss_mb"] > 0
    assert mol["speed"]["box1"]["mace"]["atoms"] == 9
    for m in models:
        assert mol["stability"][m]["summary"]["runs"] == 1
    report = (out / "report.md").read_text()
    for heading in ("## ethanol", "### Accuracy", "### Speed", "### Stability", "MACE"):
        assert heading in report
    assert "eSCN/MACE" in report and (out / "latency_ethanol.png").is_file()
    assert (out / "parity_ethanol.png").is_file() and (out / "stability.png").is_file()
    # resume: finished units are kept, nothing is trained again
    before = mace["train_seconds"]
    proc = subprocess.run(cmd + ["--resume"], capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    again = json.loads((out / "results.json").read_text())["molecules"]["ethanol"]
    assert again["models"]["mace"]["train_seconds"] == before
    assert "training" not in proc.stdout


def test_speed_table_parses_and_measures(tmp_path, capsys):
    from ase_so3.benchmark.speed_table import main, parse_model, parse_system
    from tests.conftest import make_model
    assert parse_model(["g", "ours", "escn-rmd17-aspirin", "cuda_graphs=true", "mode=fast"]) == (
        "g", {"kind": "ours", "path": "escn-rmd17-aspirin",
              "options": {"cuda_graphs": True, "mode": "fast"}})
    assert parse_system("ethanol:3") == {"molecule": "ethanol", "copies": 3}
    for bad in (["x", "other", "p"], ["x", "ours"], ["x", "ours", "p", "novalue"]):
        with pytest.raises(Exception, match="kind|needs|KEY=VALUE"):
            parse_model(bad)
    with pytest.raises(Exception, match="positive integer"):
        parse_system("ethanol:zero")
    path = tmp_path / "tiny.pt"
    make_model("escn", lmax=1, mmax=1, channels=4, num_layers=1).save(path)
    out = tmp_path / "speed.json"
    assert main(["--model", "tiny", "ours", str(path), "--model", "bad", "ours", str(path),
                 "compile=nonsense", "--system", "ethanol", "--reference", "tiny",
                 "--seconds", "0.05", "--json", str(out)]) == 0
    rows = json.loads(out.read_text())
    assert rows[0]["result"]["atoms"] == 9 and rows[0]["result"]["latency_ms"] > 0
    assert "error" in rows[1]["result"]  # a failing model is a row, not a crash
    table = capsys.readouterr().out
    assert "| ethanol | 9 | tiny |" in table and "| 1.00 |" in table and "error:" in table


def test_mace_splits_put_each_molecule_at_the_origin(tmp_path):
    """MACE's neighbour list bins a box that grows with the largest coordinate (rMD17 benzene
    drifts 200 Å from the origin): the exported splits are translated, labels untouched, and a
    periodic structure stays where it is."""
    from ase.io import read, write

    from ase_so3.benchmark.mace_backend import export_splits
    from ase_so3.benchmark.models import centred
    from ase_so3.training.convert import convert_to_hdf5
    rng = np.random.default_rng(0)
    images = []
    for k in range(6):
        atoms = molecule("ethanol")
        atoms.positions += [150.0, -80.0, 40.0 * k]
        atoms.info["REF_energy"] = -10.0 - k
        atoms.arrays["REF_forces"] = rng.normal(size=(len(atoms), 3))
        images.append(atoms)
    write(tmp_path / "far.xyz", images, format="extxyz")
    convert_to_hdf5([tmp_path / "far.xyz"], tmp_path / "far.h5", n_train=3, n_val=1, n_test=2)
    counts = export_splits(tmp_path / "far.h5", tmp_path / "xyz", limits={"test": 1})
    assert counts == {"train": 3, "val": 1, "test": 1}
    by_energy = {a.info["REF_energy"]: a for a in images}
    for split in ("train", "val", "test"):
        for atoms in read(tmp_path / "xyz" / f"{split}.xyz", index=":"):
            ref = by_energy[atoms.info["REF_energy"]]
            assert np.allclose(atoms.positions.mean(axis=0), 0.0, atol=1e-6)
            assert np.allclose(atoms.positions - atoms.positions[0],
                               ref.positions - ref.positions[0], atol=1e-6)
            assert np.allclose(atoms.arrays["REF_forces"], ref.arrays["REF_forces"], atol=1e-6)
    slab = images[0].copy()
    slab.cell, slab.pbc = [20.0, 20.0, 20.0], [True, True, False]
    assert np.array_equal(centred(slab).positions, slab.positions)
    assert centred(images[0]) is not images[0]
