"""The learning-efficiency benchmark (ours vs MACE at equal budget): its parts, and end to end
for one model of ours on a tiny slice."""

import json

import numpy as np
import pytest
import yaml

from ase_so3.benchmark.learning import MACE_RECIPE, build_parser, mace_curve, parse_models, run
from ase_so3.benchmark.learning_report import budget_table, write_learning_report
from tests.conftest import RMD17


def _line(t: str, what: str) -> str:
    return f"2026-01-01 {t}.000 INFO: {what}"


def _epoch(t: str, e, mae: float) -> str:
    label = "Initial" if e is None else f"Epoch {e}"
    return _line(t, f"{label}: head: Default, loss=1.0, MAE_E_per_atom=   1.00 meV, "
                    f"MAE_F=  {mae:.2f} meV / A")


BANNER = "===========VERIFYING SETTINGS==========="
# a run from 10:00 interrupted after epoch 2 (checkpoints 0, 1; epoch 2 did not improve), resumed
# at 11:00 from checkpoint 1 (MACE trains label 1 again and saves it), and exported at 12:00 (a
# restart that trains no epoch)
LOG = "\n".join([
    _line("10:00:00", BANNER), _epoch("10:00:05", None, 900.0), _epoch("10:01:00", 0, 90.0),
    _epoch("10:02:00", 1, 60.0), _epoch("10:03:00", 2, 61.0),
    _line("11:00:00", BANNER), _epoch("11:00:05", None, 60.0), _epoch("11:01:30", 1, 50.0),
    _epoch("11:02:30", 2, 45.0),
    _line("12:00:00", BANNER), _epoch("12:00:05", None, 45.0)]) + "\n"


def test_mace_curve_stitches_a_resumed_run_and_skips_the_export(tmp_path):
    path = tmp_path / "mace_train.log"
    path.write_text(LOG)
    curve = mace_curve(path)
    assert [r["epoch"] for r in curve] == [1, 2, 3, 4]
    # timed from each process's banner; the resumed process continues at label 1's 120 s and
    # replaces the first process's epoch 2
    assert [r["elapsed_s"] for r in curve] == pytest.approx([60.0, 120.0, 210.0, 270.0])
    assert [r["val_forces_mae_meV_per_A"] for r in curve] == [90.0, 60.0, 50.0, 45.0]


def _checkpoints(work, epochs, broken=()):
    import zipfile
    (work / "checkpoints").mkdir(parents=True)
    for e in epochs:
        path = work / "checkpoints" / f"mace_run-0_epoch-{e}.pt"
        with zipfile.ZipFile(path, "w") as z:
            z.writestr("data.pkl", b"x" * 100)
        if e in broken:  # killed while writing
            path.write_bytes(path.read_bytes()[:50])


def test_mace_ships_the_newest_intact_checkpoint_within_the_budget(tmp_path):
    from ase_so3.benchmark.mace_backend import checkpoint_times, keep_within_budget
    (tmp_path / "mace_train.log").write_text(LOG)
    times = checkpoint_times(tmp_path / "mace_train.log")  # label 1's file is the resumed one
    assert {k: (r["index"], r["elapsed_s"]) for k, r in times.items()} == {
        0: (0, 60.0), 1: (2, 210.0), 2: (3, 270.0)}
    _checkpoints(tmp_path, [0, 1, 2], broken=[2])
    assert keep_within_budget(tmp_path, 300.0) == 1  # 2 is truncated
    assert keep_within_budget(tmp_path, 200.0) == 0  # 1 finished at 210 s
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == [
        "mace_run-0_epoch-0.pt"]
    assert len(list((tmp_path / "checkpoints_past_budget").iterdir())) == 2  # kept, not shipped
    assert keep_within_budget(tmp_path, 250.0) == 1  # a longer budget takes one back
    assert (tmp_path / "checkpoints" / "mace_run-0_epoch-1.pt").is_file()


@pytest.mark.parametrize("budget_s, saved", [(600.0, [0, 1, 2]), (250.0, [0, 1])])
def test_mace_resume_trains_only_for_the_budget_left(tmp_path, monkeypatch, budget_s, saved):
    from ase_so3.benchmark import mace_backend
    (tmp_path / "mace_train.log").write_text(LOG)
    _checkpoints(tmp_path, saved)
    (tmp_path / "train.xyz").write_text("1\nProperties=species:S:1:pos:R:3\nH 0 0 0\n")
    runs, exports = [], []
    monkeypatch.setattr(mace_backend, "require_mace", lambda: None)
    monkeypatch.setattr(mace_backend, "_mace_command", lambda: ["mace_run_train"])
    monkeypatch.setattr(mace_backend, "_run_for",
                        lambda cmd, seconds, *a: runs.append((cmd, seconds)) or (True, -15))

    def export(base, epoch, *a):
        exports.append(epoch)
        (tmp_path / "mace.model").write_text("model")
    monkeypatch.setattr(mace_backend, "export_epoch", export)
    info = mace_backend.train_mace(tmp_path, tmp_path, budget_s / 60, resume=True, log=print)
    assert info["resumed_after_epochs"] == {2: 4, 1: 3}[saved[-1]]
    if budget_s > 270:  # label 2's checkpoint is at 270 s of training: 330 s left
        assert len(runs) == 1 and "--restart_latest" in runs[0][0]
        assert runs[0][1] == pytest.approx(330.0)
        assert exports == [2]
    else:  # the log is past the budget already (label 2 at 270 s, not saved): label 1 ships,
        # the third epoch of the training
        assert runs == [] and exports == [1] and info["epochs"] == 3
        assert info["train_seconds"] == pytest.approx(budget_s)


def test_parse_models():
    models = parse_models(["mace-128x2:lr=0.005", "escn=configs/escn-rmd17.yaml:lmax=3"])
    mace = models["mace-128x2"]
    assert mace["kind"] == "mace" and mace["settings"]["num_channels"] == 128
    assert mace["settings"]["forces_weight"] == MACE_RECIPE["forces_weight"] == 1000.0
    assert mace["settings"]["lr"] == "0.005"
    assert models["escn"] == {"kind": "ours", "config": "configs/escn-rmd17.yaml",
                              "overrides": ["lmax=3"]}
    named = parse_models(["mace-exp=mace-64x1o:scheduler=ExponentialLR"])["mace-exp"]
    assert named["kind"] == "mace" and named["settings"]["num_channels"] == 64
    assert named["settings"]["scheduler"] == "ExponentialLR"
    with pytest.raises(ValueError, match="NAME=CONFIG.yaml"):
        parse_models(["escn"])


def _unit(kind, f15, f60):
    test = lambda f: {"forces_mae_meV_per_A": f, "forces_rmse_meV_per_A": 1.3 * f,  # noqa: E731
                      "energy_mae_meV": 9.0, "energy_mae_offset_free_meV": 1.0,
                      "energy_mae_meV_per_atom": 0.1, "parameters": 10, "test_structures": 5}
    curve = [{"epoch": e, "elapsed_s": 600.0 * e - 1.0, "val_forces_mae_meV_per_A": 50.0 / e}
             for e in range(1, 7)]
    return {"kind": kind, "curve": curve, "structures_per_s": 3.0, "command": "cmd",
            "test": {"15": test(f15), "60": test(f60)}}


def test_budget_table_takes_the_best_mace_at_each_budget(tmp_path):
    models = {"mace-a": _unit("mace", 20.0, 10.0), "mace-b": _unit("mace", 25.0, 8.0),
              "escn": _unit("ours", 10.0, 12.0)}
    rows = {(r["budget_minutes"], r["model"]): r for r in budget_table(models)}
    assert rows[15.0, "escn"]["ratio_to_best_mace"] == pytest.approx(0.5)
    assert rows[60.0, "escn"]["ratio_to_best_mace"] == pytest.approx(1.5)
    assert rows[60.0, "mace-b"]["ratio_to_best_mace"] == pytest.approx(1.0)
    assert rows[15.0, "escn"]["epochs"] == 1 and rows[60.0, "escn"]["epochs"] == 6
    (tmp_path / "results.json").write_text(json.dumps({"molecules": {"ethanol": models}}))
    text = write_learning_report(tmp_path).read_text()
    assert "| 60 | escn | 10 | 6 | 3.0 | 1.00 | 12.00 | 15.60 | 1.50 |" in text
    assert (tmp_path / "learning_ethanol.png").stat().st_size > 1000
    assert text.count("Machine: None, None;") == 1
    # a model trained later on another machine says so; the others keep the molecule's record
    models["mace-b"]["environment"] = {"platform": "vm-2", "ase_so3": "0.2.1"}
    (tmp_path / "results.json").write_text(json.dumps({
        "molecules": {"ethanol": models},
        "environment": {"ethanol": {"platform": "vm-1", "ase_so3": "0.2.0"}}}))
    text = write_learning_report(tmp_path).read_text()
    assert "Machine for mace-a, escn: None, vm-1; torch None" in text and "ase_so3 0.2.0" in text
    assert "Machine for mace-b: None, vm-2;" in text and "Machine:" not in text
    assert "resumed" not in text
    models["mace-b"]["resumed_after_epochs"] = 24  # an interrupted run says so
    (tmp_path / "results.json").write_text(json.dumps({"molecules": {"ethanol": models}}))
    text = write_learning_report(tmp_path).read_text()
    assert "- mace-b: `cmd` (interrupted; resumed after 24 epochs" in text


def test_end_to_end_for_a_model_of_ours(tmp_path):
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump({
        "model": "escn", "batch_size": 5, "max_epochs": 2, "dtype": "float32",
        "forces_weight": 1000.0, "amsgrad": True,
        "model_config": {"lmax": 1, "channels": 4, "num_layers": 1, "num_radial": 4,
                         "radial_hidden": 8, "readout_hidden": 8, "edge_species": True,
                         "message_gate": True, "norm": True, "ffn_hidden": 4}}))
    common = ["--molecule", "ethanol", "--train", "20", "--val", "5", "--test-limit", "4",
              "--data-dir", str(RMD17), "--output", str(tmp_path / "out")]
    run(build_parser().parse_args([*common, "--models", f"tiny={config}", "--budget-minutes", "5",
                                   "--snapshot-minutes", "0"]), log=lambda *_: None)
    # a schedule annealed over the budget: the shorter budget is a run of its own
    report = run(build_parser().parse_args([
        *common, "--models", f"annealed={config}:scheduler=cosine_budget,max_epochs=1000",
        "--budget-minutes", "0.04", "--snapshot-minutes", "0.01", "--resume"]), log=lambda *_: None)
    units = json.loads((tmp_path / "out" / "results.json").read_text())["molecules"]["ethanol"]
    for name, budgets in (("tiny", {"5", "0"}), ("annealed", {"0.04", "0.01"})):
        assert set(units[name]["test"]) == budgets  # the full budget and the shorter one
        for errors in units[name]["test"].values():
            assert np.isfinite(errors["forces_mae_meV_per_A"]) and errors["test_structures"] == 4
    assert len(units["tiny"]["curve"]) == 2 and units["tiny"]["epochs"] == 2
    assert units["tiny"]["environment"]["threads"] == 1
    assert "snapshot_runs" not in units["tiny"]
    long, short = units["annealed"], units["annealed"]["snapshot_runs"]["0.01"]
    assert "time_budget_minutes=0.01" in short["command"]
    assert units["annealed"]["snapshots"]["0.01"].endswith("annealed_0.01min/potential.pt")
    for run_, budget_s in ((long, 2.4), (short, 0.6)):  # each stopped by its own budget
        assert run_["curve"][-1]["elapsed_s"] >= budget_s > run_["curve"][-2]["elapsed_s"]
    assert long["epochs"] > short["epochs"] > 1
    rows = {(r["budget_minutes"], r["model"]): r for r in budget_table(units)}
    assert rows[0.01, "annealed"]["epochs"] == short["epochs"] - 1
    assert rows[0.04, "annealed"]["epochs"] == long["epochs"] - 1
    assert "tiny" in report.read_text() and "annealed" in report.read_text()


def test_ablation_table_reads_each_variant(tmp_path):
    from studies.ablation import VARIANTS, slug, table
    for name, offset in (("full", 0.0), ("no message gate", 5.0)):
        run = tmp_path / slug(name)
        run.mkdir()
        rows = ["epoch,elapsed_s,val_forces_mae_meV_per_A"]
        rows += [f"{e},{30 * e},{40.0 / e + offset}" for e in range(1, 13)]
        (run / "metrics.csv").write_text("\n".join(rows) + "\n")
    text = table(tmp_path, epochs=10, speed={"full": 47.5}, minutes=6.0)
    lines = {line.split(" | ")[0].lstrip("| "): line for line in text.splitlines()[2:]}
    assert set(lines) == {"full", "no message gate"} and len(VARIANTS) > 2
    # the 6-minute budget ends with epoch 12 (360 s); 10 * 950 / 47.5 s = 3.3 min
    assert lines["full"] == "| full | 12 | 3.3 | 4.0 | 47.5 | 3.3 |"
    assert lines["no message gate"].startswith("| no message gate | 12 | 8.3 | 9.0 | - | - |")
    short = table(tmp_path, epochs=10, speed={}, minutes=2.0).splitlines()[2]
    assert short.startswith("| full | 4 | 10.0 | 4.0 |")  # cut at the first epoch past 120 s


def test_pareto_front_and_matched_accuracy_table():
    from ase_so3.benchmark.pareto import _nice_ticks, collect_rows, markdown, pareto_front
    assert pareto_front([(1.0, 10.0), (2.0, 5.0), (3.0, 7.0), (0.5, 20.0)]) == [3, 0, 1]
    assert _nice_ticks(14.5, 144.0) == [15, 20, 30, 50, 70, 100, 150]  # the ends labelled
    assert len(_nice_ticks(0.01, 1e5)) <= 8
    results = {"molecules": {"ethanol": {
        "escn": {"kind": "ours", "epochs": 100, "test": {
            "15": {"forces_mae_meV_per_A": 17.0, "parameters": 10},
            "60": {"forces_mae_meV_per_A": 7.0, "parameters": 10}}},
        "mace-64x1o": {"kind": "mace", "epochs": 50, "test": {
            "15": {"forces_mae_meV_per_A": 23.0, "parameters": 20},
            "60": {"forces_mae_meV_per_A": 14.0, "parameters": 20}}}}}}
    timings = {"ethanol": {"escn": {"latency_ms": 5.0, "md_steps_per_s": 150.0, "timed_file": "a"},
                           "mace-64x1o": {"latency_ms": 20.0, "md_steps_per_s": 40.0,
                                          "timed_file": "b"}}}
    rows = collect_rows(results, timings)
    assert len(rows) == 4 and {r["epochs"] for r in rows if r["budget_min"] == 60} == {100, 50}
    text = markdown(rows)
    assert "| escn | 60 | 10 | 7.00 | - | 5.00 | 150.0 | 0.50 | 0.25 |" in text
    assert "| mace-64x1o | 15 | 20 | 23.00 | - | 20.00 | 40.0 | 1.00 | 1.00 |" in text
