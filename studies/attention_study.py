"""The SE(3)-attention invariants study (``python -m studies.attention_study`` from the
repository root).

Ablation of the distance feature read by the SE(3)-Transformer's key and value radial networks:
``r`` (Bessel basis in r), ``inverse`` (Gaussians in 1/r) and ``mixed`` (half the heads each), on
revised MD17 (950 train / 50 validation from ``train_01``, test on ``test_01``), every run with
the same model, optimiser and wall-clock budget, several seeds (the seed sets initialisation and
batch order; the data split is the standard one). Two architectures: ``note``, the study note's
model (4 heads, 4 layers, 8 channels of degrees 0, 1 and 3, radial networks with 32 hidden units,
graph cutoffs from ``--cutoffs``, e.g. the note's 2 Å), and ``recommended``, the model of a
training config (``--config``, e.g. ``configs/se3_transformer-rmd17.yaml``, at its own cutoff).
With ``--config`` every run takes that config's recipe (loss weights, optimiser, schedule, batch
size); without it the note's model trains with the trainer's defaults and ``--lr``.

The report pairs the runs of two settings that share molecule, architecture, cutoff, budget and
seed and tests the ratio of their test force MAE (:mod:`studies.paired`), per molecule
and pooled over all pairs. Invocations with other molecules, architectures or budgets may share
one output folder; the report covers every finished run there, each budget a study of its own.

Each run writes ``runs/<run>/result.json`` (the run's name ends in its budget); finished runs
are skipped, so the study resumes, and several processes can share one output folder (each takes
runs nobody has started; with ``--resume`` also started runs no process trains any more: the
trainer locks its run folder). The report
(``report.md``, ``learning_curves.png``, ``results.json``) is rebuilt from the run folders.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import sys
from pathlib import Path

import numpy as np

from ase_so3.errors import ConfigError
from ase_so3.io_utils import FolderInUseError, atomic_path

SETTINGS = ("r", "inverse", "mixed")
NOTE_MODEL = {"degrees": [0, 1, 3], "channels": 8, "num_heads": 4, "num_layers": 4,
              "radial_hidden": 32}
NOTE_LR = 5e-3  # the learning rate of the note's model when no config gives a recipe


ARCHITECTURES = ("note", "recommended")


def run_name(molecule: str, cutoff: float, setting: str, seed: int, budget_minutes: float,
             architecture: str = "note") -> str:
    """The run's folder name: the same model at two budgets is two runs."""
    arch = "" if architecture == "note" else f"-{architecture}"
    return f"{molecule}{arch}-rc{cutoff:g}-{setting}-seed{seed}-{budget_minutes:g}min"


def run_config(args, molecule: str, cutoff: float | None, setting: str, seed: int, h5: Path):
    """The training config of one run: the note's model or the config's, one distance feature;
    ``cutoff`` None keeps the config's."""
    from ase_so3.training.config import TrainConfig
    common = dict(data=str(h5), max_epochs=100000, early_stopping_patience=100000,
                  time_budget_minutes=args.budget_minutes, dtype="float32",
                  threads=args.threads, seed=seed, progress=False)
    if args.config is None:
        if args.architecture != "note" or cutoff is None:
            raise ConfigError("--architecture recommended needs --config (a training config); "
                              "the note's model without one needs --cutoffs")
        base = TrainConfig(model="se3_transformer", batch_size=args.batch_size,
                           lr=NOTE_LR if args.lr is None else args.lr, plateau_patience=5, **common)
        model = dict(NOTE_MODEL)
    else:
        base = TrainConfig.load(args.config, [f"data={h5}"])
        if base.model != "se3_transformer":
            raise ConfigError(f"{args.config} trains {base.model!r}; the study needs an "
                              "se3_transformer config")
        model = (dict(base.model_config) if args.architecture == "recommended"
                 else dict(NOTE_MODEL))
        if args.lr is not None:  # the config's recipe with another learning rate
            base = dataclasses.replace(base, lr=args.lr)
    model["distance_features"] = setting
    if cutoff is not None:
        model["cutoff"] = cutoff
    model.setdefault("cutoff", 5.0)  # the model's default
    work = Path(args.output) / "runs" / run_name(molecule, model["cutoff"], setting, seed,
                                                 args.budget_minutes, args.architecture)
    return dataclasses.replace(base, model_config=model, output=str(work), **common)


def train_one(args, cfg, molecule: str, setting: str, seed: int, h5: Path) -> dict:
    import torch

    from ase_so3.training.evaluate import evaluate_potential
    from ase_so3.training.trainer import Trainer
    work = Path(cfg.output)
    cutoff = cfg.model_config["cutoff"]
    fit = Trainer(cfg).fit(resume=(work / "checkpoint_last.pt").is_file(), log=lambda m: None)
    torch.set_num_threads(args.threads)
    test = evaluate_potential(work / "potential.pt", h5, split="test", limit=args.test_limit)
    result = {"molecule": molecule, "architecture": args.architecture, "cutoff": cutoff,
              "setting": setting, "seed": seed, "epochs": fit["epochs"],
              "budget_minutes": args.budget_minutes, "train_seconds": fit["elapsed_s"],
              "best_val_forces_mae_meV_per_A": fit["best_val_forces_mae_meV_per_A"],
              "test": test, "config": cfg.to_dict()}
    with atomic_path(work / "result.json") as tmp:
        tmp.write_text(json.dumps(result, indent=1, default=float))
    return result


def _startable(work: Path, resume: bool) -> bool:
    """A run to start here: not finished, and either never started or (``resume``) started by
    a process that has let go of it (the trainer's folder lock, :func:`ase_so3.io_utils.folder_lock`,
    refuses a run another process still trains)."""
    from ase_so3.io_utils import LOCK_NAME
    if (work / "result.json").is_file():
        return False
    return resume or not (work / LOCK_NAME).is_file()


def run(args) -> Path:
    from ase_so3.benchmark.harness import prepare_data
    out = Path(args.output)
    for molecule in args.molecules:
        h5 = prepare_data(args, molecule, out)
        for cutoff in args.cutoffs or [None]:  # None: the config's own cutoff
            for seed in args.seeds:
                for setting in args.settings:
                    cfg = run_config(args, molecule, cutoff, setting, seed, h5)
                    work = Path(cfg.output)
                    name = work.name
                    if not _startable(work, args.resume):
                        continue
                    print(f"{name}: training for {args.budget_minutes} min", flush=True)
                    try:
                        r = train_one(args, cfg, molecule, setting, seed, h5)
                    except FolderInUseError:  # another process trains it
                        continue
                    print(f"{name}: {r['epochs']} epochs, test E MAE "
                          f"{r['test']['energy_mae_meV']:.2f} meV, F MAE "
                          f"{r['test']['forces_mae_meV_per_A']:.2f} meV/Å", flush=True)
    return write_report(out, command=args.command)


def _curve(work: Path) -> tuple[np.ndarray, np.ndarray] | None:
    """The run's validation force MAE against minutes (None where its metrics.csv is gone)."""
    if not (work / "metrics.csv").is_file():
        return None
    with open(work / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    return (np.array([float(r["elapsed_s"]) for r in rows]) / 60,
            np.array([float(r["val_forces_mae_meV_per_A"]) for r in rows]))


def _key(r: dict) -> tuple:
    """What a group of runs shares: molecule, architecture, cutoff, budget (minutes)."""
    return (r["molecule"], r.get("architecture", "note"), r["cutoff"],
            r.get("budget_minutes", r["config"]["time_budget_minutes"]))


def _commands(out: Path, command: str) -> list[str]:
    """Every command that wrote into ``out`` (several invocations may share it)."""
    path = out / "command.txt"
    known = path.read_text().splitlines() if path.is_file() else []
    if command and command not in known:
        known.append(command)
        with atomic_path(path) as tmp:
            tmp.write_text("\n".join(known) + "\n")
    return [c for c in known if c.strip()]


def _summarise(groups: dict) -> tuple[list[dict], list[str]]:
    table = ["| molecule | architecture | graph cutoff (Å) | distance feature | seeds | budget "
             "(min) | epochs | test E MAE (meV) | test F MAE (meV/Å) |", "|---" * 9 + "|"]
    summary = []
    for (mol, arch, rc, budget, setting), rs in sorted(groups.items(), key=lambda kv: (
            kv[0][:4], SETTINGS.index(kv[0][4]))):
        e = np.array([r["test"]["energy_mae_meV"] for r in rs])
        f = np.array([r["test"]["forces_mae_meV_per_A"] for r in rs])
        s = {"molecule": mol, "architecture": arch, "cutoff": rc, "setting": setting,
             "seeds": len(rs), "budget_minutes": budget,
             "epochs": float(np.mean([r["epochs"] for r in rs])),
             "energy_mae_mean": float(e.mean()),
             "energy_mae_std": float(e.std(ddof=1)) if len(e) > 1 else 0.0,
             "forces_mae_mean": float(f.mean()),
             "forces_mae_std": float(f.std(ddof=1)) if len(f) > 1 else 0.0,
             "forces_mae_each": f.tolist(), "energy_mae_each": e.tolist()}
        summary.append(s)
        table.append(f"| {mol} | {arch} | {rc:g} | {setting} | {len(rs)} | {budget:g} | "
                     f"{s['epochs']:.0f} | {s['energy_mae_mean']:.1f} ± {s['energy_mae_std']:.1f}"
                     f" | {s['forces_mae_mean']:.1f} ± {s['forces_mae_std']:.1f} |")
    return summary, table


def paired_comparisons(results: list[dict]) -> list[dict]:
    """Every pair of settings, runs matched on molecule, architecture, cutoff, budget and seed:
    per (molecule, architecture, cutoff, budget) and pooled over all of them. The pooled test
    takes one pair per molecule, architecture, cutoff and seed, at the longest budget where both
    settings ran: the same seed's runs at two budgets share initialisation and batch order, so
    they are not independent pairs."""
    from studies.paired import compare
    force = {(*_key(r), r["seed"], r["setting"]): r["test"]["forces_mae_meV_per_A"]
             for r in results}
    out = []
    for a, b in ((x, y) for i, x in enumerate(SETTINGS) for y in SETTINGS[i + 1:]):
        matched = sorted(k[:5] for k in force if k[5] == a and (*k[:5], b) in force)
        scopes = sorted({m[:4] for m in matched})
        longest = {}  # (molecule, architecture, cutoff, seed) -> its pair at the longest budget
        for m in matched:
            seed_model = (*m[:3], m[4])
            if seed_model not in longest or m[3] > longest[seed_model][3]:
                longest[seed_model] = m
        for scope in scopes + (["all"] if len(scopes) > 1 else []):
            pairs = (sorted(longest.values()) if scope == "all"
                     else [m for m in matched if m[:4] == scope])
            c = compare([force[(*m, a)] for m in pairs], [force[(*m, b)] for m in pairs])
            out.append({"a": a, "b": b, "scope": scope if scope == "all" else list(scope), **c})
    return out


def write_report(out, command: str = "") -> Path:
    """Summarise every finished run under ``out``; the commands are kept in
    ``out/command.txt`` so a later ``--report-only`` still prints them."""
    from studies.paired import describe
    out = Path(out)
    commands = _commands(out, command)
    results = [json.loads(p.read_text()) for p in sorted(out.glob("runs/*/result.json"))]
    groups: dict[tuple, list[dict]] = {}
    for r in results:
        groups.setdefault((*_key(r), r["setting"]), []).append(r)
    summary, table = _summarise(groups)
    pairs = paired_comparisons(results)
    lines_pairs = []
    for c in pairs:
        where = ("pooled, one pair per molecule, model, cutoff and seed at its longest budget"
                 if c["scope"] == "all" else
                 "{}, {} model, {:g} Å, {:g} min".format(*c["scope"]))
        lines_pairs.append(f"- {where}: " + describe(c["a"], c["b"], c))
    plot = _plot(out, groups)
    tested = results[0]["test"]["num_structures"] if results else "—"
    lines = ["# SE(3)-attention invariants study: results", "", "Commands:", "", "```bash",
             *commands, "```", "",
             f"{len(results)} runs, each trained for its budget (table) of wall clock on one CPU "
             f"thread (float32); test errors on {tested} structures of test_01. Mean ± standard "
             "deviation over seeds.", ""] + table + [
             "", "Paired comparison of test force MAE (runs matched on molecule, architecture, "
             "cutoff and seed; geometric-mean ratio, Student-t 95% interval on the log ratio, "
             "exact two-sided sign-flip test; see `studies/paired.py`):", ""] + lines_pairs
    if plot:
        lines += ["", f"![learning curves]({plot})"]
    (out / "report.md").write_text("\n".join(lines) + "\n")
    with atomic_path(out / "results.json") as tmp:
        tmp.write_text(json.dumps({"summary": summary, "paired": pairs, "runs": results},
                                  indent=1, default=float))
    return out / "report.md"


def _plot(out: Path, groups: dict) -> str | None:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    # each run's curve, read once (None where its metrics.csv is gone)
    curves = {(k, r["seed"]): _curve(out / "runs" / run_name(k[0], k[2], k[4], r["seed"], k[3],
                                                             k[1]))
              for k, rs in groups.items() for r in rs}
    # a panel per (molecule, architecture, cutoff, budget) with at least one curve kept
    panels = sorted({k[:4] for (k, _), c in curves.items() if c is not None})
    if not panels:
        return None
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.6), squeeze=False)
    colours = dict(zip(SETTINGS, ("C0", "C1", "C2")))
    for ax, (mol, arch, rc, budget) in zip(axes[0], panels):
        missing = 0
        for setting in SETTINGS:
            labelled = False
            for r in groups.get((mol, arch, rc, budget, setting), []):
                curve = curves[((mol, arch, rc, budget, setting), r["seed"])]
                if curve is None:
                    missing += 1
                    continue
                ax.plot(*curve, color=colours[setting], lw=1, alpha=0.8, marker="o", ms=2,
                        label=None if labelled else setting)
                labelled = True
        ax.set_yscale("log")
        ax.set_xlabel("training time (min, one CPU thread)")
        ax.set_ylabel("validation force MAE (meV/Å)")
        ax.set_title(f"{mol}, {arch} model, {rc:g} Å graph, {budget:g} min"
                     + (f"\n({missing} runs without metrics.csv not drawn)" if missing else ""),
                     fontsize=10)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8, title="distance feature", title_fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "learning_curves.png", dpi=110)
    plt.close(fig)
    return "learning_curves.png"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m studies.attention_study",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--molecules", nargs="+", default=["ethanol", "aspirin"])
    p.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=SETTINGS)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--architecture", choices=ARCHITECTURES, default="note",
                   help="the study note's model, or the model of --config")
    p.add_argument("--config", default=None,
                   help="training config (an se3_transformer one, e.g. "
                        "configs/se3_transformer-rmd17.yaml): its recipe for every run, its model "
                        "for --architecture recommended")
    p.add_argument("--cutoffs", type=float, nargs="*", default=None,
                   help="graph cutoffs (Å); default: the config's, or 2 and 5 for the note's "
                        "model without a config")
    p.add_argument("--budget-minutes", type=float, default=3.0)
    p.add_argument("--batch-size", type=int, default=5)
    p.add_argument("--lr", type=float, default=None,
                   help="learning rate: overrides the config's; "
                        f"{NOTE_LR:g} for the note's model without a config")
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
    args.command = " ".join(["python -m studies.attention_study", *argv])
    if args.cutoffs is None and args.config is None:
        args.cutoffs = [2.0, 5.0]
    if args.report_only:
        print(write_report(args.output))
        return 0
    print(run(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
