"""The SE(3)-attention invariants study runner, on a tiny slice (one epoch per run)."""

import json

import pytest

from ase_so3.benchmark.attention_study import main, run_name
from tests.conftest import RMD17



@pytest.mark.skipif(not (RMD17 / "rmd17_ethanol_train_01.npz").is_file(), reason="no rMD17 data")
def test_study_trains_every_setting_and_seed_and_reports(tmp_path, capsys):
    out = tmp_path / "study"
    argv = ["--molecules", "ethanol", "--seeds", "0", "1", "--cutoffs", "2", "--budget-minutes",
            "0.001", "--data-dir", str(RMD17), "--train", "12", "--val", "4", "--test-limit", "6",
            "--output", str(out)]
    assert main(argv) == 0
    res = json.loads((out / "results.json").read_text())
    assert len(res["runs"]) == 6
    assert {(r["setting"], r["seed"]) for r in res["runs"]} == {
        (s, k) for s in ("r", "inverse", "mixed") for k in (0, 1)}
    for r in res["runs"]:
        cfg = r["config"]["model_config"]
        assert cfg["distance_features"] == r["setting"] and cfg["cutoff"] == 2.0
        assert cfg["degrees"] == [0, 1, 3] and cfg["num_heads"] == 4 and cfg["num_layers"] == 4
        assert r["epochs"] == 1 and r["test"]["num_structures"] == 6
    # the settings are different models: same seed, different test errors
    by = {(r["setting"], r["seed"]): r["test"]["forces_mae_meV_per_A"] for r in res["runs"]}
    assert len({by[("r", 0)], by[("inverse", 0)], by[("mixed", 0)]}) == 3
    summary = {s["setting"]: s for s in res["summary"]}
    assert summary["r"]["seeds"] == 2 and summary["r"]["forces_mae_std"] > 0
    report = (out / "report.md").read_text()
    assert "| ethanol | 2 | inverse | 2 |" in report and "lowest force MAE" in report
    assert (out / "learning_curves.png").is_file()
    # finished runs are not trained again
    first = (out / "runs" / run_name("ethanol", 2.0, "r", 0) / "result.json").stat().st_mtime_ns
    capsys.readouterr()
    assert main(argv + ["--resume"]) == 0
    assert "training" not in capsys.readouterr().out
    assert (out / "runs" / run_name("ethanol", 2.0, "r", 0) / "result.json").stat().st_mtime_ns == first
    # the report names the exact command, also when rebuilt with --report-only
    assert main(["--output", str(out), "--report-only"]) == 0
    assert (f"Command: `ase-so3 benchmark attention {' '.join(argv)}"
            in (out / "report.md").read_text())
