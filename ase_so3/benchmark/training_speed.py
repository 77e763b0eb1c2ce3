"""Training throughput: structures per second of full training steps (forward, autograd forces,
backward through both, optimiser step and EMA), per model and molecule, side by side with MACE
trained through its own model, loss and EMA, and with ase_so3 as it was at another commit.

Every measurement runs in its own process with one torch thread, float32, batch 5, on the
``train`` split of an HDF5 file made by ``ase-so3 convert``; the first ``--warmup`` steps are not
timed. ``--baseline DIR`` adds the same measurements with the ``ase_so3`` package of another
checkout (for example a ``git worktree`` of an older commit) imported instead of this one.
``--profile`` adds where the time of one eSCN step goes: its phases and the operators that take
the most time (``torch.profiler``). ``--curves LABEL=RUN ...`` plots the validation force MAE of
training runs against epochs and training time instead (learning per epoch, old code vs new).

    ase-so3 benchmark training-speed --data runs/h5 --molecules ethanol aspirin \\
        --baseline /tmp/ase_so3-e4aaba4 --profile --out docs/benchmarks/training_speed
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import yaml

from ase_so3.errors import ASESO3Error

class MeasurementError(ASESO3Error, RuntimeError):
    """A measurement's process failed; its standard error says why."""


CONFIGS = {"escn": "escn-rmd17.yaml", "tfn": "tfn-rmd17.yaml",
           "se3_transformer": "se3_transformer-rmd17.yaml"}
# MACE as the equal-budget comparison trains it (mace_backend.DEFAULT_SETTINGS): 64x0e+64x1o
MACE_MODEL = {"r_max": 5.0, "num_bessel": 8, "num_polynomial_cutoff": 5, "max_ell": 3,
              "num_interactions": 2, "hidden_irreps": "64x0e+64x1o", "MLP_irreps": "16x0e",
              "correlation": 3, "radial_MLP": [64, 64, 64]}


def _batches(n_items: int, steps: int, batch: int = 5) -> list[list[int]]:
    import numpy as np
    order = np.random.default_rng(0).permutation(n_items)
    return [order[(k * batch) % (n_items - batch):][:batch].tolist() for k in range(steps)]


def _time_steps(step, batches, warmup: int) -> float:
    for b in batches[:warmup]:
        step(b)
    start = time.perf_counter()
    for b in batches[warmup:]:
        step(b)
    return (time.perf_counter() - start) / (len(batches) - warmup)


def measure_ours(model: str, data: str, config: str, steps: int, warmup: int,
                 profile: bool) -> dict:
    """Seconds per training step of ase_so3's trainer (whichever ase_so3 is imported)."""
    import contextlib

    import torch

    import ase_so3
    from ase_so3.training.config import TrainConfig
    from ase_so3.training.trainer import Trainer
    raw = yaml.safe_load(Path(config).read_text())
    raw.update(data=data, output=os.devnull, threads=1, progress=False, dtype="float32",
               batch_size=5, seed=0)
    trainer = Trainer(TrainConfig(**raw))
    batches = [trainer.train_set.collate(b, trainer.dtype, "cpu")
               for b in _batches(len(trainer.train_set), steps)]
    context = getattr(trainer, "step_context", None)  # older versions train without one
    with (context() if context else contextlib.nullcontext()):
        seconds = _time_steps(trainer.train_step, batches, warmup)
        out = {"seconds_per_step": seconds, "version": ase_so3.__version__,
               "package": str(Path(ase_so3.__file__).parent),
               "parameters": sum(p.numel() for p in trainer.model.parameters()),
               "edges_per_step": sum(int(g["edge_index"].shape[1]) for g, _ in batches) / steps}
        if profile:
            out["profile"] = _profile(trainer, batches)
    out["torch"] = torch.__version__
    return out


def _profile(trainer, batches) -> dict:
    """Per-phase milliseconds of one step and the operators with the most self time."""
    import torch
    from torch.profiler import profile

    from ase_so3 import keys as K
    from ase_so3.training.trainer import loss_terms
    model, phases = trainer.model, {"forward": 0.0, "forces": 0.0, "backward": 0.0,
                                    "optimizer+EMA": 0.0}
    params = [p for p in model.parameters() if p.requires_grad]
    timed = batches[-10:]
    for graph, target in timed:
        t0 = time.perf_counter()
        pos = graph[K.POSITIONS].detach().requires_grad_(True)
        out = model({**graph, K.POSITIONS: pos})
        t1 = time.perf_counter()
        (g,) = torch.autograd.grad(out[K.ENERGY].sum(), pos, create_graph=True)
        t2 = time.perf_counter()
        pred = {K.ENERGY: out[K.ENERGY], K.FORCES: -g}
        loss_terms(pred, target, trainer.cfg)["total"].backward(inputs=params)
        t3 = time.perf_counter()
        trainer.optimizer.step()
        trainer.ema.update(model)
        trainer.optimizer.zero_grad(set_to_none=True)
        t4 = time.perf_counter()
        for key, dt in zip(phases, (t1 - t0, t2 - t1, t3 - t2, t4 - t3)):
            phases[key] += dt * 1e3 / len(timed)
    with profile() as prof:
        for b in timed[:5]:
            trainer.train_step(b)
    ops = sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)[:15]
    total = sum(e.self_cpu_time_total for e in prof.key_averages())
    operators = [{"name": e.key, "ms_per_step": e.self_cpu_time_total / 5e3,
                  "share": e.self_cpu_time_total / total, "calls_per_step": e.count / 5}
                 for e in ops]
    return {"phases_ms": phases, "operators": operators}


def measure_mace(data: str, steps: int, warmup: int) -> dict:
    """Seconds per training step of MACE 64x0e+64x1o: MACE's model, its weighted energy-forces
    loss (weights 1 and 100), AMSGrad Adam, gradient clipping at 10 and its EMA (torch-ema)."""
    import numpy as np
    import torch
    from mace import data as mdata
    from mace import modules, tools
    from mace.tools import torch_geometric
    from torch_ema import ExponentialMovingAverage

    from ase_so3.so3._e3nn import o3  # e3nn 0.4.4 imported with slice allow-listed
    from ase_so3.training.hdf5 import HDF5Dataset
    torch.set_default_dtype(torch.float32)
    ds = HDF5Dataset(data)
    structures = [ds[int(i)] for i in ds.split("train")]
    ds.close()
    zs = sorted({int(z) for s in structures for z in s.numbers})
    table = tools.AtomicNumberTable(zs)
    keys = mdata.KeySpecification(info_keys={"energy": "REF_energy"},
                                  arrays_keys={"forces": "REF_forces"})
    items = []
    for s in structures:
        from ase import Atoms
        atoms = Atoms(numbers=s.numbers, positions=s.positions - s.positions.mean(0))
        atoms.info["REF_energy"], atoms.arrays["REF_forces"] = float(s.energy), s.forces
        items.append(mdata.AtomicData.from_config(mdata.config_from_atoms(atoms, keys), table,
                                                  MACE_MODEL["r_max"]))
    counts = np.array([[np.sum(s.numbers == z) for z in zs] for s in structures])
    e0 = np.linalg.lstsq(counts, np.array([s.energy for s in structures]), rcond=None)[0]
    model = modules.ScaleShiftMACE(
        **{k: v for k, v in MACE_MODEL.items() if k not in ("hidden_irreps", "MLP_irreps")},
        hidden_irreps=o3.Irreps(MACE_MODEL["hidden_irreps"]),
        MLP_irreps=o3.Irreps(MACE_MODEL["MLP_irreps"]),
        interaction_cls=modules.interaction_classes["RealAgnosticResidualInteractionBlock"],
        interaction_cls_first=modules.interaction_classes["RealAgnosticResidualInteractionBlock"],
        num_elements=len(zs), atomic_energies=e0, avg_num_neighbors=float(np.mean(
            [len(d.edge_index[0]) / len(d.positions) for d in items[:100]])),
        atomic_numbers=zs, gate=torch.nn.functional.silu, atomic_inter_scale=1.0,
        atomic_inter_shift=0.0)
    loss_fn = modules.WeightedEnergyForcesLoss(energy_weight=1.0, forces_weight=100.0)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01, amsgrad=True)
    ema = ExponentialMovingAverage(model.parameters(), decay=0.99)
    loader = torch_geometric.dataloader.Collater(follow_batch=[None], exclude_keys=[])
    batches = [loader([items[i] for i in b]) for b in _batches(len(items), steps)]

    def step(batch):
        optimizer.zero_grad(set_to_none=True)
        out = model(batch.to_dict(), training=True, compute_force=True)
        loss = loss_fn(pred=out, ref=batch)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm=10.0)
        optimizer.step()
        ema.update()

    import mace
    return {"seconds_per_step": _time_steps(step, batches, warmup), "version": mace.__version__,
            "parameters": sum(p.numel() for p in model.parameters()), "torch": torch.__version__}


def _worker(spec: dict) -> dict:
    import torch
    torch.set_num_threads(1)
    if spec["model"] == "mace":
        return measure_mace(spec["data"], spec["steps"], spec["warmup"])
    return measure_ours(spec["model"], spec["data"], spec["config"], spec["steps"],
                        spec["warmup"], spec.get("profile", False))


def _run(spec: dict, package_root: str | None) -> dict:
    """One measurement in a fresh process; ``package_root``: a checkout whose ase_so3 to import."""
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    if package_root:
        env["PYTHONPATH"] = package_root + os.pathsep + env.get("PYTHONPATH", "")
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(spec)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=package_root)
    if proc.returncode != 0:
        raise MeasurementError(f"measurement {spec} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _commit(folder: Path) -> str:
    try:
        return subprocess.run(["git", "-C", str(folder), "describe", "--always", "--dirty"],
                              capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def run(args) -> dict:
    """Every (molecule, model) measured ``--repeats`` times, the code versions taking turns, so a
    drift of the machine's speed touches all alike; a row keeps the median and the range."""
    import statistics
    here = Path(__file__).resolve().parents[2]
    rows = []
    for molecule in args.molecules:
        data = str(Path(args.data) / f"{molecule}.h5")
        for model in args.models:
            versions = [("this", None)] if model == "mace" else [("this", str(here))]
            if args.baseline and model != "mace":
                versions.insert(0, ("baseline", str(Path(args.baseline).resolve())))
            runs = {label: [] for label, _ in versions}
            for rep in range(args.repeats):
                for label, root in versions:
                    spec = {"model": model, "data": data, "steps": args.steps,
                            "warmup": args.warmup, "profile": args.profile and rep == 0
                            and model == "escn" and label == "this"
                            and molecule == args.molecules[-1]}
                    if root:
                        spec["config"] = str(Path(root) / "configs" / CONFIGS[model])
                    result = _run(spec, root)
                    if root and Path(result["package"]).resolve() != Path(root, "ase_so3").resolve():
                        raise MeasurementError(f"the measurement of {root} imported "
                                               f"{result['package']}")
                    runs[label].append(result)
            for label, root in versions:
                results = runs[label]
                rates = [5 / r["seconds_per_step"] for r in results]
                row = {k: v for r in results for k, v in r.items() if k != "seconds_per_step"}
                row.update(molecule=molecule, model=model, code=label,
                           commit=_commit(Path(root)) if root else "mace-torch",
                           structures_per_s=statistics.median(rates),
                           structures_per_s_range=[min(rates), max(rates)])
                rows.append(row)
                print(f"{molecule:10s} {model:16s} {label:9s} {row['commit']:>14s} "
                      f"{row['structures_per_s']:7.1f} structures/s "
                      f"({min(rates):.1f}-{max(rates):.1f})", flush=True)
    return {"rows": rows, "machine": _machine(), "command": " ".join(sys.argv),
            "date": time.strftime("%Y-%m-%d"), "commit": _commit(here),
            "repeats": args.repeats, "steps": args.steps, "warmup": args.warmup}


def _machine() -> dict:
    import platform
    cpu = "unknown"
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo")
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version()}


def markdown(result: dict) -> str:
    rows, lines = result["rows"], []
    m = result["machine"]
    lines += [f"Command: `{result['command']}`", "",
              f"Machine: {m['cpu']}, {m['cores']} cores, one torch thread per measurement, "
              f"Python {m['python']}, torch {rows[0]['torch']}; date {result['date']}, "
              f"commit {result['commit']}.", "",
              f"Each row: the median of {result['repeats']} measurements (the code versions taking "
              f"turns), {result['steps'] - result['warmup']} timed steps of batch 5 after "
              f"{result['warmup']} untimed, float32; the range in brackets.", "",
              "| molecule | model | code | structures/s | x baseline | x MACE |",
              "|---|---|---|---|---|---|"]
    index = {(r["molecule"], r["model"], r["code"]): r for r in rows}
    for r in rows:
        base = index.get((r["molecule"], r["model"], "baseline"))
        mace = index.get((r["molecule"], "mace", "this"))
        ratio = (f"{r['structures_per_s'] / base['structures_per_s']:.2f}"
                 if base and r["code"] == "this" else "")
        vs_mace = f"{r['structures_per_s'] / mace['structures_per_s']:.2f}" if mace else ""
        package = f"ase_so3 {r['version']}" if r["model"] != "mace" else r["version"]
        name = f"{r['code']} ({r['commit']}, {package})"
        low, high = r["structures_per_s_range"]
        lines.append(f"| {r['molecule']} | {r['model']} | {name} | {r['structures_per_s']:.1f} "
                     f"({low:.1f}-{high:.1f}) | {ratio} | {vs_mace} |")
    for r in rows:
        if "profile" in r:
            p = r["profile"]
            lines += ["", f"Where one eSCN step goes ({r['molecule']}, {r['code']}, "
                      f"{r['edges_per_step']:.0f} edges per step):", "",
                      "| phase | ms per step |", "|---|---|"]
            lines += [f"| {k} | {v:.1f} |" for k, v in p["phases_ms"].items()]
            lines += ["", "| operator | ms per step | share | calls per step |", "|---|---|---|---|"]
            lines += [f"| `{o['name']}` | {o['ms_per_step']:.1f} | {100 * o['share']:.0f}% "
                      f"| {o['calls_per_step']:.0f} |" for o in p["operators"]]
    return "\n".join(lines) + "\n"


def plot_curves(runs: dict[str, str], path) -> dict:
    """Validation force MAE per epoch of training runs (``label -> run folder``), one line each,
    against epochs and against training seconds; returns the curves it drew."""
    import csv

    from matplotlib.figure import Figure
    curves = {}
    for label, folder in runs.items():
        with open(Path(folder) / "metrics.csv") as f:
            rows = list(csv.DictReader(f))
        curves[label] = {k: [float(r[c]) for r in rows] for k, c in
                         (("epoch", "epoch"), ("elapsed_s", "elapsed_s"),
                          ("val_forces_mae", "val_forces_mae_meV_per_A"))}
    fig = Figure(figsize=(10, 4))
    by_epoch, by_time = fig.subplots(1, 2)
    for label, c in curves.items():
        by_epoch.plot(c["epoch"], c["val_forces_mae"], marker=".", label=label)
        by_time.plot([t / 60 for t in c["elapsed_s"]], c["val_forces_mae"], marker=".",
                     label=label)
    for ax, xlabel in ((by_epoch, "epoch"), (by_time, "training time (min, one thread)")):
        ax.set_yscale("log")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("validation force MAE (meV/Å)")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return curves


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="ase-so3 benchmark training-speed", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True,
                   help="folder with <molecule>.h5 (ase-so3 convert, split 'train')")
    p.add_argument("--molecules", nargs="+", default=["ethanol", "aspirin"])
    p.add_argument("--models", nargs="+", default=["escn", "tfn", "se3_transformer", "mace"],
                   choices=["escn", "tfn", "se3_transformer", "mace"])
    p.add_argument("--steps", type=int, default=60, help="steps per measurement, warm-up included")
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--repeats", type=int, default=3, help="measurements of each row")
    p.add_argument("--baseline", help="a checkout of ase_so3 to measure side by side")
    p.add_argument("--profile", action="store_true", help="phases and operators of an eSCN step")
    p.add_argument("--out", help="folder for results.json and results.md")
    p.add_argument("--curves", nargs="+", metavar="LABEL=RUN",
                   help="only plot these training runs' validation curves into --out")
    args = p.parse_args(argv)
    if args.curves:
        runs = dict(item.split("=", 1) for item in args.curves)
        out = Path(args.out or ".")
        out.mkdir(parents=True, exist_ok=True)
        curves = plot_curves(runs, out / "learning_curves.png")
        (out / "learning_curves.json").write_text(json.dumps(curves, indent=1))
        return 0
    if args.steps <= args.warmup:
        p.error("--steps must be larger than --warmup")
    result = run(args)
    text = markdown(result)
    print(text)
    if args.out:
        from ase_so3.io_utils import atomic_path
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        with atomic_path(out / "results.json") as tmp:
            tmp.write_text(json.dumps(result, indent=1))
        with atomic_path(out / "results.md") as tmp:
            tmp.write_text(text)
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--worker":
        print(json.dumps(_worker(json.loads(sys.argv[2]))))
    else:
        sys.exit(main())
