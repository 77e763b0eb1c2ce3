"""Potential files, checkpoints and writes: damaged, foreign, newer or empty files are refused
with a clear error; a kill at any write of an epoch resumes consistently; writes are atomic."""

import csv
import json
import os

import numpy as np
import pytest
import torch

from ase_so3 import SO3Calculator, load_potential
from ase_so3.cli import main
from ase_so3.errors import PotentialFileError
from ase_so3.io_utils import atomic_path
from ase_so3.potentials.serialization import read_potential_file
from ase_so3.training.state import CheckpointError
from ase_so3.training.trainer import Trainer
from tests.conftest import make_model
from tests.integration.test_training import _cfg


def _quiet(*_):
    pass


def test_not_a_potential_file(tmp_path):
    junk = tmp_path / "junk.pt"
    junk.write_bytes(os.urandom(256))
    with pytest.raises(PotentialFileError, match="not a readable ase_so3 potential"):
        load_potential(junk)
    other = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(3)}, other)
    with pytest.raises(PotentialFileError, match="not an ase_so3 potential file"):
        load_potential(other)


def test_truncated_and_tampered_files(tmp_path):
    model = make_model("escn")
    path = tmp_path / "m.pt"
    model.save(path)
    data = path.read_bytes()
    cut = tmp_path / "cut.pt"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(PotentialFileError, match="truncated or damaged"):
        load_potential(cut)
    payload = torch.load(path, weights_only=True)
    key = next(k for k in payload["state_dict"] if k.endswith("weight"))
    payload["state_dict"][key] = payload["state_dict"][key] + 1e-3
    torch.save(payload, tmp_path / "tampered.pt")
    with pytest.raises(PotentialFileError, match="checksum does not match"):
        load_potential(tmp_path / "tampered.pt")


def test_newer_format_and_unknown_model(tmp_path):
    model = make_model("tfn")
    model.save(tmp_path / "m.pt")
    payload = torch.load(tmp_path / "m.pt", weights_only=True)
    newer = dict(payload, format_version=99)
    torch.save(newer, tmp_path / "newer.pt")
    with pytest.raises(PotentialFileError, match="version 99.*Upgrade ase_so3"):
        load_potential(tmp_path / "newer.pt")
    alien = dict(payload, model="allegro", checksum=None)
    torch.save(alien, tmp_path / "alien.pt")
    with pytest.raises(PotentialFileError, match="'allegro' model, which this ase_so3 does not know"):
        load_potential(tmp_path / "alien.pt")


def test_weights_of_another_model_are_refused(tmp_path):
    tfn = make_model("tfn")
    tfn.save(tmp_path / "m.pt")
    payload = torch.load(tmp_path / "m.pt", weights_only=True)
    escn_state = make_model("escn").state_dict()
    torch.save(dict(payload, state_dict=escn_state, checksum=None), tmp_path / "mixed.pt")
    with pytest.raises(PotentialFileError, match="weights do not fit a 'tfn' model"):
        load_potential(tmp_path / "mixed.pt")


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_pickled_code_is_refused(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"format": "ase_so3.potential", "payload": _Evil()}, path)
    with pytest.raises(PotentialFileError, match="pickled code, which is refused"):
        load_potential(path)


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


def test_atomic_write_keeps_previous_file_on_failure(tmp_path):
    target = tmp_path / "model.pt"
    make_model("tfn").save(target)
    before = target.read_bytes()
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"partial")
            raise RuntimeError("killed mid-write")
    assert target.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["model.pt"]


def test_atomic_writes_get_normal_permissions(tmp_path):
    target = tmp_path / "model.pt"
    make_model("tfn").save(target)
    mask = os.umask(0)
    os.umask(mask)
    assert (target.stat().st_mode & 0o777) == (0o666 & ~mask)


def test_ctrl_c_while_a_frame_is_written_finishes_that_frame(tmp_path, monkeypatch):
    """Ctrl-C that arrives during a trajectory write waits for the frame to be complete: the run
    stops as interrupted and every frame in the file reads back."""
    import os
    import signal

    from ase.io import read
    from ase.io.trajectory import TrajectoryWriter

    from ase_so3 import md
    from ase_so3.data import load_named_structure
    original = TrajectoryWriter.write
    calls = {"n": 0}

    def write_with_ctrl_c(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 5:
            os.kill(os.getpid(), signal.SIGINT)  # delivered before the frame is written
        return original(self, *args, **kwargs)

    monkeypatch.setattr(TrajectoryWriter, "write", write_with_ctrl_c)
    calc = SO3Calculator(make_model("tfn"))
    # Python's own handler, as an interactive session has it (a shell starts a background job
    # with SIGINT ignored, and then Python installs none)
    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        res = md.run_md(load_named_structure("ethanol"), calc, steps=50, output=tmp_path / "md",
                        progress=False)
    finally:
        signal.signal(signal.SIGINT, before)
    assert res.interrupted and res.steps_done == 4
    assert len(read(tmp_path / "md" / "trajectory.traj", ":")) == 5  # the fifth one finished
