"""The SE(3)-attention invariants study runner, on a tiny slice (one epoch per run)."""

import json

import pytest

from studies.attention_study import main, run_name
from studies.paired import compare, describe, sign_flip_p
from tests.conftest import RMD17



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
    assert "| ethanol | note | 2 | inverse | 2 | 0.001 | 1 |" in report
    assert "- ethanol, note model, 2 Å, 0.001 min: `r` vs `inverse`: force MAE ratio" in report
    assert len(res["paired"]) == 3 and all(c["pairs"] == 2 for c in res["paired"])
    assert (out / "learning_curves.png").is_file()
    # finished runs are not trained again
    first = (out / "runs" / run_name("ethanol", 2.0, "r", 0, 0.001) / "result.json").stat().st_mtime_ns
    capsys.readouterr()
    assert main(argv + ["--resume"]) == 0
    assert "training" not in capsys.readouterr().out
    assert (out / "runs" / run_name("ethanol", 2.0, "r", 0, 0.001) / "result.json").stat().st_mtime_ns == first
    # the report names the exact command, also when rebuilt with --report-only
    assert main(["--output", str(out), "--report-only"]) == 0
    assert f"python -m studies.attention_study {' '.join(argv)}\n" in (out / "report.md").read_text()
    # a run folder that kept only result.json still counts; its curve is left out of the plot
    (out / "runs" / run_name("ethanol", 2.0, "mixed", 1, 0.001) / "metrics.csv").unlink()
    (out / "learning_curves.png").unlink()
    assert main(["--output", str(out), "--report-only"]) == 0
    assert len(json.loads((out / "results.json").read_text())["runs"]) == 6
    assert (out / "learning_curves.png").is_file()
    for r in res["runs"]:  # no curve left: no plot, the report still written
        (out / "runs" / run_name("ethanol", 2.0, r["setting"], r["seed"], 0.001) / "metrics.csv").unlink(missing_ok=True)
    (out / "learning_curves.png").unlink()
    assert main(["--output", str(out), "--report-only"]) == 0
    assert not (out / "learning_curves.png").exists()
    assert "learning_curves.png" not in (out / "report.md").read_text()


def test_recommended_architecture_takes_model_and_recipe_from_the_config(tmp_path):
    from pathlib import Path
    config = Path(__file__).resolve().parents[2] / "configs" / "se3_transformer-rmd17.yaml"
    out = tmp_path / "study"
    common = ["--molecules", "ethanol", "--seeds", "0", "1", "--settings", "r", "mixed",
              "--budget-minutes", "0.001", "--data-dir", str(RMD17), "--train", "12", "--val",
              "4", "--test-limit", "4", "--output", str(out), "--config", str(config)]
    assert main(common + ["--architecture", "recommended"]) == 0
    # same folder; --lr overrides the config's learning rate, nothing else of its recipe
    assert main(common + ["--architecture", "note", "--cutoffs", "2", "--lr", "0.003"]) == 0
    res = json.loads((out / "results.json").read_text())
    assert len(res["runs"]) == 8
    for r in res["runs"]:
        cfg = r["config"]
        assert cfg["forces_weight"] == 1000.0 and cfg["amsgrad"] is True  # the config's recipe
        assert cfg["model_config"]["distance_features"] == r["setting"]
        if r["architecture"] == "recommended":
            assert r["cutoff"] == 5.0 and cfg["model_config"]["channels"] == 32
            assert cfg["lr"] == 0.01
            assert cfg["model_config"]["edge_species"] is True
        else:
            assert r["cutoff"] == 2.0 and cfg["model_config"]["degrees"] == [0, 1, 3]
            assert cfg["lr"] == 0.003
    scopes = [c["scope"] for c in res["paired"]]
    assert ["ethanol", "recommended", 5.0, 0.001] in scopes and "all" in scopes
    pooled = next(c for c in res["paired"] if c["scope"] == "all")
    assert pooled["pairs"] == 4 and pooled["smallest_possible_p"] == 2 / 16
    report = (out / "report.md").read_text()
    assert report.count("python -m studies.attention_study") == 2  # both commands
    assert "| ethanol | recommended | 5 | mixed | 2 | 0.001 |" in report
    # the same model at another budget: new runs (not skipped as finished), a study of its own
    longer = [a if a != "0.001" else "0.002" for a in common]
    assert main(longer + ["--architecture", "recommended", "--seeds", "0", "--resume"]) == 0
    res = json.loads((out / "results.json").read_text())
    assert len(res["runs"]) == 10
    groups = {(s["budget_minutes"], s["setting"]): s["seeds"] for s in res["summary"]
              if s["architecture"] == "recommended"}
    assert groups == {(0.001, "r"): 2, (0.001, "mixed"): 2, (0.002, "r"): 1, (0.002, "mixed"): 1}
    by_scope = {tuple(c["scope"]) if c["scope"] != "all" else "all": c["pairs"]
                for c in res["paired"]}
    assert by_scope[("ethanol", "recommended", 5.0, 0.002)] == 1
    assert by_scope[("ethanol", "recommended", 5.0, 0.001)] == 2
    # pooled: one pair per model and seed, at its longest budget (seed 0 of the recommended
    # model at 0.002 min, not also at 0.001): 2 note pairs + 2 recommended
    assert by_scope["all"] == 4
    pooled = next(c for c in res["paired"] if c["scope"] == "all")
    force = {(r["architecture"], r["budget_minutes"], r["seed"], r["setting"]):
             r["test"]["forces_mae_meV_per_A"] for r in res["runs"]}
    chosen = [("note", 0.001, 0), ("note", 0.001, 1), ("recommended", 0.002, 0),
              ("recommended", 0.001, 1)]
    expect = compare([force[(*k, "r")] for k in chosen], [force[(*k, "mixed")] for k in chosen])
    assert abs(pooled["ratio"] - expect["ratio"]) < 1e-12
    assert "pooled, one pair per molecule, model, cutoff and seed at its longest budget" in (
        out / "report.md").read_text()
    assert "| ethanol | recommended | 5 | r | 1 | 0.002 |" in (out / "report.md").read_text()


def test_sign_flip_test_is_exact_and_the_ratio_is_geometric():
    assert sign_flip_p([1.0, 1.0, 1.0]) == 2 / 8  # the smallest p three pairs can give
    assert sign_flip_p([0.1, 0.2, 0.3, 0.4, 0.5, 0.6]) == 2 / 64
    assert sign_flip_p([1.0, -1.0]) == 1.0
    assert sign_flip_p([3.0, 1.0, 1.0]) == 2 / 8  # only all-plus and all-minus reach |mean| 5/3
    assert sign_flip_p([1.0, 1.0, -0.5]) == 4 / 8  # flipping the third gives |mean| 5/6 >= 1/2
    c = compare([2.0, 4.0, 8.0], [1.0, 2.0, 4.0])
    assert abs(c["ratio"] - 2.0) < 1e-12 and c["wins"] == 0 and c["pairs"] == 3
    assert abs(c["ratio_low"] - 2.0) < 1e-9 and abs(c["ratio_high"] - 2.0) < 1e-9  # no spread
    c = compare([0.9, 0.8, 0.95, 0.85, 0.9, 0.7], [1.0] * 6)
    assert c["wins"] == 6 and c["p_sign_flip"] == 2 / 64 and c["ratio_high"] < 1.0
    assert "a difference the pairs show" in describe("r", "inverse", c)
    weak = describe("r", "inverse", compare([0.9, 0.8, 0.95], [1.0] * 3))
    assert "not shown by the pairs (with 3 pairs no p below 0.25 is possible)" in weak
    with pytest.raises(ValueError):
        compare([1.0], [1.0, 2.0])


def test_resume_takes_only_runs_no_process_trains(tmp_path):
    """Two studies on one folder with --resume (one per core) must not train the same run twice:
    a run whose folder a live trainer holds is refused; a started run nobody holds is taken over
    only with --resume; a finished one never."""
    from ase_so3.io_utils import FolderInUseError, folder_lock
    from studies.attention_study import _startable
    runs = {name: tmp_path / name for name in ("live", "ended", "done")}
    for work in runs.values():
        work.mkdir()
    with folder_lock(runs["ended"], "test"):
        pass  # a run started by a process that has ended: its lock file stays, unheld
    (runs["done"] / "result.json").write_text("{}")
    assert _startable(tmp_path / "new", resume=False)
    assert not _startable(runs["ended"], resume=False)  # without --resume nothing is taken over
    assert _startable(runs["ended"], resume=True)
    assert not _startable(runs["done"], resume=True)
    with folder_lock(runs["live"], "test"):  # a live trainer: the one who tries next is refused
        assert _startable(runs["live"], resume=True)
        with pytest.raises(FolderInUseError):
            with folder_lock(runs["live"], "ase-so3 train"):
                pass
