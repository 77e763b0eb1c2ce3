"""Error paths around files and kills: empty and damaged potentials and checkpoints, a kill at
every write of an epoch, and an MD run killed hard."""

import csv
import json

import numpy as np
import pytest
import torch

from ase_so3 import SO3Calculator, load_potential
from ase_so3.cli import main
from ase_so3.errors import PotentialFileError
from ase_so3.potentials.serialization import read_potential_file
from ase_so3.training.state import CheckpointError
from ase_so3.training.trainer import Trainer
from tests.test_training import _cfg


def _quiet(*_):
    pass


def test_an_empty_potential_file_gives_the_damaged_file_error(tmp_path, capsys):
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    for load in (load_potential, SO3Calculator):
        with pytest.raises(PotentialFileError, match="is empty"):
            load(str(empty))
    for argv in (["check", str(empty)], ["md", "ethanol", "--potential", str(empty), "--steps", "1"]):
        assert main(argv) != 0
        err = capsys.readouterr().err
        assert "is empty (0 bytes)" in err and "Traceback" not in err


def test_an_empty_checkpoint_gives_a_clear_error(small_h5, tmp_path):
    out = tmp_path / "run"
    Trainer(_cfg(small_h5, out, max_epochs=1)).fit(log=_quiet)
    (out / "checkpoint_last.pt").write_bytes(b"")
    with pytest.raises(CheckpointError, match=r"is empty .*checkpoint_best.pt \(epoch 1\) is intact"):
        Trainer(_cfg(small_h5, out, max_epochs=2)).fit(resume=True, log=_quiet)


def _flip_middle(path, n=16):
    """Flip 16 bytes in the middle of the largest tensor's data (not in the zip's padding)."""
    state = torch.load(path, weights_only=True)["state_dict"]
    big = max(state.values(), key=lambda t: t.numel()).contiguous()
    raw = big.reshape(-1).view(torch.uint8).numpy().tobytes()
    data = bytearray(path.read_bytes())
    at = data.find(raw) + len(raw) // 2
    assert at > len(raw) // 2
    data[at:at + n] = bytes(b ^ 0xFF for b in data[at:at + n])
    path.write_bytes(bytes(data))


def test_a_corrupted_checkpoint_is_refused_and_an_intact_one_is_named(small_h5, tmp_path):
    out = tmp_path / "run"
    Trainer(_cfg(small_h5, out, max_epochs=2)).fit(log=_quiet)
    best = torch.load(out / "checkpoint_best.pt", weights_only=True)["epoch"]
    _flip_middle(out / "checkpoint_last.pt")
    with pytest.raises(CheckpointError) as info:
        Trainer(_cfg(small_h5, out, max_epochs=3)).fit(resume=True, log=_quiet)
    msg = str(info.value)
    assert "damaged" in msg and f"checkpoint_best.pt (epoch {best}) is intact" in msg
    assert "--resume-from" in msg
    resumed = Trainer(_cfg(small_h5, out, max_epochs=3))
    resumed.fit(resume_from=out / "checkpoint_best.pt", log=_quiet)
    assert resumed.epoch == 3
    with open(out / "metrics.csv", newline="") as f:
        assert [int(r["epoch"]) for r in csv.DictReader(f)] == [1, 2, 3]


def test_train_cli_resumes_from_a_named_checkpoint(small_h5, tmp_path, capsys):
    out = tmp_path / "run"
    Trainer(_cfg(small_h5, out, max_epochs=1)).fit(log=_quiet)
    assert main(["train", "model=escn", f"data={small_h5}", f"output={out}", "max_epochs=2",
                 "progress=false", "model_config={lmax: 1, mmax: 1, channels: 4, num_layers: 1, "
                 "num_radial: 4, radial_hidden: 8, readout_hidden: 8, cutoff: 4.0}",
                 "batch_size=4", "lr=0.005", "seed=1", "warmup_epochs=0.5",
                 "--resume-from", str(out / "checkpoint_best.pt")]) == 0
    assert "resumed from epoch 1" in capsys.readouterr().out


class _Killed(BaseException):
    """Stands for SIGKILL: nothing after it runs."""


WRITES = ["checkpoint_best", "checkpoint_last", "potential", "logs"]


@pytest.mark.parametrize("where", [(w, when) for w in WRITES for when in ("before", "after")])
def test_a_kill_at_any_write_of_an_epoch_resumes_consistently(small_h5, tmp_path, monkeypatch,
                                                               where):
    """Epoch 2 is the best one (validation scores fixed by the test); the process dies just
    before or after one of its writes; after --resume the log has each epoch once and
    potential.pt and checkpoint_best.pt hold the best epoch."""
    import ase_so3.training.trainer as tm
    target, when = where
    out = tmp_path / "run"
    cfg = dict(max_epochs=4)
    state = {"epoch": 0}
    real_save, real_export, real_logs = tm.save_checkpoint, Trainer.export_potential, Trainer._write_logs

    def maybe_die(name, fn, *args):
        hit = state["epoch"] == 2 and name == target
        if hit and when == "before":
            raise _Killed
        fn(*args)
        if hit:
            raise _Killed

    def save(path, payload):
        state["epoch"] = payload["epoch"]
        maybe_die(path.stem, real_save, path, payload)

    scores = [50.0, 40.0, 60.0, 70.0]

    def validate(self):
        return {"energy_mae_meV": 1.0, "energy_rmse_meV": 1.0, "energy_mae_meV_per_atom": 0.1,
                "forces_mae_meV_per_A": scores[self.epoch], "forces_rmse_meV_per_A": 1.0}

    monkeypatch.setattr(Trainer, "validate", validate)
    monkeypatch.setattr(tm, "save_checkpoint", save)
    monkeypatch.setattr(Trainer, "export_potential",
                        lambda self, path: maybe_die("potential", real_export, self, path))
    monkeypatch.setattr(Trainer, "_write_logs",
                        lambda self, row: maybe_die("logs", real_logs, self, row))
    with pytest.raises(_Killed):
        Trainer(_cfg(small_h5, out, **cfg)).fit(log=_quiet)
    monkeypatch.undo()
    monkeypatch.setattr(Trainer, "validate", validate)
    resumed = Trainer(_cfg(small_h5, out, **cfg))
    resumed.fit(resume=True, log=_quiet)
    with open(out / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3, 4]
    jsonl = [json.loads(line)["epoch"] for line in open(out / "metrics.jsonl")]
    assert jsonl == [1, 2, 3, 4]
    assert read_potential_file(out / "potential.pt")["metadata"]["epochs"] == 2
    assert torch.load(out / "checkpoint_best.pt", weights_only=True)["epoch"] == 2


def test_md_writes_its_log_while_it_runs(tmp_path, monkeypatch):
    """log.csv on disk holds the steps done so far while the run goes on (read at step 25, as a
    hard kill there would leave it)."""
    from ase_so3 import md
    from ase_so3.data import load_named_structure
    from tests.conftest import make_model
    calc = SO3Calculator(make_model("escn", channels=4, num_layers=1, lmax=1, mmax=1))
    original = calc.calculate
    calls = {"n": 0}

    def dying(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] > 25:
            with open(tmp_path / "md" / "log.csv", newline="") as f:
                calls["rows"] = list(csv.DictReader(f))
            raise _Killed
        return original(*args, **kwargs)

    monkeypatch.setattr(calc, "calculate", dying)
    with pytest.raises(_Killed):
        md.run_md(load_named_structure("ethanol"), calc, steps=100, output=tmp_path / "md",
                  progress=False, log_every=10)
    rows = calls["rows"]
    assert len(rows) >= 10 and np.isfinite([float(r["total_eV"]) for r in rows]).all()
