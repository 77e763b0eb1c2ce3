"""``ase-so3 benchmark run``: TFN, SE(3)-Transformer, eSCN and MACE through the same work.

Per molecule (revised MD17, split 01): the same HDF5 data set and splits for everyone (exported to
extxyz for MACE's own trainer); accuracy on the same test structures; energy+forces latency and MD
throughput through the ASE calculators on the molecule and on periodic boxes of it (~100 to
~10,000 atoms) with peak memory; Langevin MD stability at 500 K. Every finished unit is saved to
``results.json`` at once, so an interrupted benchmark resumes where it stopped (``--resume``).
Then ``report.md`` and plots are written from ``results.json`` (:mod:`.report`).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np

from ase_so3.errors import MissingFileError, UnknownNameError
from ase_so3.io_utils import atomic_path
from ase_so3.training.metrics import error_metrics

OUR_MODELS = ("tfn", "se3_transformer", "escn")
SHIPPED_MODEL_CONFIG = {"lmax": 2, "channels": 32, "num_layers": 2, "cutoff": 5.0}


class Results:
    """``results.json``: nested dict saved atomically after every finished unit. Each save re-reads
    the file under a lock and merges, so several harness processes (e.g. one per molecule) can
    share one output folder."""

    def __init__(self, path: Path, resume: bool):
        self.path = path
        if not resume and path.is_file():
            path.unlink()
        self.data = self._read()

    def _read(self) -> dict:
        return json.loads(self.path.read_text()) if self.path.is_file() else {}

    def get(self, *keys):
        d = self.data
        for k in keys:
            if not isinstance(d, dict) or k not in d:
                return None
            d = d[k]
        return d

    def put(self, value, *keys) -> None:
        import fcntl
        with open(self.path.with_suffix(".lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            self.data = self._read()
            d = self.data
            for k in keys[:-1]:
                d = d.setdefault(k, {})
            d[keys[-1]] = value
            with atomic_path(self.path) as tmp:
                tmp.write_text(json.dumps(self.data, indent=1, default=float))


def environment(threads: int) -> dict:
    import ase
    import e3nn
    import torch

    import ase_so3
    env = {"python": platform.python_version(), "platform": platform.platform(),
           "processor": platform.processor() or platform.machine(), "torch": torch.__version__,
           "e3nn": e3nn.__version__, "ase": ase.__version__, "ase_so3": ase_so3.__version__,
           "threads": threads, "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available()
           else None}
    try:
        import mace
        env["mace"] = mace.__version__
    except ImportError:
        env["mace"] = None
    from ase_so3.allocator import configure_from_environment
    env["allocator"] = configure_from_environment()  # the workers inherit the same setting
    return env


def prepare_data(args, molecule: str, out: Path) -> Path:
    from ase_so3.training.convert import convert_to_hdf5
    h5 = out / "data" / f"rmd17_{molecule}_01.h5"
    if not h5.is_file():
        src = Path(args.data_dir)
        files = [src / f"rmd17_{molecule}_train_01.npz", src / f"rmd17_{molecule}_test_01.npz"]
        for f in files:
            if not f.is_file():
                raise MissingFileError(f"{f} not found; point --data-dir at the rMD17 .npz files")
        convert_to_hdf5(files, h5, n_train=args.train, n_val=args.val, seed=0)
    return h5


def _median_throughput(metrics_csv: Path) -> float:
    """Median training structures/s over the epochs of a trainer's ``metrics.csv``."""
    import csv
    with open(metrics_csv) as f:
        return float(np.median([float(r["structures_per_s"]) for r in csv.DictReader(f)]))


def train_ours(args, model: str, h5: Path, work: Path, log) -> dict:
    from ase_so3.training.config import TrainConfig
    from ase_so3.training.trainer import Trainer
    config = dict(SHIPPED_MODEL_CONFIG)
    for item in args.our_config:
        key, value = item.split("=", 1)
        config[key] = json.loads(value) if value[:1] in "0123456789-[{tf" else value
    cfg = TrainConfig(data=str(h5), output=str(work), model=model, model_config=config,
                      batch_size=5, time_budget_minutes=args.budget_minutes,
                      max_epochs=args.max_epochs, lr=5e-3, plateau_patience=5, dtype="float32",
                      threads=args.threads, seed=args.seed, progress=False)
    result = Trainer(cfg).fit(resume=args.resume and (work / "checkpoint_last.pt").is_file(),
                             log=lambda m: log(f"  {model}: {m}"))
    sps = _median_throughput(work / "metrics.csv")
    return {"path": str(work / "potential.pt"), "source": "trained by the harness",
            "epochs": result["epochs"], "train_seconds": result["elapsed_s"],
            "structures_per_s": sps,
            "command": f"harness Trainer: {json.dumps(cfg.to_dict())}"}


def shipped(model: str, molecule: str) -> dict:
    from ase_so3.pretrained import list_potentials, model_card
    name = f"{model}-rmd17-{molecule}"
    if name not in list_potentials():
        raise UnknownNameError(f"no shipped {name}; use --ours train to train it in the harness")
    card = model_card(name)
    training = card.get("training", {})
    return {"path": name, "source": "shipped potential", "epochs": training.get("epochs"),
            "train_seconds": training.get("wall_time_s"), "hardware": training.get("hardware"),
            "structures_per_s": None,  # the card records epochs and time, not throughput
            "command": card.get("command", "")}


def obtain_models(args, molecule: str, h5: Path, out: Path, res: Results, log) -> dict:
    from ase_so3.benchmark import mace_backend
    for model in args.models:
        if res.get("molecules", molecule, "models", model) is not None:
            continue
        work = out / "runs" / molecule / model
        if model == "mace":
            data_dir = out / "data" / f"{molecule}_xyz"
            mace_backend.export_splits(h5, data_dir)
            settings = dict(mace_backend.DEFAULT_SETTINGS)
            for item in args.mace_setting:
                key, value = item.split("=", 1)
                settings[key] = value
            log(f"{molecule}: training MACE for up to {args.budget_minutes} min")
            info = mace_backend.train_mace(data_dir, work, args.budget_minutes, seed=args.seed,
                                           threads=args.threads, settings=settings,
                                           max_epochs=args.max_epochs, log=log)
            info = {"path": info.pop("model"), "source": "trained by the harness", **info}
            spec = {"kind": "mace", "path": info["path"]}
        elif args.ours == "pretrained":
            info = shipped(model, molecule)
            spec = {"kind": "ours", "path": info["path"]}
        else:
            log(f"{molecule}: training {model} for up to {args.budget_minutes} min")
            info = train_ours(args, model, h5, work, log)
            spec = {"kind": "ours", "path": info["path"]}
        res.put({**info, "spec": spec}, "molecules", molecule, "models", model)
    return {m: res.get("molecules", molecule, "models", m) for m in args.models}


def accuracy(args, molecule: str, h5: Path, models: dict, out: Path, res: Results, log) -> None:
    from ase_so3.benchmark.models import make_calculator, num_parameters, predict
    from ase_so3.training.hdf5 import HDF5Dataset
    ds = HDF5Dataset(h5)
    idx = ds.split("test")[: args.test_limit]
    refs = [ds[int(i)] for i in idx]
    ds.close()
    images = [s.to_atoms() for s in refs]
    for a in images:
        a.calc = None
    e_ref = np.array([s.energy for s in refs])
    f_ref = np.concatenate([s.forces for s in refs])
    n_atoms = np.array([len(a) for a in images])
    for model, info in models.items():
        if res.get("molecules", molecule, "accuracy", model) is not None:
            continue
        calc = make_calculator(info["spec"], dtype="float64")
        start = time.perf_counter()
        pred = predict(calc, images)
        seconds = time.perf_counter() - start
        e = np.array([p["energy"] for p in pred])
        f = np.concatenate([p["forces"] for p in pred])
        parity = out / "parity" / f"{molecule}_{model}.npz"
        parity.parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(parity, e_ref=e_ref / n_atoms, e_pred=e / n_atoms, f_ref=f_ref.ravel(),
                            f_pred=f.ravel())
        row = {**error_metrics(e_ref, e, n_atoms, f_ref, f),
               "test_structures": len(images), "parameters": num_parameters(calc),
               "eval_seconds": seconds, "parity": str(parity.relative_to(out))}
        log(f"{molecule}: {model} test E MAE {row['energy_mae_meV']:.2f} meV, F MAE "
            f"{row['forces_mae_meV_per_A']:.2f} meV/Å")
        res.put(row, "molecules", molecule, "accuracy", model)


def speed(args, molecule: str, models: dict, res: Results, log) -> None:
    from tqdm import tqdm

    from ase_so3.benchmark.speed import run_worker
    from ase_so3.benchmark.systems import box_sizes
    from ase_so3.benchmark.systems import molecule as molecule_atoms
    systems = [("molecule", {"molecule": molecule})]
    systems += [(f"box{k}", {"molecule": molecule, "copies": k})
                for k in box_sizes(molecule, args.box_atoms)]
    box_models = args.box_models or list(models)
    todo = [(name, system, m) for name, system in systems for m in models
            if (name == "molecule" or m in box_models)
            and res.get("molecules", molecule, "speed", name, m) is None]
    for name, system, m in tqdm(todo, desc=f"{molecule} speed", disable=not args.progress):
        big = system.get("copies", 0) ** 3 * len(molecule_atoms(molecule)) > args.big_atoms
        r = run_worker(models[m]["spec"], system, threads=args.threads, dtype=args.speed_dtype,
                       device=args.device, min_seconds=args.speed_seconds,
                       min_samples=1 if big else 3)
        log(f"{molecule} {name} {m}: " + (r.get("error") or
                                          f"{r['atoms']} atoms, {r['latency_ms']:.1f} ms"))
        res.put(r, "molecules", molecule, "speed", name, m)


def stability(args, molecule: str, h5: Path, models: dict, res: Results, log) -> None:
    from tqdm import tqdm

    from ase_so3.benchmark.models import make_calculator
    from ase_so3.benchmark.stability import run_stability, summarize
    from ase_so3.training.hdf5 import HDF5Dataset
    import torch
    torch.set_num_threads(args.threads)
    ds = HDF5Dataset(h5)
    test = ds.split("test")
    starts = [int(test[k]) for k in np.linspace(0, len(test) - 1, args.stability_runs).astype(int)]
    atoms0 = [ds[i].to_atoms() for i in starts]
    ds.close()
    for model, info in models.items():
        if res.get("molecules", molecule, "stability", model) is not None:
            continue
        calc = make_calculator(info["spec"], dtype=args.speed_dtype, device=args.device)
        runs = []
        for k, atoms in enumerate(tqdm(atoms0, desc=f"{molecule} {model} NVT 500 K",
                                       disable=not args.progress)):
            atoms.calc = None
            runs.append({"start_index": starts[k], **run_stability(
                calc, atoms, temperature_K=args.stability_temperature,
                max_ps=args.stability_ps, seed=k)})
        s = summarize(runs)
        log(f"{molecule}: {model} stable for {s['mean_stable_ps']:.3f} ps on average "
            f"({s['broke_fraction']:.0%} of {s['runs']} runs broke)")
        res.put({"runs": runs, "summary": s}, "molecules", molecule, "stability", model)


def build_parser(p: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    p = p or argparse.ArgumentParser(prog="ase-so3 benchmark run", description=__doc__.split("\n\n")[0])
    p.add_argument("--molecules", nargs="+", default=["ethanol", "aspirin"])
    p.add_argument("--models", nargs="+", default=[*OUR_MODELS, "mace"],
                   choices=[*OUR_MODELS, "mace"])
    p.add_argument("--ours", choices=["pretrained", "train"], default="pretrained",
                   help="use the shipped potentials, or train ours in the harness like MACE")
    p.add_argument("--budget-minutes", type=float, default=30.0,
                   help="wall-clock training budget per model (MACE, and ours with --ours train)")
    p.add_argument("--max-epochs", type=int, default=100000)
    p.add_argument("--our-config", nargs="*", default=[], metavar="KEY=VALUE",
                   help="model settings of ours with --ours train (default: the shipped ones)")
    p.add_argument("--mace-setting", nargs="*", default=[], metavar="KEY=VALUE",
                   help="mace_run_train options overriding the harness defaults")
    p.add_argument("--data-dir", default="../shared/data/md17/rmd17")
    p.add_argument("--train", type=int, default=950)
    p.add_argument("--val", type=int, default=50)
    p.add_argument("--test-limit", type=int, default=None, help="first N test structures")
    p.add_argument("--box-atoms", type=int, nargs="*", default=[100, 1000, 10000],
                   help="approximate atom counts of the periodic boxes")
    p.add_argument("--stability-runs", type=int, default=3)
    p.add_argument("--stability-ps", type=float, default=1.0)
    p.add_argument("--stability-temperature", type=float, default=500.0)
    p.add_argument("--speed-seconds", type=float, default=3.0,
                   help="time each latency and MD measurement for at least this long")
    p.add_argument("--box-models", nargs="*", default=None,
                   help="models timed on the periodic boxes (default: all)")
    p.add_argument("--big-atoms", type=int, default=3000,
                   help="above this many atoms time one call and one MD step (after a warm-up)")
    p.add_argument("--speed-dtype", default="float32", choices=["float32", "float64"])
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--skip", nargs="*", default=[], choices=["speed", "stability", "accuracy"])
    p.add_argument("--scaling-json", default=None, help="eSCN/TFN scaling numbers to include")
    p.add_argument("--output", default="benchmark_out")
    p.add_argument("--resume", action="store_true", help="keep finished units of results.json")
    p.add_argument("--no-progress", dest="progress", action="store_false")
    return p


def run(args, log=print) -> Path:
    from ase_so3.benchmark import mace_backend
    from ase_so3.benchmark.report import write_report
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    if "mace" in args.models:
        mace_backend.require_mace()
    res = Results(out / "results.json", args.resume)
    res.put(environment(args.threads), "environment")
    res.put({k: v for k, v in vars(args).items() if k != "func"}, "settings")
    res.put(" ".join(["ase-so3", "benchmark", "run", *sys.argv[3:]])
            if sys.argv[1:3] == ["benchmark", "run"] else " ".join(sys.argv), "command")
    for molecule in args.molecules:
        h5 = prepare_data(args, molecule, out)
        models = obtain_models(args, molecule, h5, out, res, log)
        if "accuracy" not in args.skip:
            accuracy(args, molecule, h5, models, out, res, log)
        if "speed" not in args.skip:
            speed(args, molecule, models, res, log)
        if "stability" not in args.skip:
            stability(args, molecule, h5, models, res, log)
    if args.scaling_json:
        res.put(json.loads(Path(args.scaling_json).read_text()), "scaling")
    report = write_report(out)
    log(f"report: {report}")
    return report


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    run(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
