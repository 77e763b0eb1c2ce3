"""The long-run report on a tiny run: the potential's test errors with its energy shift
refitted, the run's progress, and the ratios to the published errors."""

import json
import shutil

import pytest

from ase_so3.training.evaluate import evaluate_potential
from studies import long_runs
from tests.integration.test_training import _cfg


def test_long_run_report_of_a_tiny_run(small_h5, tmp_path):
    from ase_so3.training.trainer import Trainer
    data = tmp_path / "data"
    data.mkdir()
    shutil.copyfile(small_h5, data / "ethanol.h5")
    run = tmp_path / "run"
    Trainer(_cfg(data / "ethanol.h5", run, max_epochs=2)).fit(log=lambda *_: None)
    before = (run / "potential.pt").read_bytes()
    assert long_runs.main(["--run", f"ethanol={run}", "--data-dir", str(data),
                           "--out", str(tmp_path / "out")]) == 0
    assert (run / "potential.pt").read_bytes() == before  # the run's own file is untouched
    result = json.loads((tmp_path / "out" / "results.json").read_text())
    row, cmp = result["runs"][0], result["comparison"][0]
    assert row["epochs_done"] == 2 and row["epochs_planned"] == 2
    # the trainer refits the shift at the end of its run: the same file, the same errors
    ended = evaluate_potential(run / "potential.pt", data / "ethanol.h5", "test")
    assert row["test"]["forces_mae_meV_per_A"] == pytest.approx(ended["forces_mae_meV_per_A"])
    assert row["test"]["energy_mae_meV"] == pytest.approx(ended["energy_mae_meV"], rel=1e-6)
    f = row["test"]["forces_mae_meV_per_A"]
    assert cmp["ratio_forces"]["MACE"] == pytest.approx(f / 2.1)
    assert cmp["best_published"] == ["2F-DisGNN", 1.67]
    text = (tmp_path / "out" / "results.md").read_text()
    assert f"| ethanol | {row['test']['energy_mae_meV']:.2f} / {f:.2f} |" in text
    assert not (tmp_path / "out" / "potentials").exists()
    assert row["blind_test"] is None and "| — |" in text
    # a running run's potential.pt has no refitted shift yet: the study refits it
    from ase_so3.loading import load_potential
    running = tmp_path / "running"
    shutil.copytree(run, running)
    model = load_potential(running / "potential.pt")
    model.shift += 0.01  # eV/atom: 90 meV on ethanol
    model.save(running / "potential.pt", metadata=model.metadata)
    shutil.copyfile(small_h5, data / "ethanol-blind.h5")  # a blind test file: here the same one
    long_runs.main(["--run", f"ethanol={running}", "--data-dir", str(data),
                    "--out", str(tmp_path / "out2")])
    again = json.loads((tmp_path / "out2" / "results.json").read_text())["runs"][0]
    assert again["test"]["energy_mae_meV"] == pytest.approx(ended["energy_mae_meV"], rel=1e-4)
    assert again["blind_test"] == again["test"]
    assert f"{again['test']['forces_mae_meV_per_A']:.2f} ({ended['num_structures']}) |" in (
        tmp_path / "out2" / "results.md").read_text()
