"""``ase-so3 benchmark training-speed``: runs end to end on a small data set (no timing is
asserted: the benchmark measures, the test checks that it measures what it says)."""

import json
import shutil
from pathlib import Path

import pytest

from ase_so3.benchmark import training_speed

ROOT = Path(__file__).resolve().parents[2]


def test_training_speed_table_with_baseline_and_mace(ethanol_h5, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    shutil.copy(ethanol_h5, data / "ethanol.h5")
    out = tmp_path / "out"
    assert training_speed.main(["--data", str(data), "--molecules", "ethanol", "--models",
                                "escn", "mace", "--steps", "3", "--warmup", "1", "--repeats", "1", "--baseline",
                                str(ROOT), "--profile", "--out", str(out)]) == 0
    result = json.loads((out / "results.json").read_text())
    rows = {(r["model"], r["code"]): r for r in result["rows"]}
    assert set(rows) == {("escn", "baseline"), ("escn", "this"), ("mace", "this")}
    for r in rows.values():
        assert r["structures_per_s"] > 0 and r["parameters"] > 1000
    assert rows["escn", "this"]["package"] == str(ROOT / "ase_so3")
    profile = rows["escn", "this"]["profile"]
    assert set(profile["phases_ms"]) == {"forward", "forces", "backward", "optimizer+EMA"}
    assert profile["operators"] and all(o["ms_per_step"] >= 0 for o in profile["operators"])
    table = (out / "results.md").read_text()
    assert "| ethanol | escn | this" in table and "| ethanol | mace |" in table
    assert "Where one eSCN step goes" in table
    with pytest.raises(SystemExit):
        training_speed.main(["--data", str(data), "--steps", "2", "--warmup", "2"])


def test_curves_plot_reads_the_runs_metrics(tmp_path):
    for name, scale in (("old", 1.0), ("new", 0.8)):
        run = tmp_path / name
        run.mkdir()
        rows = ["epoch,elapsed_s,val_forces_mae_meV_per_A"] + [
            f"{e},{e * 30.0 * scale},{100.0 / e}" for e in range(1, 6)]
        (run / "metrics.csv").write_text("\n".join(rows) + "\n")
    out = tmp_path / "plot"
    assert training_speed.main(["--data", str(tmp_path), "--curves", f"old={tmp_path / 'old'}",
                                f"new={tmp_path / 'new'}", "--out", str(out)]) == 0
    curves = json.loads((out / "learning_curves.json").read_text())
    assert curves["new"]["elapsed_s"][-1] == 120.0 and curves["old"]["val_forces_mae"][0] == 100.0
    assert (out / "learning_curves.png").stat().st_size > 5000
