"""Shipping a potential: the model card that ``release.publish`` writes, the MACE row it
takes from a learning-benchmark result, and the README table built from the cards."""

import json

import pytest

from release import publish as pub
from ase_so3.pretrained import table
from ase_so3.training.trainer import Trainer
from tests.integration.test_training import _cfg


def _curve(minutes):
    # the last epoch ends just inside the budget (the trainer stops after it)
    return [{"epoch": i + 1, "elapsed_s": 60.0 * (i + 1) * minutes / 4 - 1.0} for i in range(4)]


LEARNING = {"molecules": {"ethanol": {
    "mace-64x1o": {"kind": "mace", "curve": _curve(60), "test": {
        "60": {"forces_mae_meV_per_A": 12.5, "energy_mae_offset_free_meV": 3.3,
               "parameters": 241296}}},
    "mace-128x2": {"kind": "mace", "curve": _curve(60), "test": {
        "60": {"forces_mae_meV_per_A": 14.0, "energy_mae_offset_free_meV": 3.9,
               "parameters": 900000}}},
    "escn": {"kind": "ours", "curve": _curve(60), "test": {
        "60": {"forces_mae_meV_per_A": 7.0, "energy_mae_offset_free_meV": 1.2,
               "parameters": 200000}}}}}}


def test_projected_minutes_follow_the_power_law_of_the_curve():
    # F = 100 t^-0.5 (t in minutes): 10 meV/Å at 100 minutes
    history = [{"elapsed_s": 60.0 * m, "val_forces_mae_meV_per_A": 100 * m ** -0.5}
               for m in range(1, 21)]
    assert abs(pub.project_minutes(history, 10.0) - 100.0) < 1e-6
    assert pub.project_minutes(history, 50.0) == 4.0  # already reached at 4 minutes
    flat = [{"elapsed_s": 60.0 * m, "val_forces_mae_meV_per_A": 30.0} for m in range(1, 21)]
    assert pub.project_minutes(flat, 10.0) is None
    assert pub.target_forces_mae("escn", "aspirin") == 13.2
    assert pub.target_forces_mae("tfn", "ethanol") == 5.6
    assert pub.target_forces_mae("tfn", "uracil") is None


def test_a_flat_curve_projects_nothing_whatever_sign_its_fitted_slope_has(monkeypatch):
    """A flat curve's least-squares slope is round-off (-2e-15 on one machine, +2e-15 on
    another): the projection is decided on the data, not on that sign."""
    import numpy as np
    flat = [{"elapsed_s": 60.0 * m, "val_forces_mae_meV_per_A": 30.0} for m in range(1, 21)]
    fit = np.polyfit
    for sign in (-1, 1):
        monkeypatch.setattr(np, "polyfit", lambda x, y, d, s=sign: (s * 2e-15, fit(x, y, d)[1]))
        assert pub.project_minutes(flat, 10.0) is None
        assert pub.project_from_budgets({"4": 30.0, "16": 30.0}, 10.0)[0] is None


def test_projection_from_two_budgets_follows_their_power_law(tmp_path):
    # F = 100 t^-0.5: 50 at 4 min, 25 at 16 min -> 10 meV/Å at 100 minutes
    minutes, b = pub.project_from_budgets({"4": 50.0, "16": 25.0}, 10.0)
    assert abs(minutes - 100.0) < 1e-6 and abs(b + 0.5) < 1e-9
    assert pub.project_from_budgets({"4": 50.0, "16": 25.0}, 30.0) == (16.0, None)  # met
    assert pub.project_from_budgets({"4": 20.0, "16": 25.0}, 10.0)[0] is None
    # the card prefers the budgets of the learning benchmark to the run's validation curve
    run = tmp_path / "runs" / "escn"
    unit = {"path": str(run / "potential.pt"), "test": {
        "15": {"forces_mae_meV_per_A": 20.0}, "60": {"forces_mae_meV_per_A": 10.0}}}
    results = tmp_path / "results.json"
    results.write_text(json.dumps({"molecules": {"ethanol": {"escn": unit}}}))
    found = pub.learning_unit(results, "ethanol", run)
    assert found is not None and pub.learning_unit(results, "ethanol", tmp_path) is None
    history = [{"elapsed_s": 60.0 * m, "val_forces_mae_meV_per_A": 100 * m ** -0.5}
               for m in range(1, 61)]
    entry = pub.target_entry("escn", "ethanol", 10.0, history, found)
    assert entry["forces_mae_meV_per_A"] == 4.2 and not entry["met"]
    assert abs(entry["projected_training_minutes"] - 60 * (10 / 4.2) ** 2) < 1e-6
    assert "15 and 60-minute budgets" in entry["projection"]
    curve_only = pub.target_entry("escn", "ethanol", 10.0, history, None)
    assert "validation curve" in curve_only["projection"]


def test_mace_at_budget_is_the_best_mace_of_that_budget(tmp_path):
    path = tmp_path / "results.json"
    path.write_text(json.dumps(LEARNING))
    best = pub.mace_at_budget(path, "ethanol", 60)
    assert best["model"] == "mace-64x1o" and best["forces_mae_meV_per_A"] == 12.5
    assert best["energy_mae_offset_free_meV"] == 3.3 and best["epochs"] == 4
    assert pub.mace_at_budget(path, "ethanol", 15) is None
    assert pub.mace_at_budget(path, "aspirin", 60) is None


def test_publish_writes_the_file_a_card_and_a_parity_plot_the_table_reads(small_h5, tmp_path, monkeypatch):
    run = tmp_path / "run"
    Trainer(_cfg(small_h5, run, max_epochs=1)).fit(log=lambda *_: None)
    (run / "metrics.jsonl").unlink()  # a run that kept only metrics.csv publishes too
    results = tmp_path / "results.json"
    results.write_text(json.dumps(LEARNING))
    monkeypatch.setattr(pub, "HERE", tmp_path / "pkg")
    monkeypatch.setattr("ase_so3.pretrained.HERE", tmp_path / "pkg")
    card = pub.publish("escn-test-ethanol", run, small_h5, "ethanol", command="ase-so3 train x",
                       hardware="test machine", date="2026-12-02", commit="abc1234",
                       learning_results=results, budget_minutes=60, plot_dir=tmp_path / "plots",
                       blind=small_h5)  # as a blind test file: here the same one
    on_disk = json.loads((tmp_path / "pkg" / "escn-test-ethanol.json").read_text())
    assert on_disk == json.loads(json.dumps(card))
    assert card["version"]["trained"] == "2026-12-02" and card["version"]["commit"] == "abc1234"
    assert card["training"]["epochs"] == 1 and card["published_mace"]["forces_mae_meV_per_A"] == 2.1
    assert card["mace_same_budget"]["model"] == "mace-64x1o"
    assert card["target"]["forces_mae_meV_per_A"] == 4.2 and card["target"]["met"] is False
    assert card["test_errors"]["forces_mae_meV_per_A"] > 0
    blind = card["blind_test_errors"]
    assert blind["forces_mae_meV_per_A"] == pytest.approx(card["test_errors"]["forces_mae_meV_per_A"])
    assert blind["data"].startswith(small_h5.name + ": ") and blind["num_structures"] == 4
    assert (tmp_path / "plots" / "escn-test-ethanol_parity.png").stat().st_size > 1000
    assert (tmp_path / "pkg" / "escn-test-ethanol.pt").read_bytes() == \
        (run / "potential.pt").read_bytes()
    md = table.markdown(long=True)
    row = next(line for line in md.splitlines() if "escn-test-ethanol" in line)
    f = card["test_errors"]["forces_mae_meV_per_A"]
    assert f"| {f:.1f} | 0.4 / 2.1 | 3.3 / 12.5 | 4.2: not met" in row and "| 1 epochs" in row
    assert row.endswith(f"| {blind['energy_mae_meV']:.1f} / {blind['forces_mae_meV_per_A']:.1f} |")
    e = card["test_errors"]["energy_mae_meV"]
    minutes = card["training"]["wall_time_s"] / 60
    assert (f"| ethanol | {e:.1f} / {f:.1f} | — | — | {e:.1f} / {f:.1f} ({minutes:.0f} min) | "
            "0.4 / 2.1 | 3.3 / 12.5 (60 min) |" in table.by_molecule())

    # fine-tuned from it: the card keeps the first run's record and measures the new potential
    from release import finetuned
    monkeypatch.setattr(finetuned, "HERE", tmp_path / "pkg")
    tuned = tmp_path / "tuned"
    Trainer(_cfg(small_h5, tuned, max_epochs=2, lr=1e-3,
                 init_from=str(tmp_path / "pkg" / "escn-test-ethanol.pt"))).fit(log=lambda *_: None)
    with pytest.raises(SystemExit, match="records 1 earlier stage"):
        finetuned.finetuned_card("escn-test-ethanol", [], tuned / "potential.pt", small_h5,
                                 "ethanol", "ase-so3 train y", "gpu")
    on_disk["uncertainty"] = {"forces_scale_meV_per_A": 5.0}  # a calibration of these weights
    (tmp_path / "pkg" / "escn-test-ethanol.json").write_text(json.dumps(on_disk))
    new = finetuned.finetuned_card("escn-test-ethanol", [tuned], tuned / "potential.pt", small_h5,
                                   "ethanol", "ase-so3 train y", "a GPU", "2026-12-04", "def5678",
                                   plot_dir=tmp_path / "plots2")
    first, second = new["training"]["stages"]
    assert first["test_errors"] == card["test_errors"] and first["command"] == "ase-so3 train x"
    assert second["epochs"] == 2 and second["lr"] == 1e-3 and second["hardware"] == "a GPU"
    assert new["training"]["epochs"] == 3 and new["command"] == "ase-so3 train y"
    assert new["test_errors"] != card["test_errors"] and new["version"]["commit"] == "def5678"
    assert "blind_test_errors" not in new and "uncertainty" not in new  # of the earlier weights
    monkeypatch.setattr(pub, "HERE", tmp_path / "pkg")
    added = pub.main(["--add-blind", "escn-test-ethanol", str(small_h5)])
    blind2 = json.loads((tmp_path / "pkg" / "escn-test-ethanol.json").read_text())["blind_test_errors"]
    assert added == 0 and blind2["forces_mae_meV_per_A"] == pytest.approx(
        new["test_errors"]["forces_mae_meV_per_A"])
    assert new["mace_same_budget"]["compares_with"] == "stage 1"
    assert new["target"]["met"] == (new["test_errors"]["forces_mae_meV_per_A"] <= 4.2)
    assert (tmp_path / "pkg" / "escn-test-ethanol.pt").read_bytes() == \
        (tuned / "potential.pt").read_bytes()
    assert (tmp_path / "plots2" / "escn-test-ethanol_parity.png").stat().st_size > 1000
    e2, f2 = new["test_errors"]["energy_mae_meV"], new["test_errors"]["forces_mae_meV_per_A"]
    assert (f"| ethanol | {e2:.1f} / {f2:.1f} | — | — | {e:.1f} / {f:.1f} ({minutes:.0f} min) |"
            in table.by_molecule())
    # MACE runs recorded later reach a fine-tuned card as a comparison with its first stage
    later = json.loads(json.dumps(LEARNING))
    later["molecules"]["ethanol"]["escn"]["test"]["15"] = {
        "forces_mae_meV_per_A": 14.0, "energy_mae_offset_free_meV": 2.0, "parameters": 200000}
    later["molecules"]["ethanol"]["mace-64x1o"]["test"]["60"]["forces_mae_meV_per_A"] = 11.0
    results.write_text(json.dumps(later))
    again = pub.reproject("escn-test-ethanol", results, "ethanol", "escn")
    assert first["time_budget_minutes"] == 60
    assert again["mace_same_budget"]["forces_mae_meV_per_A"] == 11.0
    assert again["mace_same_budget"]["compares_with"] == "stage 1"
    assert again["target"]["projection"].endswith(pub.FROM_SCRATCH_NOTE)
    assert "15 and 60-minute budgets" in again["target"]["projection"]
    assert again["target"]["met"] == (f2 <= 4.2) and again["test_errors"] == new["test_errors"]
    with pytest.raises(SystemExit, match="already describes a fine-tuned"):
        finetuned.finetuned_card("escn-test-ethanol", [tuned], tuned / "potential.pt", small_h5,
                                 "ethanol", "z", "gpu")
