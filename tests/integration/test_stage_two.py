"""The second training stage (MACE's stage two): loss weights, learning rate, the epoch shipped,
exact resume, when it starts, and the logs of a run that gains a column."""

import csv

import pytest
import torch

import ase_so3.training.trainer as tm
from ase_so3.errors import ConfigError
from ase_so3.training import logs, stages
from ase_so3.training.config import TrainConfig
from ase_so3.training.trainer import Trainer
from tests.integration.test_training import _cfg, kill_at_step

STAGE_TWO = dict(max_epochs=4, stage_two_start=2, stage_two_lr=1e-4,
                 stage_two_energy_weight=5e4, stage_two_forces_weight=10.0)


def test_second_stage_weights_learning_rate_and_shipped_epoch(ethanol_h5, tmp_path, monkeypatch):
    trainer = Trainer(_cfg(ethanol_h5, tmp_path / "run", **STAGE_TWO))
    seen = []
    original_loss = tm.loss_terms

    def spy(pred, target, cfg, weights=None):
        seen.append((trainer.epoch + 1, weights))
        return original_loss(pred, target, cfg, weights)

    monkeypatch.setattr(tm, "loss_terms", spy)
    # stage two's force MAE is worse than stage one's, its validation loss falls: epoch 4 ships
    fake = {1: (50.0, 2.0), 2: (40.0, 2.0), 3: (60.0, 1.0), 4: (70.0, 0.5)}
    original_validate = trainer.validate

    def validate():
        f_mae, e_rmse = fake[trainer.epoch + 1]
        return {**original_validate(), "forces_mae_meV_per_A": f_mae,
                "forces_rmse_meV_per_A": f_mae, "energy_rmse_meV_per_atom": e_rmse}

    monkeypatch.setattr(trainer, "validate", validate)
    messages = []
    result = trainer.fit(log=messages.append)
    assert {w for e, w in seen if e <= 2} == {(trainer.cfg.energy_weight, trainer.cfg.forces_weight)}
    assert {w for e, w in seen if e >= 3} == {(5e4, 10.0)}
    assert any(m.startswith("second stage from epoch 3: energy weight 50000, forces weight 10, "
                            "learning rate 0.0001") for m in messages)
    lrs = [r["lr"] for r in trainer.history]
    assert lrs[2:] == [1e-4, 1e-4] and lrs[1] != 1e-4
    assert result["stage_two_from"] == 3 and result["best_epoch"] == 4
    assert result["best_val_forces_mae_meV_per_A"] == 70.0
    best = torch.load(tmp_path / "run" / "checkpoint_best.pt", weights_only=True)
    assert best["epoch"] == 4 and best["stage_two_from"] == 3
    from ase_so3.potentials.serialization import read_potential_file
    meta = read_potential_file(tmp_path / "run" / "potential.pt")["metadata"]
    assert meta["epochs"] == 4 and meta["stage_two_from"] == 3
    assert meta["best_val_forces_mae_meV_per_A"] == 70.0
    # the validation loss is the training loss's form: 5e4 (0.5e-3)^2 + 10 (70e-3)^2
    assert stages.validation_loss(trainer.history[3], (5e4, 10.0)) == pytest.approx(
        5e4 * 0.5e-3 ** 2 + 10 * 70e-3 ** 2)


def test_second_stage_resumes_exactly(ethanol_h5, tmp_path, monkeypatch):
    full = Trainer(_cfg(ethanol_h5, tmp_path / "full", **STAGE_TWO))
    full.fit(log=lambda *_: None)
    # in the middle of epoch 4 (6 steps per epoch), in stage two
    kill_at_step(Trainer(_cfg(ethanol_h5, tmp_path / "killed", **STAGE_TWO)), 21, monkeypatch)
    resumed = Trainer(_cfg(ethanol_h5, tmp_path / "killed", **STAGE_TWO))
    resumed.fit(resume=True, log=lambda *_: None)
    assert resumed.stage_two_from == full.stage_two_from == 3
    assert resumed.epoch == full.epoch == 4
    for (k, a), b in zip(full.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), k
    assert [r["lr"] for r in resumed.history] == [r["lr"] for r in full.history]


def test_when_the_second_stage_begins():
    by_epoch = TrainConfig(data="x", max_epochs=100, stage_two_start=80)
    assert not stages.begins(by_epoch, 79, 1e9) and stages.begins(by_epoch, 80, 0.0)
    fraction = TrainConfig(data="x", max_epochs=100, stage_two_start=0.8)
    assert not stages.begins(fraction, 79, 0.0) and stages.begins(fraction, 80, 0.0)
    budget = TrainConfig(data="x", max_epochs=100000, stage_two_start=0.8,
                         time_budget_minutes=10, scheduler="cosine_budget")
    assert not stages.begins(budget, 5, 479.0) and stages.begins(budget, 5, 480.0)
    assert not stages.begins(TrainConfig(data="x"), 10 ** 6, 1e9)
    assert stages.loss_weights(by_epoch, False) == (1.0, 100.0)
    assert stages.loss_weights(by_epoch, True) == (1000.0, 100.0)


@pytest.mark.parametrize("options, message", [
    (dict(stage_two_start=0), "must be an epoch"),
    (dict(stage_two_start=-0.5), "must be an epoch"),
    (dict(stage_two_start=2.5), "whole number"),
    (dict(stage_two_start=10, max_epochs=10), "never runs"),
    (dict(stage_two_start=0.8, stage_two_lr=0), "stage_two_lr must be positive"),
    (dict(stage_two_start=0.8, stage_two_energy_weight=-1), "stage_two_energy_weight"),
])
def test_second_stage_options_that_cannot_work_are_refused(options, message):
    with pytest.raises(ConfigError, match=message):
        TrainConfig(data="x", **options)


def test_logs_of_a_run_that_gains_a_column(tmp_path):
    old = [{"epoch": e, "lr": 0.1, "val_forces_mae_meV_per_A": 9.0 - e} for e in (1, 2)]
    logs.rewrite(tmp_path, old)
    new = {"epoch": 3, "lr": 0.1, "val_forces_mae_meV_per_A": 5.0, "val_energy_rmse": 1.5}
    logs.append_row(tmp_path, new, old + [new])
    with open(tmp_path / "metrics.csv", newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["epoch", "lr", "val_forces_mae_meV_per_A", "val_energy_rmse"]
    assert [len(r) for r in rows] == [4, 4, 4, 4] and rows[1][3] == "" and rows[3][3] == "1.5"
    latest = {**new, "epoch": 4}
    logs.append_row(tmp_path, latest, old + [new, latest])  # appended under the same header
    assert logs.read_csv(tmp_path / "metrics.csv")[3] == {**latest, "epoch": 4.0}
    assert "val_energy_rmse" not in logs.read_csv(tmp_path / "metrics.csv")[0]
    assert len(logs.read_history(tmp_path)) == 4
