"""``python -m studies.ablation`` (from the repository root): what each part of the recommended eSCN buys, at a short budget.

Each variant is the recommended config (``configs/escn-rmd17.yaml``) with some options switched
back, trained by ``ase-so3 train`` on one thread for the same wall-clock budget, one after
another. The table gives, per variant, the best validation force MAE at the budget, after
``--epochs`` epochs (equal work, unaffected by what else ran on the machine) and at the time
those epochs would take alone on the machine (``--speed``: the structures/s of each variant
measured alone, from :func:`measure_speed`).

The variants change one thing at a time against ``full``; ``shipped`` is the 0.1 eSCN with its
0.1 recipe (the configuration of the shipped ``escn-rmd17-*`` potentials), ``shipped+recipe``
the same model with the new recipe.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from ase_so3.training.logs import read_csv

OLD_RECIPE = ["forces_weight=100", "lr=0.005", "amsgrad=false"]
OLD_MODEL = [f"model_config.{k}=false" for k in ("edge_species", "message_centre", "message_gate",
                                                  "norm", "edge_degree_embedding")]
OLD_MODEL.append("model_config.ffn_hidden=0")
VARIANTS = {
    "full": [],
    "full, 0.1 recipe": OLD_RECIPE,
    "no message gate": ["model_config.message_gate=false"],
    "no species in edges, no centre in messages": ["model_config.edge_species=false",
                                                   "model_config.message_centre=false"],
    "no feed-forward block": ["model_config.ffn_hidden=0"],
    "no norm": ["model_config.norm=false"],
    "no edge-degree embedding": ["model_config.edge_degree_embedding=false"],
    "lmax 3, mmax 2": ["model_config.lmax=3", "model_config.mmax=2"],
    "64 channels": ["model_config.channels=64", "model_config.ffn_hidden=128"],
    "shipped+recipe": OLD_MODEL,
    "shipped": OLD_MODEL + OLD_RECIPE,
}


def slug(name: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in name).strip("_")


def train_command(config: str, h5: str, out: Path, minutes: float, overrides: list[str]) -> list:
    return ["ase-so3", "train", config, f"data={h5}", f"output={out}",
            f"time_budget_minutes={minutes}", "progress=false", *overrides]


def measure_speed(config: str, h5: str, overrides: list[str], steps: int = 20) -> float:
    """Training structures/s of a variant on one thread (``steps`` optimiser steps after 3 of
    warm-up), in this process: run it alone on the machine."""
    import torch

    from ase_so3.training.config import TrainConfig
    from ase_so3.training.trainer import Trainer
    torch.set_num_threads(1)
    cfg = TrainConfig.load(config, [f"data={h5}", "output=/tmp/ase_so3_speed", "progress=false",
                                    *overrides])
    trainer = Trainer(cfg)
    batches = trainer.train_set.batches(cfg.batch_size, True, 0, 0)[:steps + 3]
    for b in batches[:3]:
        trainer.train_step(b)
    start = time.perf_counter()
    for b in batches[3:]:
        trainer.train_step(b)
    return steps * cfg.batch_size / (time.perf_counter() - start)


def best_until(rows: list[dict], key: str, limit: float) -> float | None:
    vals = [r["val_forces_mae_meV_per_A"] for r in rows if r[key] <= limit]
    return min(vals) if vals else None


def within_budget(rows: list[dict], minutes: float) -> list[dict]:
    """The epochs a run with ``time_budget_minutes=minutes`` would train: up to the first epoch
    that ends past the budget (a longer run's rows are cut there)."""
    for k, r in enumerate(rows):
        if r["elapsed_s"] >= minutes * 60:
            return rows[:k + 1]
    return rows


def table(out: Path, epochs: int, speed: dict, minutes: float) -> str:
    lines = [f"| variant | epochs in budget | best val F MAE at budget (meV/Å) | after {epochs} "
             "epochs | structures/s alone | minutes for those epochs alone |", "|---" * 6 + "|"]
    for name in VARIANTS:
        path = out / slug(name) / "metrics.csv"
        if not path.is_file():
            continue
        all_rows = read_csv(path)
        rows = within_budget(all_rows, minutes)
        sps = speed.get(name)
        at_e = best_until(all_rows, "epoch", epochs)
        alone = epochs * 950 / sps / 60 if sps else None
        fmt = lambda v, f: "-" if v is None else format(v, f)  # noqa: E731
        lines.append(f"| {name} | {int(rows[-1]['epoch'])} | "
                     f"{fmt(min(r['val_forces_mae_meV_per_A'] for r in rows), '.1f')} | "
                     f"{fmt(at_e if len(all_rows) >= epochs else None, '.1f')} | "
                     f"{fmt(sps, '.1f')} | {fmt(alone, '.1f')} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m studies.ablation", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="HDF5 data set (ase-so3 convert)")
    p.add_argument("--config", default="configs/escn-rmd17.yaml")
    p.add_argument("--minutes", type=float, default=8.0)
    p.add_argument("--epochs", type=int, default=10, help="the equal-work column")
    p.add_argument("--variants", nargs="*", default=None, help=f"names from {list(VARIANTS)}")
    p.add_argument("--output", default="ablation_out")
    p.add_argument("--speed", action="store_true", help="measure structures/s of each variant")
    p.add_argument("--table-only", action="store_true", help="only write the table")
    args = p.parse_args(argv)
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    names = args.variants or list(VARIANTS)
    unknown = sorted(set(names) - set(VARIANTS))
    if unknown:
        p.error(f"unknown variants {unknown}; known: {list(VARIANTS)}")
    speed_file = out / "speed.json"
    speed = json.loads(speed_file.read_text()) if speed_file.is_file() else {}
    for name in names if not args.table_only else []:
        run_dir = out / slug(name)
        if not (run_dir / "metrics.csv").is_file():
            cmd = train_command(args.config, args.data, run_dir, args.minutes, VARIANTS[name])
            with open(out / f"{slug(name)}.log", "w") as log:
                subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, check=True)
        if args.speed and name not in speed:
            speed[name] = measure_speed(args.config, args.data, VARIANTS[name])
            speed_file.write_text(json.dumps(speed, indent=1))
    text = table(out, args.epochs, speed, args.minutes)
    (out / "ablation.md").write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
