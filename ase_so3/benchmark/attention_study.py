"""The SE(3)-attention invariants study (``ase-so3 benchmark attention``).

Ablation of the distance feature read by the SE(3)-Transformer's key and value radial networks:
``r`` (Bessel basis in r), ``inverse`` (Gaussians in 1/r) and ``mixed`` (half the heads each), on
revised MD17 (950 train / 50 validation from ``train_01``, test on ``test_01``), every run with
the same model, optimiser and wall-clock budget, several seeds (the seed sets initialisation and
batch order; the data split is the standard one). The model follows the study's note: 4 heads,
4 layers, 8 channels of degrees 0, 1 and 3, radial networks with 32 hidden units; graphs of
2 Å (the note's) and 5 Å (our shipped potentials' cutoff).

Each run writes ``runs/<run>/result.json``; finished runs are skipped, so the study resumes, and
several processes can share one output folder (each takes runs nobody has started). The report
(``report.md``, ``learning_curves.png``, ``results.json``) is rebuilt from the run folders.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
from pathlib import Path

import numpy as np

from ase_so3.io_utils import atomic_path

SETTINGS = ("r", "inverse", "mixed")
NOTE_MODEL = {"degrees": [0, 1, 3], "channels": 8, "num_heads": 4, "num_layers": 4,
              "radial_hidden": 32}


def run_name(molecule: str, cutoff: float, setting: str, seed: int) -> str:
    return f"{molecule}-rc{cutoff:g}-{setting}-seed{seed}"


def train_one(args, molecule: str, cutoff: float, setting: str, seed: int, h5: Path) -> dict:
    import torch

    from ase_so3.training.config import TrainConfig
    from ase_so3.training.evaluate import evaluate_potential
    from ase_so3.training.trainer import Trainer
    work = Path(args.output) / "runs" / run_name(molecule, cutoff, setting, seed)
    cfg = TrainConfig(
        data=str(h5), output=str(work), model="se3_transformer",
        model_config={**NOTE_MODEL, "cutoff": cutoff, "distance_features": setting},
        batch_size=args.batch_size, max_epochs=100000, time_budget_minutes=args.budget_minutes,
        lr=args.lr, plateau_patience=5, dtype="float32", threads=args.threads, seed=seed,
        progress=False)
    fit = Trainer(cfg).fit(resume=(work / "checkpoint_last.pt").is_file(), log=lambda m: None)
    torch.set_num_threads(args.threads)
    test = evaluate_potential(work / "potential.pt", h5, split="test", limit=args.test_limit)
    result = {"molecule": molecule, "cutoff": cutoff, "setting": setting, "seed": seed,
              "epochs": fit["epochs"], "train_seconds": fit["elapsed_s"],
              "best_val_forces_mae_meV_per_A": fit["best_val_forces_mae_meV_per_A"],
              "test": test, "config": cfg.to_dict()}
    with atomic_path(work / "result.json") as tmp:
        tmp.write_text(json.dumps(result, indent=1, default=float))
    return result


def _claim(work: Path) -> bool:
    """Start a run nobody else has started (an exclusive lock file per run)."""
    work.mkdir(parents=True, exist_ok=True)
    if (work / "result.json").is_file():
        return False
    try:
        fd = os.open(work / "claimed", os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return False
    os.write(fd, str(os.getpid()).encode())
    os.close(fd)
    return True


def run(args) -> Path:
    from ase_so3.benchmark.harness import prepare_data
    out = Path(args.output)
    for molecule in args.molecules:
        h5 = prepare_data(args, molecule, out)
        for cutoff in args.cutoffs:
            for seed in args.seeds:
                for setting in args.settings:
                    name = run_name(molecule, cutoff, setting, seed)
                    work = out / "runs" / name
                    if args.resume and (work / "claimed").is_file() and not (work / "result.json").is_file():
                        (work / "claimed").unlink()  # an interrupted run: resume it
                    if not _claim(work):
                        continue
                    print(f"{name}: training for {args.budget_minutes} min", flush=True)
                    r = train_one(args, molecule, cutoff, setting, seed, h5)
                    print(f"{name}: {r['epochs']} epochs, test E MAE "
                          f"{r['test']['energy_mae_meV']:.2f} meV, F MAE "
                          f"{r['test']['forces_mae_meV_per_A']:.2f} meV/Å", flush=True)
    return write_report(out, command=args.command)


def _curve(work: Path) -> tuple[np.ndarray, np.ndarray]:
    with open(work / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    return (np.array([float(r["elapsed_s"]) for r in rows]) / 60,
            np.array([float(r["val_forces_mae_meV_per_A"]) for r in rows]))


def write_report(out, command: str = "") -> Path:
    """Summarise every finished run under ``out``; the command is kept in ``out/command.txt``
    so a later ``--report-only`` still prints it."""
    out = Path(out)
    if command:
        (out / "command.txt").write_text(command + "\n")
    elif (out / "command.txt").is_file():
        command = (out / "command.txt").read_text().strip()
    results = [json.loads(p.read_text()) for p in sorted(out.glob("runs/*/result.json"))]
    groups: dict[tuple, list[dict]] = {}
    for r in results:
        groups.setdefault((r["molecule"], r["cutoff"], r["setting"]), []).append(r)
    table = ["| molecule | graph cutoff (Å) | distance feature | seeds | epochs | test E MAE (meV) "
             "| test F MAE (meV/Å) |", "|---|---|---|---|---|---|---|"]
    summary = []
    for (mol, rc, setting), rs in sorted(groups.items(), key=lambda kv: (
            kv[0][0], kv[0][1], SETTINGS.index(kv[0][2]))):
        e = np.array([r["test"]["energy_mae_meV"] for r in rs])
        f = np.array([r["test"]["forces_mae_meV_per_A"] for r in rs])
        s = {"molecule": mol, "cutoff": rc, "setting": setting, "seeds": len(rs),
             "epochs": float(np.mean([r["epochs"] for r in rs])),
             "energy_mae_mean": float(e.mean()), "energy_mae_std": float(e.std(ddof=1)) if len(e) > 1 else 0.0,
             "forces_mae_mean": float(f.mean()), "forces_mae_std": float(f.std(ddof=1)) if len(f) > 1 else 0.0,
             "forces_mae_each": f.tolist(), "energy_mae_each": e.tolist()}
        summary.append(s)
        table.append(f"| {mol} | {rc:g} | {setting} | {len(rs)} | {s['epochs']:.0f} | "
                     f"{s['energy_mae_mean']:.1f} ± {s['energy_mae_std']:.1f} | "
                     f"{s['forces_mae_mean']:.1f} ± {s['forces_mae_std']:.1f} |")
    verdicts = []
    for mol, rc in sorted({(s["molecule"], s["cutoff"]) for s in summary}):
        rows = sorted((s for s in summary if s["molecule"] == mol and s["cutoff"] == rc),
                      key=lambda s: s["forces_mae_mean"])
        if len(rows) < 2:
            continue
        best, second = rows[0], rows[1]
        gap = second["forces_mae_mean"] - best["forces_mae_mean"]
        noise = max(best["forces_mae_std"], second["forces_mae_std"])
        sep = max(best["forces_mae_each"]) < min(second["forces_mae_each"])
        word = ("better than the next setting in every seed" if sep and gap > 2 * noise else
                "not separated from the next setting by more than the seed spread")
        verdicts.append(f"- {mol}, {rc:g} Å: lowest force MAE with `{best['setting']}` "
                        f"({best['forces_mae_mean']:.1f} vs {second['forces_mae_mean']:.1f} "
                        f"meV/Å for `{second['setting']}`, seed std up to {noise:.1f}): {word}.")
    plot = _plot(out, groups)
    budget = results[0]["config"]["time_budget_minutes"] if results else None
    lines = ["# SE(3)-attention invariants study: results", "",
             f"Command: `{command}`" if command else "", "",
             f"{len(results)} runs, each trained for {budget} min wall clock on one CPU thread "
             "(float32); test errors on the first "
             f"{results[0]['test']['num_structures'] if results else '—'} structures of test_01.",
             "Mean ± standard deviation over seeds.", ""] + table + ["", "Automatic comparison "
             "(best against second-best force MAE per molecule and cutoff):", ""] + verdicts
    if plot:
        lines += ["", f"![learning curves]({plot})"]
    (out / "report.md").write_text("\n".join(lines) + "\n")
    with atomic_path(out / "results.json") as tmp:
        tmp.write_text(json.dumps({"summary": summary, "runs": results}, indent=1, default=float))
    return out / "report.md"


def _plot(out: Path, groups: dict) -> str | None:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    panels = sorted({(m, rc) for m, rc, _ in groups})
    if not panels:
        return None
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.6), squeeze=False)
    colours = dict(zip(SETTINGS, ("C0", "C1", "C2")))
    for ax, (mol, rc) in zip(axes[0], panels):
        for setting in SETTINGS:
            for k, r in enumerate(groups.get((mol, rc, setting), [])):
                work = out / "runs" / run_name(mol, rc, setting, r["seed"])
                t, f = _curve(work)
                ax.plot(t, f, color=colours[setting], lw=1, alpha=0.8, marker="o", ms=3,
                        label=setting if k == 0 else None)
        ax.set_yscale("log")
        ax.set_xlabel("training time (min)")
        ax.set_ylabel("validation force MAE (meV/Å)")
        ax.set_title(f"{mol}, {rc:g} Å graph", fontsize=10)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "learning_curves.png", dpi=110)
    plt.close(fig)
    return "learning_curves.png"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ase-so3 benchmark attention",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--molecules", nargs="+", default=["ethanol", "aspirin"])
    p.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=SETTINGS)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--cutoffs", type=float, nargs="+", default=[2.0, 5.0])
    p.add_argument("--budget-minutes", type=float, default=3.0)
    p.add_argument("--batch-size", type=int, default=5)
    p.add_argument("--lr", type=float, default=5e-3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--test-limit", type=int, default=None)
    p.add_argument("--data-dir", default="../shared/data/md17/rmd17")
    p.add_argument("--train", type=int, default=950)
    p.add_argument("--val", type=int, default=50)
    p.add_argument("--output", default="attention_study")
    p.add_argument("--resume", action="store_true",
                   help="also restart runs left unfinished by an interrupted study")
    p.add_argument("--report-only", action="store_true")
    return p


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    args.command = " ".join(["ase-so3 benchmark attention", *argv])
    if args.report_only:
        print(write_report(args.output))
        return 0
    print(run(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
