"""Ship a fine-tuned potential: the card of the potential it started from, updated.

    python -m release.finetuned escn-rmd17-aspirin \\
        --stage runs/escn-finetune-h200/round1/escn-aspirin-lr1e-3 \\
        --stage runs/escn-finetune-h200/round2/escn-aspirin-lr0.001 \\
        --potential /path/to/round2/potential.pt --data runs/rmd17_aspirin_01.h5 \\
        --molecule aspirin --hardware "one NVIDIA H200 ..." --command "..." \\
        --date 2026-12-04 --commit bccdf24

The shipped card ``NAME.json`` describes the first stage (the from-scratch run). Each ``--stage``
is a training output folder (``metrics.csv``, ``config.yaml``) of ``ase-so3 train ...
init_from=...`` that started from the previous stage's best potential; ``--potential`` is the last
stage's. The new card keeps the first stage's record (training, command, test errors, the
projection to the target and MACE at the same budget, which compare from-scratch runs) under
``training.stages`` and measures the fine-tuned potential's test errors here.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import yaml

from ase_so3.pretrained import HERE


def _chain(meta: dict) -> list[dict]:
    """The ``init_from`` records of a potential's metadata, the earliest first."""
    out = []
    while meta.get("init_from"):
        meta = meta["init_from"]
        out.append(meta)
    return out[::-1]


def finetuned_card(name: str, stages: list[Path], potential: Path, data: Path, molecule: str,
                   command: str, hardware: str, date: str = "", commit: str = "",
                   plot_dir: Path | None = None) -> dict:
    import ase_so3
    from ase_so3.loading import load_potential
    from release.publish import FROM_SCRATCH_NOTE, measure, ship
    from ase_so3.training.logs import read_history
    base = json.loads((HERE / f"{name}.json").read_text())
    if "stages" in base["training"]:
        raise SystemExit(f"{name}.json already describes a fine-tuned potential; fine-tune "
                         "from the from-scratch card or extend its stages by hand")
    model = load_potential(potential)
    chain = _chain(model.metadata)
    if len(chain) != len(stages):
        raise SystemExit(f"{potential} records {len(chain)} earlier stage(s) (init_from) but "
                         f"{len(stages)} --stage folder(s) were given")
    full, first100 = measure(model, data, name, molecule, plot_dir)
    budget = (base.get("hyperparameters", {}).get("time_budget_minutes")
              or (base.get("mace_same_budget") or {}).get("budget_minutes"))
    first = {"stage": "from scratch", **base["training"], "time_budget_minutes": budget,
             "command": base["command"],
             "version": base["version"], "test_errors": base["test_errors"]}
    records = [first]
    for i, folder in enumerate(stages):
        history = read_history(folder)
        cfg = yaml.safe_load((folder / "config.yaml").read_text())
        records.append({
            "stage": f"fine-tuning {i + 1}", "init_from": cfg.get("init_from"),
            "epochs": len(history), "wall_time_s": history[-1]["elapsed_s"],
            "lr": cfg["lr"], "time_budget_minutes": cfg.get("time_budget_minutes"),
            "device": cfg.get("device"), "hardware": hardware,
            "best_val_forces_mae_meV_per_A": min(h["val_forces_mae_meV_per_A"] for h in history)})
    card = dict(base)
    for stale in ("blind_test_errors", "uncertainty"):  # measured with the earlier weights
        card.pop(stale, None)
    card["version"] = {"release": ase_so3.__version__, "trained": date, "commit": commit}
    card["hyperparameters"] = model.metadata.get("train_config", {})
    card["training"] = {
        "epochs": sum(r["epochs"] for r in records),
        "wall_time_s": sum(r["wall_time_s"] for r in records),
        "hardware": f"{base['training']['hardware']}; then fine-tuned on {hardware}",
        "best_val_forces_mae_meV_per_A": model.metadata.get("best_val_forces_mae_meV_per_A"),
        "stages": records}
    card["command"] = command
    card["test_errors"] = {k: v for k, v in full.items() if k != "num_structures"}
    card["test_errors_first100"] = {k: v for k, v in first100.items() if k != "num_structures"}
    if base.get("target"):
        target = dict(base["target"])
        target["met"] = card["test_errors"]["forces_mae_meV_per_A"] <= target["forces_mae_meV_per_A"]
        target["projection"] += FROM_SCRATCH_NOTE
        card["target"] = target
    if base.get("mace_same_budget"):
        card["mace_same_budget"] = dict(base["mace_same_budget"], compares_with="stage 1")
    ship(HERE, name, potential, card)
    return card


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description="ship a fine-tuned potential under an existing name")
    p.add_argument("name")
    p.add_argument("--stage", type=Path, action="append", required=True,
                   help="a fine-tuning run's output folder, in order (repeat)")
    p.add_argument("--potential", type=Path, required=True, help="the last stage's potential")
    p.add_argument("--data", type=Path, required=True, help="HDF5 data set with a test split")
    p.add_argument("--molecule", required=True)
    p.add_argument("--command", required=True, help="the exact fine-tuning command(s)")
    p.add_argument("--hardware", required=True, help="where the fine-tuning ran")
    p.add_argument("--date", default="")
    p.add_argument("--commit", default="")
    p.add_argument("--plot-dir", type=Path, default=None,
                   help="also write the test-set parity plot NAME_parity.png here")
    a = p.parse_args(argv)
    card = finetuned_card(a.name, a.stage, a.potential, a.data, a.molecule, a.command,
                          a.hardware, a.date, a.commit, a.plot_dir)
    t, s = card["test_errors"], card["training"]["stages"][0]["test_errors"]
    print(f"{a.name}: test force MAE {s['forces_mae_meV_per_A']:.2f} -> "
          f"{t['forces_mae_meV_per_A']:.2f} meV/Å, energy {s['energy_mae_meV']:.2f} -> "
          f"{t['energy_mae_meV']:.2f} meV")
    return 0


if __name__ == "__main__":
    sys.exit(main())
