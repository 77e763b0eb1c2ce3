"""Ship a trained potential: copy it into the package with a model card measured here.

    python -m release.publish escn-rmd17-aspirin --run runs/escn-rmd17-aspirin \\
        --data runs/rmd17_aspirin_01.h5 --molecule aspirin --hardware "2-core x86-64 CPU, 1 thread" \\
        --command "ase-so3 train configs/escn-rmd17.yaml data=... output=... threads=1" \\
        --date 2026-12-02 --commit af9f83d

``--run`` is a training output folder (``potential.pt`` and ``metrics.jsonl`` or ``metrics.csv``).
The card holds the potential's version (the ase_so3 release that ships it, the training date and
the commit of the training code), the data and split, hyperparameters, parameter count, training
time and hardware, the exact command, and the test errors measured on the whole test split and on
its first 100 structures (what the test suite re-measures). With ``--blind DATA`` (the same
training split with another official split's test file, ``ase-so3 convert ..._train_01.npz
..._test_02.npz``, which leaves out the test frames that are also in ``train_01``) the card also
holds the errors on that blind test split; ``python -m release.publish --add-blind NAME DATA``
adds them to a shipped potential's card.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

from ase_so3.io_utils import atomic_path
from ase_so3.pretrained import HERE

# Batatia et al., "MACE: Higher Order Equivariant Message Passing Neural Networks for Fast and
# Accurate Force Fields", NeurIPS 2022 (arXiv:2206.07697), Table 1: rMD17, 950 training structures.
MACE_RMD17 = {"aspirin": (2.2, 6.6), "azobenzene": (1.2, 3.0), "benzene": (0.4, 0.3),
              "ethanol": (0.4, 2.1), "malonaldehyde": (0.8, 4.1), "naphthalene": (0.5, 1.6),
              "paracetamol": (1.3, 4.8), "salicylic": (0.9, 3.1), "toluene": (0.5, 1.5),
              "uracil": (0.5, 2.1)}
MACE_CITATION = ("I. Batatia, D. P. Kovács, G. N. C. Simm, C. Ortner, G. Csányi, MACE: Higher Order "
                 "Equivariant Message Passing Neural Networks for Fast and Accurate Force Fields, "
                 "NeurIPS 2022, arXiv:2206.07697, Table 1")


# Batatia et al. 2022, Table 1 (NequIP's rMD17 force MAE as reported there, meV/Å).
NEQUIP_RMD17_FORCES = {"aspirin": 8.2, "ethanol": 2.8}


def target_forces_mae(model: str, molecule: str) -> float | None:
    """The issue's target for a shipped potential: 2x MACE's published force MAE for eSCN, 2x
    NequIP's for TFN and the SE(3)-Transformer (None where no published value is known)."""
    ref = (MACE_RMD17.get(molecule, (None, None))[1] if model == "escn"
           else NEQUIP_RMD17_FORCES.get(molecule))
    return None if ref is None else 2.0 * ref


def project_minutes(history: list[dict], target_val: float, tail: float = 0.5) -> float | None:
    """Training minutes at which the best validation force MAE would reach ``target_val``, from
    a power law ``F = a t^b`` fitted to the best-so-far curve over the last ``tail`` of the
    run's time (None if the curve does not fall there). A rough guide: learning curves bend."""
    import numpy as np
    t = np.array([h["elapsed_s"] for h in history]) / 60
    best = np.minimum.accumulate([h["val_forces_mae_meV_per_A"] for h in history])
    if best[-1] <= target_val:
        return float(t[np.argmax(best <= target_val)])
    keep = t >= t[-1] * (1 - tail)
    if keep.sum() < 3 or not best[keep][-1] < best[keep][0]:  # decided on the data: a flat
        return None  # curve's fitted slope is a round-off of either sign
    b, a = np.polyfit(np.log(t[keep]), np.log(best[keep]), 1)
    if b >= 0:
        return None
    return float(np.exp((np.log(target_val) - a) / b))


def project_from_budgets(points: dict, target: float) -> tuple[float | None, float | None]:
    """Training minutes at which a run of the same recipe would reach the test force MAE
    ``target``, from the power law ``F = a t^b`` through the test force MAE of runs with
    different budgets (``points``: minutes -> F), and the exponent ``b``; (None, b) if the
    error does not fall with the budget. Unlike the validation curve of one run, this holds for
    schedules that anneal over the budget (cosine_budget), whose last minutes fall steeply."""
    import numpy as np
    t = np.array(sorted(float(m) for m in points))
    f = np.array([points[m] for m in sorted(points, key=float)], dtype=float)
    if len(t) < 2:
        raise ValueError("a projection from budgets needs runs at two budgets at least")
    if f[-1] <= target:
        return float(t[-1]), None
    b, a = np.polyfit(np.log(t), np.log(f), 1)
    if not f.min() < f[0] or b >= 0:  # the error does not fall with the budget
        return None, float(b)
    return float(np.exp((np.log(target) - a) / b)), float(b)


def learning_unit(results: Path, molecule: str, run: Path) -> dict | None:
    """The unit of ``ase-so3 benchmark learning``'s ``results.json`` that trained ``run``."""
    models = json.loads(Path(results).read_text())["molecules"].get(molecule, {})
    for unit in models.values():
        if Path(unit.get("path", "")).parent.resolve() == Path(run).resolve():
            return unit
    return None


def target_entry(model: str, molecule: str, f_test: float, history: list[dict],
                 unit: dict | None) -> dict | None:
    """The card's ``target``: the target force MAE, whether it is met and the training time
    projected to meet it, from the test errors of the learning benchmark's runs at several
    budgets where there are two, else from the run's own validation curve."""
    target = target_forces_mae(model, molecule)
    if target is None:
        return None
    entry = {"forces_mae_meV_per_A": target, "met": f_test <= target,
             "basis": "2x MACE's published force MAE" if model == "escn"
             else "2x NequIP's published force MAE"}
    points = {float(m): r["forces_mae_meV_per_A"] for m, r in (unit or {}).get("test", {}).items()}
    if len(points) >= 2:
        minutes, b = project_from_budgets(points, target)
        budgets = " and ".join(f"{m:g}" for m in sorted(points))
        entry["projection"] = (f"power law F = a t^b through the test force MAE at the {budgets}-"
                               f"minute budgets of the same recipe (b = {b:.2f})" if b is not None
                               else "met within the budget")
    else:
        f_val = min(h["val_forces_mae_meV_per_A"] for h in history)
        # the validation value that corresponds to the target, at today's test/validation ratio
        minutes = project_minutes(history, target * f_val / f_test)
        entry["projection"] = "power law through the second half of the validation curve"
    entry["projected_training_minutes"] = minutes
    return entry


FROM_SCRATCH_NOTE = " (of the from-scratch CPU recipe, stage 1; fine-tuning is not part of it)"


def reproject(name: str, learning_results: Path, molecule: str, unit_name: str) -> dict:
    """Recompute the ``target`` of a shipped card from the runs at several budgets of the unit
    ``unit_name`` of ``learning_results`` (the learning benchmark's record of its training), and
    its ``mace_same_budget`` from the MACE runs recorded there since."""
    path = HERE / f"{name}.json"
    card = json.loads(path.read_text())
    unit = json.loads(Path(learning_results).read_text())["molecules"][molecule][unit_name]
    if len(unit.get("test", {})) < 2:
        raise SystemExit(f"{unit_name} of {learning_results} has test errors at one budget only; "
                         "a projection needs two (run it with --snapshot-minutes)")
    entry = target_entry(card["model"], molecule, card["test_errors"]["forces_mae_meV_per_A"],
                         [], unit)
    # a fine-tuned card: the projection and MACE compare the from-scratch run, stage 1
    stages = card.get("training", {}).get("stages")
    if entry is not None:
        if stages:
            entry["projection"] += FROM_SCRATCH_NOTE
        card["target"] = entry
    budget = (stages[0].get("time_budget_minutes") if stages
              else card.get("hyperparameters", {}).get("time_budget_minutes"))
    if budget is not None:
        same = mace_at_budget(learning_results, molecule, budget)
        card["mace_same_budget"] = dict(same, compares_with="stage 1") if same and stages else same
    write_card(path, card)
    return card


def mace_at_budget(results: Path, molecule: str, budget_minutes: float) -> dict | None:
    """The best MACE that ``ase-so3 benchmark learning`` trained on ``molecule`` with the same
    budget (its ``results.json``): size, offset-free energy MAE and force MAE on the test set."""
    from ase_so3.benchmark.learning_report import budget_table
    models = json.loads(Path(results).read_text())["molecules"].get(molecule, {})
    rows = [r for r in budget_table(models)
            if r["kind"] == "mace" and r["budget_minutes"] == float(budget_minutes)]
    if not rows:
        return None
    best = min(rows, key=lambda r: r["forces_mae_meV_per_A"])
    return {"model": best["model"], "budget_minutes": float(budget_minutes),
            "epochs": best["epochs"], "parameters": best["parameters"],
            "energy_mae_offset_free_meV": best["energy_mae_offset_free_meV"],
            "forces_mae_meV_per_A": best["forces_mae_meV_per_A"],
            "source": "ase-so3 benchmark learning, same split, VM class and thread count "
                      "(docs/learning.md)"}


def publish(name: str, run: Path, data: Path, molecule: str, command: str, hardware: str,
            date: str = "", commit: str = "", learning_results: Path | None = None,
            budget_minutes: float | None = None, plot_dir: Path | None = None,
            blind: Path | None = None) -> dict:
    import ase_so3
    from ase_so3.loading import load_potential
    from ase_so3.training.hdf5 import HDF5Dataset
    from ase_so3.training.logs import read_history
    potential = run / "potential.pt"
    model = load_potential(potential)
    full, first100 = measure(model, data, name, molecule, plot_dir)
    history = read_history(run)
    ds = HDF5Dataset(data)
    provenance = ds.provenance
    ds.close()
    meta = model.metadata
    e, f = MACE_RMD17.get(molecule, (None, None))
    card = {
        "name": name, "model": model.name, "molecule": molecule,
        "version": {"release": ase_so3.__version__, "trained": date, "commit": commit},
        "config": model.config.to_dict(), "num_parameters": model.num_parameters(),
        "data": {"dataset": "revised MD17 (Christensen & von Lilienfeld 2020), PBE/def2-SVP, "
                            "CC0-1.0", "split": "01", "provenance": provenance,
                 "train": "950 structures drawn from rmd17_%s_train_01.npz (seed 0)" % molecule,
                 "val": "the other 50 structures of rmd17_%s_train_01.npz" % molecule,
                 "test": "rmd17_%s_test_01.npz (1000 structures)" % molecule},
        "hyperparameters": meta.get("train_config", {}),
        "training": {"epochs": len(history), "wall_time_s": history[-1]["elapsed_s"],
                     "hardware": hardware,
                     "best_val_forces_mae_meV_per_A": meta.get("best_val_forces_mae_meV_per_A")},
        "command": command,
        "test_errors": {k: v for k, v in full.items() if k != "num_structures"},
        "test_errors_first100": {k: v for k, v in first100.items() if k != "num_structures"},
        "published_mace": {"energy_mae_meV": e, "forces_mae_meV_per_A": f,
                           "source": MACE_CITATION},
    }
    unit = learning_unit(learning_results, molecule, run) if learning_results else None
    target = target_entry(model.name, molecule, card["test_errors"]["forces_mae_meV_per_A"],
                          history, unit)
    if target is not None:
        card["target"] = target
    if blind is not None:
        card["blind_test_errors"] = blind_errors(model, blind)
    if learning_results is not None and budget_minutes is not None:
        card["mace_same_budget"] = mace_at_budget(learning_results, molecule, budget_minutes)
    ship(HERE, name, potential, card)
    return card


def measure(model, data, name: str, molecule: str, plot_dir=None) -> tuple[dict, dict]:
    """Test errors on the whole test split and on its first 100 structures (what the test suite
    re-measures); with ``plot_dir`` also the parity plot ``NAME_parity.png`` there."""
    import tempfile

    from ase_so3.training.evaluate import evaluate_potential
    with tempfile.TemporaryDirectory() as tmp:
        full = evaluate_potential(model, data, split="test", output=tmp,
                                  title=f"{name}: all {molecule} test structures")
        if plot_dir is not None and full.get("parity_plot"):
            with atomic_path(Path(plot_dir) / f"{name}_parity.png") as dest:
                shutil.copyfile(full["parity_plot"], dest)
    full.pop("parity_plot", None)
    return full, evaluate_potential(model, data, split="test", limit=100)


def blind_errors(model, data: Path) -> dict:
    """Errors on the test split of ``data``, with that split's description (which file, which
    frames were left out)."""
    from ase_so3.training.evaluate import evaluate_potential
    from ase_so3.training.hdf5 import HDF5Dataset
    ds = HDF5Dataset(data)
    described = ds.split_description("test")
    ds.close()
    errors = evaluate_potential(model, data, split="test")
    return dict(errors, data=f"{Path(data).name}: {described}")


def add_blind(name: str, data: Path) -> dict:
    """Measure a shipped potential on the blind test split of ``data`` and record it in its
    card (the weights are untouched)."""
    from ase_so3.loading import load_potential
    path = HERE / f"{name}.json"
    card = json.loads(path.read_text())
    card["blind_test_errors"] = blind_errors(load_potential(HERE / f"{name}.pt"), data)
    write_card(path, card)
    return card


def write_card(path: Path, card: dict) -> None:
    """Write a model card (JSON) atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(card, indent=2, ensure_ascii=False) + "\n")


def ship(here: Path, name: str, potential: Path, card: dict) -> None:
    """Copy ``potential`` into the package as ``NAME.pt`` beside its card ``NAME.json``."""
    with atomic_path(Path(here) / f"{name}.pt") as tmp:
        shutil.copyfile(potential, tmp)
    write_card(Path(here) / f"{name}.json", card)


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--reproject"]:
        if len(argv) != 5:
            raise SystemExit("usage: python -m release.publish --reproject NAME "
                             "LEARNING_RESULTS MOLECULE UNIT")
        card = reproject(argv[1], Path(argv[2]), argv[3], argv[4])
        print(json.dumps(card.get("target"), indent=1))
        return 0
    if argv[:1] == ["--add-blind"]:
        if len(argv) != 3:
            raise SystemExit("usage: python -m release.publish --add-blind NAME DATA")
        b = add_blind(argv[1], Path(argv[2]))["blind_test_errors"]
        print(f"{argv[1]}: blind test energy MAE {b['energy_mae_meV']:.2f} meV, force MAE "
              f"{b['forces_mae_meV_per_A']:.2f} meV/Å ({b['data']})")
        return 0
    p = argparse.ArgumentParser(description="copy a trained potential into the package with a card")
    p.add_argument("name")
    p.add_argument("--run", type=Path, required=True, help="training output folder")
    p.add_argument("--data", type=Path, required=True, help="HDF5 data set with a test split")
    p.add_argument("--molecule", required=True)
    p.add_argument("--command", required=True, help="the exact training command")
    p.add_argument("--hardware", required=True)
    p.add_argument("--date", default="", help="when it was trained (YYYY-MM-DD)")
    p.add_argument("--commit", default="", help="commit of the code that trained it")
    p.add_argument("--learning-results", type=Path, default=None,
                   help="results.json of `ase-so3 benchmark learning`: record the best MACE "
                        "trained there with the same budget (--budget)")
    p.add_argument("--budget", type=float, default=None, help="training budget in minutes")
    p.add_argument("--blind", type=Path, default=None,
                   help="HDF5 data set whose test split is a blind test (another official split)")
    p.add_argument("--plot-dir", type=Path, default=None,
                   help="also write the test-set parity plot NAME_parity.png here")
    a = p.parse_args(argv)
    card = publish(a.name, a.run, a.data, a.molecule, a.command, a.hardware, a.date, a.commit,
                   a.learning_results, a.budget, a.plot_dir, a.blind)
    t = card["test_errors"]
    print(f"{a.name}: test energy MAE {t['energy_mae_meV']:.2f} meV, force MAE "
          f"{t['forces_mae_meV_per_A']:.2f} meV/Å ({card['num_parameters']} parameters)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
