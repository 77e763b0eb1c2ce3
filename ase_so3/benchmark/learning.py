"""``ase-so3 benchmark learning``: accuracy per CPU-second, ours and MACE side by side.

Per molecule (revised MD17, split 01: 950 train / 50 validation from ``train_01``, tested on
``test_01``), every model trains on the same HDF5 splits (extxyz for MACE's own trainer), one
after another, each alone in its process with the same thread count and the same wall-clock
budget. Recorded per model: the validation force MAE against training time (ours: the trainer's
``metrics.csv``; MACE: its per-epoch log, ``--error_table=PerAtomMAE``, both on EMA weights),
the test energy and force errors of what a run of the full budget ships and of what a run of
each shorter snapshot budget ships, parameters, epochs and structures/s.

Energies: with one composition the per-element reference energies are not identifiable, and
MACE's ``E0s=average`` leaves a constant offset that a short run does not learn. Both the raw
energy MAE and the offset-free one (the mean test error removed, for every model alike) are
reported; the tables use the offset-free one.

Every finished unit goes to ``results.json`` at once (``--resume`` keeps them; an interrupted
run of ours continues from its checkpoint, an interrupted MACE run from its newest checkpoint
with the budget its log shows is left). Then
``learning.md`` and ``learning_<molecule>.png`` are written.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from ase_so3.benchmark.harness import Results, environment, prepare_data
from ase_so3.errors import ConfigError

# MACE's rMD17 recipe (Batatia et al. 2022; mace-torch README) at two sizes; the
# width is the only change from its published models (256 channels), for CPU budgets.
MACE_RECIPE = {"model": "MACE", "correlation": 3, "num_interactions": 2, "r_max": 5.0,
               "batch_size": 5, "valid_batch_size": 10, "lr": 0.01, "energy_weight": 1.0,
               "forces_weight": 1000.0, "ema": True, "ema_decay": 0.99, "amsgrad": True,
               "scheduler_patience": 5, "default_dtype": "float32", "E0s": "average",
               "error_table": "PerAtomMAE"}
MACE_SIZES = {"mace-64x1o": {"num_channels": 64, "max_L": 1},
              "mace-128x2": {"num_channels": 128, "max_L": 2}}


def parse_models(items: list[str]) -> dict[str, dict]:
    """``NAME=CONFIG.yaml`` (ours: a training config) or a MACE size (``mace-64x1o``,
    ``mace-128x2``, or ``NAME=mace-64x1o`` for a named variant), each optionally followed by
    ``:key=value,...`` overrides."""
    out = {}
    for item in items:
        head, _, extra = item.partition(":")
        overrides = [kv for kv in extra.split(",") if kv]
        name, _, config = head.rpartition("=")
        name = name or config
        if config in MACE_SIZES:
            settings = {**MACE_RECIPE, **MACE_SIZES[config]}
            settings.update(kv.split("=", 1) for kv in overrides)
            out[name] = {"kind": "mace", "settings": settings}
        elif "=" in head:
            out[name] = {"kind": "ours", "config": config, "overrides": overrides}
        else:
            raise ConfigError(f"model {item!r}: use NAME=CONFIG.yaml for ours or one of "
                              f"{sorted(MACE_SIZES)}")
    return out


def mace_curve(log_path: Path) -> list[dict]:
    """(seconds of training, validation force MAE) per epoch of MACE's log
    (:func:`~ase_so3.benchmark.mace_backend.training_curve`)."""
    from ase_so3.benchmark.mace_backend import training_curve
    return training_curve(log_path)


def _budget_annealed(cfg) -> bool:
    """A schedule tied to the time budget: a snapshot of a longer run is not what a shorter run
    ships, so each budget trains as its own run."""
    return cfg.scheduler == "cosine_budget"


def _fit_ours(spec: dict, h5: Path, work: Path, args, log, minutes: float, snapshots) -> dict:
    import csv

    from ase_so3.training.config import TrainConfig
    from ase_so3.training.trainer import Trainer
    overrides = [f"data={h5}", f"output={work}", f"time_budget_minutes={minutes}",
                 f"threads={args.threads}", f"seed={args.seed}", "progress=false",
                 f"snapshot_minutes={list(snapshots)}", *spec["overrides"]]
    cfg = TrainConfig.load(spec["config"], overrides)
    result = Trainer(cfg).fit(resume=(work / "checkpoint_last.pt").is_file(), log=log)
    with open(work / "metrics.csv") as f:
        curve = [{"epoch": int(r["epoch"]), "elapsed_s": float(r["elapsed_s"]),
                  "val_forces_mae_meV_per_A": float(r["val_forces_mae_meV_per_A"]),
                  "structures_per_s": float(r["structures_per_s"])} for r in csv.DictReader(f)]
    return {"kind": "ours", "model": cfg.model, "path": str(work / "potential.pt"),
            "epochs": result["epochs"], "train_seconds": result["elapsed_s"], "curve": curve,
            "structures_per_s": float(np.median([r["structures_per_s"] for r in curve])),
            "command": f"ase-so3 train {spec['config']} " + " ".join(overrides)}


def _train_ours(spec: dict, h5: Path, work: Path, args, log) -> dict:
    from ase_so3.training.config import TrainConfig
    cfg = TrainConfig.load(spec["config"], [f"data={h5}", *spec["overrides"],
                                            f"time_budget_minutes={args.budget_minutes}"])
    if not _budget_annealed(cfg):
        unit = _fit_ours(spec, h5, work, args, log, args.budget_minutes, args.snapshot_minutes)
        snaps = {f"{m:g}": str(work / f"potential_{float(m):g}min.pt")
                 for m in args.snapshot_minutes}
        unit["snapshots"] = {k: v for k, v in snaps.items() if Path(v).is_file()}
        return unit
    unit = _fit_ours(spec, h5, work, args, log, args.budget_minutes, [])
    unit["snapshots"], unit["snapshot_runs"] = {}, {}
    for minutes in args.snapshot_minutes:
        short = _fit_ours(spec, h5, work.parent / f"{work.name}_{minutes:g}min", args,
                          lambda m, t=minutes: log(f"({t:g}-minute run) {m}"), minutes, [])
        unit["snapshots"][f"{minutes:g}"] = short.pop("path")
        unit["snapshot_runs"][f"{minutes:g}"] = short
    return unit


def _train_mace(name: str, spec: dict, h5: Path, work: Path, args, log) -> dict:
    import shutil

    from ase_so3.benchmark import mace_backend
    data_dir = work.parent / "xyz"
    if not (data_dir / "train.xyz").is_file():
        mace_backend.export_splits(h5, data_dir)
    resume = bool(getattr(args, "resume", False)
                  and mace_backend.checkpoint_epochs(work / "checkpoints"))
    if work.exists() and not resume:  # without --resume an interrupted MACE run starts again
        shutil.rmtree(work)
    info = mace_backend.train_mace(data_dir, work, args.budget_minutes, seed=args.seed,
                                   threads=args.threads, settings=spec["settings"],
                                   resume=resume, log=log)
    curve = mace_curve(work / "mace_train.log")
    snapshots = {}
    times = mace_backend.checkpoint_times(work / "mace_train.log")
    for minutes in args.snapshot_minutes:
        # what train_mace ships at a budget of `minutes`: MACE checkpoints on each improvement,
        # so the newest checkpoint of the epochs finished by then
        usable = [e for e in mace_backend.checkpoint_epochs(work / "checkpoints")
                  if e in times and times[e]["elapsed_s"] <= minutes * 60]
        if not usable:
            continue
        snap = work.parent / f"{name}_{minutes:g}min"
        if snap.exists():
            shutil.rmtree(snap)
        (snap / "checkpoints").mkdir(parents=True)
        src = mace_backend.checkpoint_epochs(work / "checkpoints")[usable[-1]]
        shutil.copy(src, snap / "checkpoints" / src.name)
        base = [a.replace(str(work), str(snap)) for a in info["base_command"]]
        mace_backend.export_epoch(base, usable[-1], snap / "mace_train.log", args.threads)
        snapshots[f"{minutes:g}"] = str(snap / "mace.model")
    return {"kind": "mace", "model": name, "path": info["model"], "snapshots": snapshots,
            "epochs": info["epochs"], "train_seconds": info["train_seconds"], "curve": curve,
            "structures_per_s": info["structures_per_s"], "command": info["command"],
            "settings": spec["settings"], "resumed_after_epochs": info["resumed_after_epochs"]}


def test_errors(spec: dict, images, e_ref: np.ndarray, f_ref: np.ndarray) -> dict:
    from ase_so3.benchmark.models import make_calculator, num_parameters, predict
    calc = make_calculator(spec, dtype="float64")
    pred = predict(calc, images)
    from ase_so3.training.metrics import error_metrics
    n = np.array([len(a) for a in images])
    return {**error_metrics(e_ref, np.array([p["energy"] for p in pred]), n, f_ref,
                            np.concatenate([p["forces"] for p in pred]), offset_free=True),
            "parameters": num_parameters(calc), "test_structures": len(images)}


def _test_set(h5: Path, limit: int | None):
    from ase_so3.training.hdf5 import HDF5Dataset
    ds = HDF5Dataset(h5)
    refs = [ds[int(i)] for i in ds.split("test")[:limit]]
    ds.close()
    images = [s.to_atoms() for s in refs]
    for a in images:
        a.calc = None
    return images, np.array([s.energy for s in refs]), np.concatenate([s.forces for s in refs])


def run(args, log=print) -> Path:
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    res = Results(out / "results.json", resume=args.resume)
    env = environment(args.threads)
    # the molecule's record is its first run's machine; each unit keeps its own as well
    if res.get("environment", args.molecule) is None:
        res.put(env, "environment", args.molecule)
    res.put({"budget_minutes": args.budget_minutes, "snapshot_minutes": args.snapshot_minutes,
             "threads": args.threads}, "settings", args.molecule)
    h5 = prepare_data(args, args.molecule, out)
    models = parse_models(args.models)
    test = None
    for name, spec in models.items():
        unit = res.get("molecules", args.molecule, name)
        if unit is not None and "test" in unit:
            continue
        work = out / "runs" / args.molecule / name
        say = lambda m, n=name: log(f"{args.molecule} {n}: {m}")  # noqa: E731
        start = time.perf_counter()
        unit = (_train_ours(spec, h5, work, args, say) if spec["kind"] == "ours"
                else _train_mace(name, spec, h5, work, args, say))
        unit["wall_seconds"] = time.perf_counter() - start
        unit["environment"] = env
        test = test or _test_set(h5, args.test_limit)
        kind = unit["kind"]
        unit["test"] = {f"{args.budget_minutes:g}": test_errors(
            {"kind": kind, "path": unit["path"]}, *test)}
        for minutes, path in unit["snapshots"].items():
            unit["test"][minutes] = test_errors({"kind": kind, "path": path}, *test)
        say(", ".join(f"{m} min: test F MAE {r['forces_mae_meV_per_A']:.2f} meV/Å"
                      for m, r in unit["test"].items()))
        res.put(unit, "molecules", args.molecule, name)
    from ase_so3.benchmark.learning_report import write_learning_report
    return write_learning_report(out)


def build_parser(p: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    p = p or argparse.ArgumentParser(prog="ase-so3 benchmark learning", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--molecule", required=True)
    p.add_argument("--models", nargs="+", required=True,
                   help="NAME=CONFIG.yaml[:key=value,...] for ours; mace-64x1o, mace-128x2 or "
                        "NAME=mace-64x1o[:key=value,...] for MACE")
    p.add_argument("--budget-minutes", type=float, default=60.0)
    p.add_argument("--snapshot-minutes", type=float, nargs="*", default=[15.0])
    p.add_argument("--data-dir", default="../shared/data/md17/rmd17")
    p.add_argument("--train", type=int, default=950)
    p.add_argument("--val", type=int, default=50)
    p.add_argument("--test-limit", type=int, default=None, help="first N test structures")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--output", default="learning_out")
    p.add_argument("--resume", action="store_true",
                   help="keep finished models of results.json and continue interrupted ones")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    print(run(args))
    return 0
