"""Training: HDF5 data, converters, trainer, resume, NaN guard, DDP, evaluation."""

import socket

import h5py
import numpy as np
import pytest
import torch
from ase import units
from ase.io import read, write

from ase_so3.training.config import TrainConfig
from ase_so3.training.convert import convert_to_hdf5, hdf5_to_extxyz, read_ase_file
from ase_so3.training.hdf5 import DatasetFileError, HDF5Dataset
from ase_so3.training.state import CheckpointError
from ase_so3.training.trainer import Trainer, TrainingDivergedError
from tests.conftest import ETHANOL, SHARED
TINY = {"lmax": 1, "mmax": 1, "channels": 4, "num_layers": 1, "num_radial": 4,
        "radial_hidden": 8, "readout_hidden": 8, "cutoff": 4.0}


def _cfg(data, out, **kw):
    base = dict(data=str(data), output=str(out), model="escn", model_config=dict(TINY),
                batch_size=4, max_epochs=3, lr=5e-3, progress=False, seed=1, warmup_epochs=0.5)
    base.update(kw)
    return TrainConfig(**base)


def test_npz_conversion_is_exact(ethanol_h5):
    ds = HDF5Dataset(ethanol_h5)
    raw_train, raw_test = (np.load(p) for p in ETHANOL)
    k = units.kcal / units.mol
    assert ds.split_names == ["test", "train", "val"]
    assert len(ds.split("train")) == 24 and len(ds.split("val")) == 8 and len(ds.split("test")) == 10
    assert not set(ds.split("train")) & set(ds.split("val"))
    for i in (0, 50, 99):  # the carried file's 100 train frames come first
        s = ds[i]
        assert np.array_equal(s.numbers, raw_train["nuclear_charges"])
        assert np.array_equal(s.positions, raw_train["coords"][i])
        assert s.energy == raw_train["energies"][i] * k
        assert np.array_equal(s.forces, raw_train["forces"][i] * k)
    first_test = ds[int(ds.split("test")[0])]
    assert np.array_equal(first_test.positions, raw_test["coords"][0])
    atoms = read(ethanol_h5, "3")  # through the registered ASE I/O format
    assert atoms.get_potential_energy() == ds[3].energy
    assert np.array_equal(atoms.get_forces(), ds[3].forces)
    assert "kcal/mol -> eV" in ds.provenance
    assert abs(k - 0.0433641) < 1e-7


def test_test_frames_also_in_the_train_file_are_left_out(tmp_path):
    # another split's test file may hold training frames of this one (test_02 holds five of
    # train_01): those must not count as test structures
    train, test = (dict(np.load(p)) for p in ETHANOL)
    mixed = {k: np.concatenate([train[k][:3], test[k][:4]]) if np.ndim(train[k]) and k !=
             "nuclear_charges" else train[k] for k in train}
    other = tmp_path / "rmd17_ethanol_test_09.npz"
    np.savez(other, **mixed)
    out = tmp_path / "blind.h5"
    sizes = convert_to_hdf5([ETHANOL[0], other], out, n_train=90, n_val=10)
    assert sizes["test"] == 4
    ds = HDF5Dataset(out)
    assert len(ds) == 104  # the three are not stored at all
    for i, k in enumerate(ds.split("test")):
        assert np.array_equal(ds[int(k)].positions, test["coords"][i])
    assert ds.split_description("test") == ("the official test file(s) rmd17_ethanol_test_09.npz, "
                                            "without the 3 structures also in the train file(s)")
    ds.close()


def test_extxyz_and_hdf5_round_trip(ethanol_h5, tmp_path):
    xyz = tmp_path / "val.xyz"
    assert hdf5_to_extxyz(ethanol_h5, xyz, split="val") == 8
    back = tmp_path / "back.h5"
    convert_to_hdf5([xyz], back, n_train=6, n_val=1, n_test=1)
    src, dst = HDF5Dataset(ethanol_h5), HDF5Dataset(back)
    frames = read(xyz, ":")
    assert len(dst) == len(frames) == 8
    for s, frame in zip(dst, frames):  # extxyz -> HDF5 is exact (same order: no reshuffle)
        assert s.energy == frame.info["REF_energy"]
        assert np.array_equal(s.forces, frame.arrays["REF_forces"])
        assert np.array_equal(s.positions, frame.positions)
    for i, frame in zip(src.split("val"), frames):  # ASE writes extxyz with 8 decimals
        ref = src[int(i)]
        assert frame.info["ase_so3_index"] == i
        assert abs(frame.info["REF_energy"] - ref.energy) < 1e-8
        assert np.abs(frame.arrays["REF_forces"] - ref.forces).max() < 1e-8
    # ase.io.write -> ase.io.read through the plugin
    images = read(xyz, ":")
    for a in images:
        from ase.calculators.singlepoint import SinglePointCalculator
        a.calc = SinglePointCalculator(a, energy=a.info["REF_energy"], forces=a.arrays["REF_forces"])
    write(tmp_path / "plugin.h5", images)
    again = read(tmp_path / "plugin.h5", ":")
    assert len(again) == 8
    assert all(np.array_equal(x.get_forces(), y.arrays["REF_forces"]) for x, y in zip(again, images))


def test_ase_db_with_kcal_units():
    db = SHARED / "md17_original" / "test_ethanol.db"
    structures = read_ase_file(db, energy_unit="kcal/mol")
    assert len(structures) == 20
    energies = [s.energy / (units.kcal / units.mol) for s in structures]
    assert -97208.5 < min(energies) < max(energies) < -97194.2


def test_malformed_hdf5_files_give_clear_errors(ethanol_h5, tmp_path):
    data = ethanol_h5.read_bytes()
    cut = tmp_path / "cut.h5"
    cut.write_bytes(data[: len(data) // 3])
    with pytest.raises(DatasetFileError, match="truncated"):
        HDF5Dataset(cut)
    plain = tmp_path / "plain.h5"
    with h5py.File(plain, "w") as f:
        f["x"] = np.zeros(3)
    with pytest.raises(DatasetFileError, match="not an ase_so3 data set"):
        HDF5Dataset(plain)
    broken = tmp_path / "broken.h5"
    broken.write_bytes(data)
    with h5py.File(broken, "a") as f:
        del f["structures/offsets"]
        f["structures/offsets"] = np.array([0, 5, 3])
    with pytest.raises(DatasetFileError, match="inconsistent"):
        HDF5Dataset(broken)
    missing = tmp_path / "missing.h5"
    missing.write_bytes(data)
    with h5py.File(missing, "a") as f:
        del f["atoms/forces"]
    with pytest.raises(DatasetFileError, match="missing"):
        HDF5Dataset(missing)
    with pytest.raises(DatasetFileError, match="no such file"):
        HDF5Dataset(tmp_path / "nope.h5")


def test_training_lowers_validation_force_error(ethanol_h5, tmp_path):
    small = {**TINY, "channels": 8, "num_layers": 2, "num_radial": 6, "radial_hidden": 16,
             "readout_hidden": 16}
    trainer = Trainer(_cfg(ethanol_h5, tmp_path / "run", max_epochs=5, batch_size=2, lr=1e-2,
                           model_config=small))
    before = trainer.validate()["forces_mae_meV_per_A"]
    result = trainer.fit(log=lambda *_: None)
    assert result["epochs"] == 5
    assert result["best_val_forces_mae_meV_per_A"] < 0.8 * before
    for name in ("potential.pt", "checkpoint_last.pt", "checkpoint_best.pt", "metrics.csv",
                 "metrics.jsonl", "config.yaml", "dataset_stats.json"):
        assert (tmp_path / "run" / name).is_file()
    from ase_so3 import SO3Calculator
    atoms = read(ethanol_h5, "0")
    atoms.calc = SO3Calculator(str(tmp_path / "run" / "potential.pt"))
    assert np.isfinite(atoms.get_forces()).all()


def kill_at_step(trainer, step: int, monkeypatch) -> None:
    """Run ``trainer.fit`` until Ctrl-C arrives in training step ``step`` (counted from 1)."""
    original = Trainer.train_step
    calls = {"n": 0}

    def dying_step(self, positions):
        calls["n"] += 1
        if calls["n"] == step:
            raise KeyboardInterrupt
        return original(self, positions)

    monkeypatch.setattr(Trainer, "train_step", dying_step)
    with pytest.raises(KeyboardInterrupt):
        trainer.fit(log=lambda *_: None)
    monkeypatch.setattr(Trainer, "train_step", original)


def test_kill_and_resume_matches_uninterrupted_run(ethanol_h5, tmp_path, monkeypatch):
    full = Trainer(_cfg(ethanol_h5, tmp_path / "full"))
    full.fit(log=lambda *_: None)
    # in the middle of epoch 3 (6 steps per epoch)
    kill_at_step(Trainer(_cfg(ethanol_h5, tmp_path / "killed")), 15, monkeypatch)
    resumed = Trainer(_cfg(ethanol_h5, tmp_path / "killed"))
    resumed.fit(resume=True, log=lambda *_: None)
    assert resumed.epoch == full.epoch == 3
    for (k, a), b in zip(full.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), k
    for k in full.ema.shadow:
        assert torch.equal(full.ema.shadow[k], resumed.ema.shadow[k])


def _step_gradients(trainer, batch):
    """The loss of one train_step and the gradients it leaves on the weights."""
    loss = trainer.train_step(batch)
    return loss, {k: p.grad.clone() for k, p in trainer.model.named_parameters()}


def test_train_step_gradients_equal_the_full_second_derivative(ethanol_h5, tmp_path):
    """train_step back-propagates the force loss to the weights only; its gradients equal those
    of differentiating the same loss by torch.autograd.grad with respect to every weight."""
    from ase_so3.potentials.forces import energy_forces_stress
    from ase_so3.training.trainer import loss_terms
    model_config = {**TINY, "message_centre": True, "message_gate": True, "ffn_hidden": 8,
                    "norm": True, "edge_degree_embedding": True, "edge_species": True}
    trainer = Trainer(_cfg(ethanol_h5, tmp_path / "run", dtype="float64", grad_clip=0,
                           ema_decay=0, model_config=model_config, kernels="torch"))
    batch = trainer.train_set.collate([0, 1, 2], trainer.dtype, "cpu")
    params = dict(trainer.model.named_parameters())
    pred = energy_forces_stress(trainer.model, batch[0], forces=True, training=True)
    loss = loss_terms(pred, batch[1], trainer.cfg)["total"]
    expected = dict(zip(params, torch.autograd.grad(loss, list(params.values()))))
    trainer.optimizer.param_groups[0]["lr"] = 0.0
    got_loss, got = _step_gradients(trainer, batch)
    assert got_loss == pytest.approx(float(loss), rel=1e-12)
    for k in params:
        torch.testing.assert_close(got[k], expected[k], rtol=1e-10, atol=1e-12, msg=k)


def test_fused_kernels_train_as_the_torch_path(ethanol_h5, tmp_path):
    """kernels: cpp (the fused CPU rotations) gives the loss and weight gradients of kernels:
    torch to round-off, in float64 and float32, and the backend is restored after the steps."""
    from ase_so3.so3 import cpu_kernels
    model_config = {**TINY, "lmax": 2, "mmax": 2, "message_centre": True, "message_gate": True,
                    "edge_degree_embedding": True}
    for dtype, tol in (("float64", 1e-10), ("float32", 2e-4)):
        results = {}
        for kernels in ("torch", "cpp"):
            trainer = Trainer(_cfg(ethanol_h5, tmp_path / kernels, dtype=dtype, grad_clip=0,
                                   model_config=model_config, kernels=kernels))
            batch = trainer.train_set.collate([0, 1, 2, 3], trainer.dtype, "cpu")
            with trainer.step_context(log=lambda *_: None):
                assert cpu_kernels.get_backend() == kernels
                results[kernels] = _step_gradients(trainer, batch)
            assert cpu_kernels.get_backend() == "torch"
        (loss_t, grad_t), (loss_c, grad_c) = results["torch"], results["cpp"]
        assert loss_c == pytest.approx(loss_t, rel=tol)
        for k in grad_t:
            torch.testing.assert_close(grad_c[k], grad_t[k], rtol=tol, atol=tol * 1e-2, msg=k)
    with pytest.raises(ValueError, match="kernels must be auto, cpp or torch"):
        _cfg(ethanol_h5, tmp_path / "bad", kernels="fast")


def test_a_second_training_into_a_folder_in_use_is_refused(ethanol_h5, tmp_path):
    """One writer per output folder: while a process trains into it, another training there
    stops at once, naming the holder; after the holder is killed with kill -9, --resume works."""
    import os
    import signal
    import subprocess
    import sys

    from ase_so3.io_utils import FolderInUseError
    out = tmp_path / "run"
    first = Trainer(_cfg(ethanol_h5, out, max_epochs=1))
    first.fit(log=lambda *_: None)
    holder = subprocess.Popen(  # holds the lock as a training does, until killed
        [sys.executable, "-c", "import sys, time\nfrom ase_so3.io_utils import folder_lock\n"
         f"with folder_lock({str(out)!r}, 'ase-so3 train'):\n"
         "    print('locked', flush=True)\n    time.sleep(600)"],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        second = Trainer(_cfg(ethanol_h5, out, max_epochs=2))
        with pytest.raises(FolderInUseError, match=f"pid {holder.pid} on .*started .*output="):
            second.fit(resume=True, log=lambda *_: None)
        assert second.epoch == 0  # refused before anything was read or written
    finally:
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait()
    resumed = Trainer(_cfg(ethanol_h5, out, max_epochs=2))
    assert resumed.fit(resume=True, log=lambda *_: None)["epochs"] == 2


def test_nan_loss_stops_and_keeps_last_checkpoint(ethanol_h5, tmp_path, monkeypatch):
    trainer = Trainer(_cfg(ethanol_h5, tmp_path / "nan"))
    import ase_so3.training.trainer as tm
    original = tm.loss_terms

    def poisoned(pred, target, cfg, weights=None):
        out = original(pred, target, cfg, weights)
        if trainer.epoch >= 1:
            out["total"] = out["total"] * float("nan")
        return out

    monkeypatch.setattr(tm, "loss_terms", poisoned)
    with pytest.raises(TrainingDivergedError, match="last good checkpoint .* is kept"):
        trainer.fit(log=lambda *_: None)
    ckpt = torch.load(tmp_path / "nan" / "checkpoint_last.pt", weights_only=True)
    assert ckpt["epoch"] == 1
    assert all(torch.isfinite(v).all() for v in ckpt["state_dict"].values() if v.is_floating_point())


def test_checkpoint_from_another_model_is_refused(ethanol_h5, tmp_path):
    Trainer(_cfg(ethanol_h5, tmp_path / "run", max_epochs=1)).fit(log=lambda *_: None)
    tfn = Trainer(_cfg(ethanol_h5, tmp_path / "run", model="tfn",
                       model_config={"lmax": 1, "channels": 4, "num_layers": 1, "cutoff": 4.0}))
    with pytest.raises(CheckpointError, match="checkpoint of a 'escn' model"):
        tfn.fit(resume=True, log=lambda *_: None)
    other = Trainer(_cfg(ethanol_h5, tmp_path / "run", model_config={**TINY, "channels": 8}))
    with pytest.raises(CheckpointError, match="different model configuration"):
        other.fit(resume=True, log=lambda *_: None)


def _ddp_worker(rank, world, port, data, out, batch, result_path):
    import os
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(world),
                      RANK=str(rank), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    trainer = Trainer(_cfg(data, out))
    shard = np.array_split(np.asarray(batch), world)[rank].tolist()
    trainer.optimizer.zero_grad()
    trainer.compute_loss(shard)["total"].backward()
    if rank == 0:
        torch.save({k: p.grad for k, p in trainer.model.named_parameters()}, result_path)
    # both ranks leave together: a rank tearing gloo down while the other still talks to it
    # aborts the process ("terminate called without an active exception")
    torch.distributed.barrier()
    torch.distributed.destroy_process_group()


def test_two_process_ddp_gradients_equal_single_process(ethanol_h5, tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    batch = [0, 5, 9, 13]
    result = tmp_path / "ddp_grads.pt"
    torch.multiprocessing.spawn(_ddp_worker, args=(2, port, ethanol_h5, tmp_path / "ddp", batch,
                                                    result), nprocs=2, join=True)
    single = Trainer(_cfg(ethanol_h5, tmp_path / "single"))
    single.optimizer.zero_grad()
    single.compute_loss(batch)["total"].backward()
    ddp = torch.load(result, weights_only=True)
    for k, p in single.model.named_parameters():
        assert torch.allclose(ddp[k], p.grad, rtol=1e-10, atol=1e-12), k


def test_evaluate_writes_csv_and_parity_plot(ethanol_h5, tmp_path, capsys):
    from ase_so3.cli import main
    Trainer(_cfg(ethanol_h5, tmp_path / "run", max_epochs=1)).fit(log=lambda *_: None)
    assert main(["evaluate", str(tmp_path / "run" / "potential.pt"), str(ethanol_h5),
                 "--split", "test", "--output", str(tmp_path / "eval")]) == 0
    out = capsys.readouterr().out
    assert "forces MAE" in out and "energy MAE" in out
    assert len((tmp_path / "eval" / "errors.csv").read_text().splitlines()) == 11
    assert (tmp_path / "eval" / "parity.png").stat().st_size > 5000


def test_config_overrides_and_errors(tmp_path):
    yml = tmp_path / "c.yaml"
    yml.write_text("data: x.h5\nmodel: tfn\nmodel_config: {lmax: 2}\n")
    cfg = TrainConfig.load(yml, ["model_config.channels=8", "lr=1e-3", "max_epochs=7"])
    assert cfg.model_config == {"lmax": 2, "channels": 8} and cfg.lr == 1e-3 and cfg.max_epochs == 7
    with pytest.raises(ValueError, match="unknown training options"):
        TrainConfig.load(yml, ["learning_rate=1"])


def test_lazy_reading_with_dataloader_workers_matches_preloaded(ethanol_h5, tmp_path):
    from ase_so3.training.data import GraphSet, batch_loader
    ds = HDF5Dataset(ethanol_h5)
    idx = ds.split("train")
    eager, lazy = GraphSet(ds, idx, 4.0, preload=True), GraphSet(ds, idx, 4.0, preload=False)
    assert lazy._items is None
    batches = eager.batches(5, shuffle=True, seed=3, epoch=1)
    for (g1, t1), (g2, t2) in zip(batch_loader(eager, batches, torch.float64, 0),
                                  batch_loader(lazy, batches, torch.float64, 2)):
        for k in g1:
            assert torch.equal(g1[k], g2[k]), k
        for k in t1:
            assert torch.equal(t1[k], t2[k]), k
    # the trainer with lazy data and two workers gives the same model as the preloaded one
    a = Trainer(_cfg(ethanol_h5, tmp_path / "a", max_epochs=1))
    b = Trainer(_cfg(ethanol_h5, tmp_path / "b", max_epochs=1, preload=False, num_workers=2))
    a.fit(log=lambda *_: None)
    b.fit(log=lambda *_: None)
    for (k, x), y in zip(a.model.state_dict().items(), b.model.state_dict().values()):
        assert torch.equal(x, y), k


def test_energy_shift_refit_removes_the_mean_training_error(ethanol_h5, tmp_path):
    from ase_so3 import load_potential
    from ase_so3.training.trainer import evaluate_graph_set
    trainer = Trainer(_cfg(ethanol_h5, tmp_path / "run", max_epochs=1))
    trainer.fit(log=lambda *_: None)  # ends with a refit
    model = load_potential(tmp_path / "run" / "potential.pt")
    errs = []
    for b in trainer.train_set.batches(8, shuffle=False):
        graph, target = trainer.train_set.collate(b, torch.float64, "cpu")
        with torch.no_grad():
            errs.append((model(graph)["energy"] - target["energy"]) / target["num_atoms"])
    assert abs(float(torch.cat(errs).mean())) < 1e-9
    assert "energy_shift_refit_eV_per_atom" in model.metadata
    assert evaluate_graph_set(model, trainer.val_set, 8, torch.float64, "cpu")["energy_mae_meV"] >= 0


def test_snapshot_is_what_a_run_of_that_budget_ships(ethanol_h5, tmp_path, monkeypatch):
    """``snapshot_minutes``: the potential a shorter budget would ship. Time is faked: each
    epoch takes 60 s, so a 2-minute snapshot is written after epoch 2 and equals the
    potential of a run with ``time_budget_minutes=2``."""
    import itertools

    import ase_so3.training.trainer as trainer_module
    from ase_so3 import load_potential
    clock = itertools.count(step=30.0)  # perf_counter is read twice per epoch
    monkeypatch.setattr(trainer_module.time, "perf_counter", lambda: next(clock))
    long = Trainer(_cfg(ethanol_h5, tmp_path / "long", max_epochs=4, snapshot_minutes=[2],
                        amsgrad=True))
    long.fit(log=lambda *_: None)
    clock = itertools.count(step=30.0)
    monkeypatch.setattr(trainer_module.time, "perf_counter", lambda: next(clock))
    short = Trainer(_cfg(ethanol_h5, tmp_path / "short", max_epochs=4, time_budget_minutes=2,
                         amsgrad=True))
    assert short.fit(log=lambda *_: None)["epochs"] == 2
    assert long.optimizer.param_groups[0]["amsgrad"]
    snap = load_potential(tmp_path / "long" / "potential_2min.pt")
    shipped = load_potential(tmp_path / "short" / "potential.pt")
    for (k, a), b in zip(snap.state_dict().items(), shipped.state_dict().values()):
        assert torch.equal(a, b), k
    assert snap.metadata["epochs"] == shipped.metadata["epochs"] <= 2
    assert not (tmp_path / "long" / "potential_3min.pt").exists()


def test_init_from_starts_at_the_given_weights_and_refuses_another_model(ethanol_h5, tmp_path):
    from ase_so3.loading import load_potential
    from ase_so3.potentials.serialization import PotentialFileError
    first = Trainer(_cfg(ethanol_h5, tmp_path / "a", max_epochs=2))
    first.fit(log=lambda *_: None)
    source = tmp_path / "a" / "potential.pt"
    trained = load_potential(source).state_dict()
    tuned = Trainer(_cfg(ethanol_h5, tmp_path / "b", init_from=str(source), seed=5))
    start = tuned.model.state_dict()
    assert set(start) == set(trained)
    for key in trained:  # the first trainer's exported weights, not seed 5's initialisation
        assert torch.equal(start[key].cpu(), trained[key]), key
    fresh = Trainer(_cfg(ethanol_h5, tmp_path / "c", seed=5)).model.state_dict()
    assert any(not torch.equal(fresh[k], trained[k]) for k in trained)
    # the new potential records where it started
    tuned.cfg = _cfg(ethanol_h5, tmp_path / "b", init_from=str(source), seed=5, max_epochs=1)
    tuned.fit(log=lambda *_: None)
    meta = load_potential(tmp_path / "b" / "potential.pt").metadata
    assert meta["init_from"]["source"] == str(source)
    assert meta["init_from"]["epochs"] == load_potential(source).metadata["epochs"]  # its best
    # a file written before an option existed (its default) is the same architecture
    from ase_so3.potentials.serialization import _checksum
    payload = torch.load(source, weights_only=True)
    key = next(k for k, v in payload["config"].items()
               if k not in TINY and v is False)  # an option left at its default
    del payload["config"][key]
    payload["checksum"] = _checksum(payload["model"], payload["config"], payload["state_dict"])
    older = tmp_path / "older.pt"
    torch.save(payload, older)
    Trainer(_cfg(ethanol_h5, tmp_path / "f", init_from=str(older)))
    other = dict(TINY, channels=6)
    with pytest.raises(PotentialFileError, match="channels"):
        Trainer(_cfg(ethanol_h5, tmp_path / "d", model_config=other, init_from=str(source)))
    with pytest.raises(PotentialFileError, match="neither a potential file nor a shipped"):
        Trainer(_cfg(ethanol_h5, tmp_path / "e", init_from="no-such-potential"))


def test_error_metrics_is_the_one_definition_of_the_reported_errors():
    from ase_so3.training.metrics import error_metrics
    m = error_metrics(e_ref=[1.0, 2.0], e_pred=[1.003, 1.999], num_atoms=[3, 1],
                      f_ref=np.zeros((4, 3)), f_pred=np.full((4, 3), 0.002), offset_free=True)
    assert m["energy_mae_meV"] == pytest.approx(2.0) and m["energy_rmse_meV"] == pytest.approx(5 ** 0.5)
    assert m["energy_mae_meV_per_atom"] == pytest.approx(1.0)
    assert m["energy_mae_offset_free_meV"] == pytest.approx(2.0)  # errors +3, -1 about +1
    assert m["forces_mae_meV_per_A"] == pytest.approx(2.0) and m["forces_rmse_meV_per_A"] == pytest.approx(2.0)
    assert "energy_mae_offset_free_meV" not in error_metrics([0.0], [0.0], [1], [0.0], [0.0])


def test_blow_up_with_a_finite_loss_stops_before_checkpointing(ethanol_h5, tmp_path, monkeypatch):
    trainer = Trainer(_cfg(ethanol_h5, tmp_path / "run", max_epochs=4))
    original = trainer.validate
    scale = {1: 1.0, 2: 0.5, 3: 12.0}  # epoch 3: 24x the best (epoch 2)

    def validate():
        out = dict(original())
        out["forces_mae_meV_per_A"] = 100.0 * scale[trainer.epoch + 1]
        return out

    monkeypatch.setattr(trainer, "validate", validate)
    with pytest.raises(TrainingDivergedError,
                       match=r"1200 meV/Å in epoch 3, 24x the best \(50 in epoch 2.*"
                             r"lr=.* --resume-from .*checkpoint_best.pt"):
        trainer.fit(log=lambda *_: None)
    last = torch.load(tmp_path / "run" / "checkpoint_last.pt", weights_only=True)
    best = torch.load(tmp_path / "run" / "checkpoint_best.pt", weights_only=True)
    assert last["epoch"] == 2 and best["epoch"] == 2 and "optimizer" in best
    # a factor of 0 never stops
    off = Trainer(_cfg(ethanol_h5, tmp_path / "off", max_epochs=3, divergence_factor=0))
    first = off.validate
    monkeypatch.setattr(off, "validate", lambda: {**first(), "forces_mae_meV_per_A":
                                                  100.0 * scale[off.epoch + 1]})
    assert off.fit(log=lambda *_: None)["epochs"] == 3


def test_ddp_stride_warning_silenced_only_for_a_row_weights_same_layout():
    import warnings

    from ase_so3.training.distributed import same_layout_strides_quiet
    head = ("Grad strides do not match bucket view strides. This may indicate grad was not "
            "created according to the gradient layout contract, or that the param's strides "
            "changed since DDP was constructed.  This is not an error, but may impair "
            "performance.\n")
    same = head + ("grad.sizes() = [1, 32], strides() = [1, 1]\n"
                   "bucket_view.sizes() = [1, 32], strides() = [32, 1] (Triggered internally)")
    other = head + ("grad.sizes() = [4, 32], strides() = [1, 4]\n"
                    "bucket_view.sizes() = [4, 32], strides() = [32, 1] (Triggered internally)")
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        with same_layout_strides_quiet():
            warnings.warn(same, UserWarning)
            warnings.warn(other, UserWarning)
    assert [str(w.message) for w in seen] == [other]
