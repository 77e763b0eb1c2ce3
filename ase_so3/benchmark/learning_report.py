"""``learning.md`` and ``learning_<molecule>.png`` from the ``results.json`` of
:mod:`ase_so3.benchmark.learning`: the equal-budget table with ratios to the best MACE at each
budget, and validation force MAE against training time for every model."""

from __future__ import annotations

import json
from pathlib import Path

from ase_so3.io_utils import atomic_path


def budget_table(models: dict) -> list[dict]:
    """One row per (model, budget) with the test errors and the force-MAE ratio to the best MACE
    at that budget (None where no MACE finished that budget)."""
    budgets = sorted({b for u in models.values() for b in u.get("test", {})}, key=float)
    rows = []
    for budget in budgets:
        mace = [u["test"][budget]["forces_mae_meV_per_A"] for u in models.values()
                if u["kind"] == "mace" and budget in u.get("test", {})]
        best = min(mace) if mace else None
        for name, unit in models.items():
            test = unit.get("test", {}).get(budget)
            if test is None:
                continue
            # a budget trained as its own run (a schedule annealed over the budget) or a snapshot
            run = unit.get("snapshot_runs", {}).get(budget, unit)
            # epochs ended inside the budget; the trainer stops after the first that ends at or past it
            epochs = [r["epoch"] for r in run["curve"] if r["elapsed_s"] < float(budget) * 60]
            rows.append({"budget_minutes": float(budget), "model": name, "kind": unit["kind"],
                         "parameters": test["parameters"],
                         "epochs": max(epochs) if epochs else 0,
                         "structures_per_s": unit.get("structures_per_s"), **test,
                         "ratio_to_best_mace": (test["forces_mae_meV_per_A"] / best
                                                if best else None)})
    return rows


def _resumed(unit: dict) -> str:
    after = unit.get("resumed_after_epochs")
    return (f" (interrupted; resumed after {after} epochs from MACE's checkpoint, which restarts"
            " its EMA)" if after else "")


def _plot(molecule: str, models: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for name, unit in models.items():
        curve = unit.get("curve") or []
        if not curve:
            continue
        t = [r["elapsed_s"] / 60 for r in curve]
        best, y = float("inf"), []
        for r in curve:  # what the run would ship if stopped then: the best so far
            best = min(best, r["val_forces_mae_meV_per_A"])
            y.append(best)
        ax.plot(t, y, label=name, ls="--" if unit["kind"] == "mace" else "-")
    ax.set_xlabel("training wall-clock time (min, one CPU thread)")
    ax.set_ylabel("best validation force MAE (meV/Å)")
    ax.set_yscale("log")
    ax.set_title(f"revised MD17 {molecule}, split 01 (950 train / 50 val)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)


def _fmt(v, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def _machine(env: dict) -> str:
    return (f"{env.get('processor')}, {env.get('platform')}; torch {env.get('torch')}, e3nn "
            f"{env.get('e3nn')}, mace {env.get('mace')}, ase_so3 {env.get('ase_so3')}")


def _machines(default: dict, models: dict, threads) -> list[str]:
    """One "Machine:" line, or one per machine where the models of a molecule ran on several
    (a unit without its own record ran where the molecule's first run did)."""
    groups: dict[str, list[str]] = {}
    for name, unit in models.items():
        groups.setdefault(_machine(unit.get("environment") or default), []).append(name)
    if len(groups) <= 1:
        return [f"Machine: {next(iter(groups), _machine(default))}; {threads} thread(s) per model."]
    return [f"Machine for {', '.join(names)}: {machine}; {threads} thread(s) per model."
            for machine, names in groups.items()]


def write_learning_report(out) -> Path:
    out = Path(out)
    data = json.loads((out / "results.json").read_text())
    lines = ["# Accuracy per CPU-second: ours and MACE at equal training budget", "",
             "Made by `ase-so3 benchmark learning` (ase_so3/benchmark/learning.py). Energy MAE: "
             "offset-free (the mean test error removed, for every model alike; raw in "
             "results.json). Ratio: test force MAE over the best MACE's at the same budget.", ""]
    for molecule, models in sorted(data.get("molecules", {}).items()):
        settings = data.get("settings", {}).get(molecule, {})
        lines += [f"## {molecule}", ""]
        lines += _machines(data.get("environment", {}).get(molecule, {}), models,
                           settings.get("threads"))
        lines += ["",
                  "| budget (min) | model | parameters | epochs | structures/s | E MAE (meV) | "
                  "F MAE (meV/Å) | F RMSE (meV/Å) | F MAE / best MACE |", "|---" * 9 + "|"]
        for r in budget_table(models):
            lines.append(f"| {r['budget_minutes']:g} | {r['model']} | {r['parameters']:,} | "
                         f"{r['epochs']} | {_fmt(r['structures_per_s'], '.1f')} | "
                         f"{r['energy_mae_offset_free_meV']:.2f} | "
                         f"{r['forces_mae_meV_per_A']:.2f} | {r['forces_rmse_meV_per_A']:.2f} | "
                         f"{_fmt(r['ratio_to_best_mace'], '.2f')} |")
        plot = out / f"learning_{molecule}.png"
        _plot(molecule, models, plot)
        lines += ["", f"![learning curves]({plot.name})", "", "Commands:", ""]
        lines += [f"- {name}: `{unit['command']}`{_resumed(unit)}"
                  for name, unit in models.items()]
        lines.append("")
    path = out / "learning.md"
    with atomic_path(path) as tmp:
        tmp.write_text("\n".join(lines))
    return path
