"""Active learning for a molecule outside revised MD17, from nothing, against random labels.

1. ``--initial`` rattled copies of the molecule (ASE's g2 collection) labelled with PySCF at
   PBE/def2-SVP (``ase-so3 label``), an eSCN potential trained on them from scratch
   (``configs/escn-rmd17.yaml``, cosine over ``--epochs``), calibrated by the trainer.
2. Two loops from that potential with the same MD, labeller and fine-tuning
   (``ase-so3 active-learn``): ``uncertainty`` labels the most uncertain frames of each round,
   ``random`` frames drawn at random from the same kind of MD. Both end with the same number of
   labels. ``--repeats N`` runs both N times with other seeds (MD, selection, training order).
3. Each final potential (and the initial one) runs ``--stability-ps`` of Langevin MD at
   ``--temperature`` (the stability benchmark's rules: a bond off by 0.5 Å breaks the run).
4. The test set: a frame every ``--test-every-ps`` of the two loops' stability runs (while
   intact), DFT-labelled; every potential is evaluated on all of it and on each half.

Every stage's result is on disk before the next starts; the same command resumes. CPU seconds
(``time.process_time`` of this one-thread process) are recorded per stage.

    OMP_NUM_THREADS=1 python -m studies.active_learning_study --output al-acetamide \\
        --report docs/active_learning
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from ase_so3.io_utils import atomic_path

ARMS = ("uncertainty", "random")


class CpuLog:
    """CPU seconds per finished stage, in a JSON file (a resumed stage counts its last part)."""

    def __init__(self, path: Path):
        self.path = path
        self.seconds = json.loads(path.read_text()) if path.is_file() else {}

    def done(self, stage: str) -> bool:
        return stage in self.seconds

    @contextmanager
    def stage(self, name: str):
        start = time.process_time()
        yield
        self.seconds[name] = time.process_time() - start
        with atomic_path(self.path) as tmp:
            Path(tmp).write_text(json.dumps(self.seconds, indent=1))
        print(f"{name}: {self.seconds[name] / 60:.1f} CPU-min", flush=True)


def _save_json(path: Path, obj) -> None:
    with atomic_path(path) as tmp:
        Path(tmp).write_text(json.dumps(obj, indent=1))


def run(args) -> dict:
    import torch
    from ase.build import molecule
    from ase.io import read, write

    from ase_so3.active import ActiveLearning, ActiveLearningConfig
    from ase_so3.benchmark.stability import run_stability
    from ase_so3.calculator import SO3Calculator
    from ase_so3.cli import main as cli
    from ase_so3.labelling import label_images, level_of_theory, make_labeller, sample_and_label
    from ase_so3.training.evaluate import evaluate_potential
    from ase_so3.training.hdf5 import Structure, write_dataset

    torch.set_num_threads(1)
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    cpu = CpuLog(out / "cpu_seconds.json")
    start = out / "start.xyz"
    if not start.is_file():
        write(start, molecule(args.molecule))
    options = {"grid_level": args.grid_level, "threads": 1} if args.labeller == "pyscf" else {}
    initial = out / "initial.h5"
    if not cpu.done("initial labels"):
        with cpu.stage("initial labels"):
            sample_and_label(start, initial, args.labeller, options, count=args.initial,
                             rattle=args.rattle, val=args.initial_val, seed=args.seed)
    potentials = {"initial": out / "initial" / "potential.pt"}
    if not cpu.done("initial training"):
        with cpu.stage("initial training"):
            code = cli(["train", args.config, f"data={initial}", f"output={out / 'initial'}",
                        f"max_epochs={args.epochs}", "scheduler=cosine", "progress=false",
                        "time_budget_minutes=null", "threads=1", f"seed={args.seed}",
                        *args.train_overrides, "--resume"])
            if code:
                raise SystemExit(f"the initial training failed ({code})")
    rounds = {}
    for k in range(args.repeats):  # repeats: the same loops with other MD and training seeds
        for arm in ARMS:
            name, folder = (arm, arm) if k == 0 else (f"{arm}, repeat {k}", f"{arm}-{k}")
            cfg = ActiveLearningConfig(
                potential=str(potentials["initial"]), data=str(initial), structure=str(start),
                output=str(out / folder), rounds=args.rounds, temperature_K=args.temperature,
                md_steps=args.md_steps, per_round=args.per_round, selection=arm,
                min_separation=args.min_separation, max_forces_std=args.max_forces_std,
                labeller=args.labeller, labeller_options=options,
                finetune_epochs=args.finetune_epochs, train_overrides=list(args.train_overrides),
                seed=args.seed + k)
            if not cpu.done(f"{name} loop"):
                with cpu.stage(f"{name} loop"):
                    ActiveLearning(cfg).run()
            progress = json.loads((out / folder / "progress.json").read_text())
            rounds[name] = progress["rounds"]
            potentials[name] = Path(rounds[name][-1]["potential"])
    every = int(round(args.test_every_ps * 1000 / 0.5))
    stability = {}
    for name in ("initial", *ARMS):  # the test frames come from the first loops' MD
        pot = potentials[name]
        path = out / f"stability_{name}.json"
        if not path.is_file():
            frames: list = []
            calc = SO3Calculator(str(pot), uncertainty=False)
            row = run_stability(calc, read(start), args.temperature, args.stability_ps,
                                seed=args.seed, frames=frames, frames_every=every)
            write(out / f"frames_{name}.extxyz", frames or read(start), format="extxyz")
            row["frames"] = len(frames)
            _save_json(path, row)
        stability[name] = json.loads(path.read_text())
        print(f"{name}: stable {stability[name]['stable_ps']:.2f} of {args.stability_ps} ps",
              flush=True)
    test = out / "test.h5"
    if not test.is_file():
        with cpu.stage("test labels"):
            sources = {arm: read(out / f"frames_{arm}.extxyz", index=":")[:stability[arm]["frames"]]
                       for arm in ARMS}
            frames = [f for arm in ARMS for f in sources[arm]]
            if not frames:
                raise SystemExit("no intact frame in the stability runs for a test set: both "
                                 "loops' potentials broke within --test-every-ps")
            calc = make_labeller(args.labeller, options)
            done = label_images(frames, calc, out / "test.labels.extxyz")
            structs = [Structure.from_atoms(a, level_of_theory=level_of_theory(calc))
                       for a in done]
            n = len(sources[ARMS[0]])
            parts = {"test": np.arange(len(structs)), f"from_{ARMS[0]}": np.arange(n),
                     f"from_{ARMS[1]}": np.arange(n, len(structs))}
            write_dataset(test, structs, {k: v for k, v in parts.items() if len(v)},
                          provenance=f"500 K MD frames of the final {' and '.join(ARMS)} "
                                     f"potentials, every {args.test_every_ps} ps, labelled with "
                                     f"{level_of_theory(calc)}")
    splits = ["test"] + [f"from_{a}" for a in ARMS if stability[a]["frames"]]
    errors = {name: {split: evaluate_potential(str(pot), test, split=split) for split in splits}
              for name, pot in potentials.items()}
    shared = cpu.seconds["initial labels"] + cpu.seconds["initial training"]
    rows = []
    for name in potentials:
        labels = args.initial + sum(r["labelled"] for r in rounds.get(name, []))
        row = {"potential": name, "labels": labels,
               "cpu_minutes": (shared + cpu.seconds.get(f"{name} loop", 0.0)) / 60,
               "test_forces_mae_meV_per_A": errors[name]["test"]["forces_mae_meV_per_A"],
               "test_energy_mae_meV": errors[name]["test"]["energy_mae_meV"],
               **{k: stability[name][k] for k in ("stable_ps", "broke", "reason", "steps_per_s")
                  if name in stability}}
        for a in ARMS:
            if f"from_{a}" in errors[name]:
                row[f"forces_mae_on_{a}_frames"] = errors[name][f"from_{a}"]["forces_mae_meV_per_A"]
        rows.append(row)
    return {"molecule": args.molecule, "rows": rows, "rounds": rounds, "cpu_seconds": cpu.seconds,
            "test_structures": {a: stability[a]["frames"] for a in ARMS},
            "settings": {k: v for k, v in vars(args).items() if k not in ("output", "report")}}


def table(result: dict) -> str:
    lines = ["| potential | labels | CPU-min | test F MAE (meV/Å) | on uncertainty frames | "
             "on random frames | test E MAE (meV) | stable ps (of "
             f"{result['settings']['stability_ps']}) |", "|---" * 8 + "|"]
    for r in result["rows"]:
        lines.append(f"| {r['potential']} | {r['labels']} | {r['cpu_minutes']:.0f} | "
                     f"{r['test_forces_mae_meV_per_A']:.1f} | "
                     f"{r.get('forces_mae_on_uncertainty_frames', float('nan')):.1f} | "
                     f"{r.get('forces_mae_on_random_frames', float('nan')):.1f} | "
                     f"{r['test_energy_mae_meV']:.1f} | "
                     f"{'%.2f' % r['stable_ps'] if 'stable_ps' in r else '-'} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m studies.active_learning_study", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--output", required=True, help="working folder (resumable)")
    p.add_argument("--report", help="folder for results.json and table.md")
    p.add_argument("--molecule", default="CH3CONH2", help="ASE g2 name (acetamide)")
    p.add_argument("--config", default="configs/escn-rmd17.yaml")
    p.add_argument("--initial", type=int, default=20)
    p.add_argument("--initial-val", type=int, default=4)
    p.add_argument("--rattle", type=float, default=0.05)
    p.add_argument("--epochs", type=int, default=300)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--per-round", type=int, default=8)
    p.add_argument("--md-steps", type=int, default=2000)
    p.add_argument("--min-separation", type=int, default=100, help="MD steps between two "
                   "frames chosen in one round")
    p.add_argument("--max-forces-std", type=float, default=2.0, help="eV/Å: a round's MD stops "
                   "past this uncertainty")
    p.add_argument("--finetune-epochs", type=int, default=60)
    p.add_argument("--repeats", type=int, default=1, help="run both loops this many times "
                   "(seeds --seed, --seed + 1, ...), all evaluated on the first loops' test set")
    p.add_argument("--temperature", type=float, default=500.0)
    p.add_argument("--stability-ps", type=float, default=20.0)
    p.add_argument("--test-every-ps", type=float, default=1.0)
    p.add_argument("--labeller", default="pyscf", help="pyscf (PBE/def2-SVP) or any labeller "
                   "ase-so3 label takes (emt for a quick check of the study itself)")
    p.add_argument("--grid-level", type=int, default=3, help="PySCF's integration grid level")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--train-overrides", nargs="*", default=[], metavar="KEY=VALUE",
                   help="options of every training (e.g. model_config.channels=8 for a check)")
    args = p.parse_args(argv)
    result = run(args)
    result["date"] = time.strftime("%Y-%m-%d")
    result["command"] = " ".join(["python -m studies.active_learning_study",
                                  *(argv if argv is not None else sys.argv[1:])])
    text = table(result)
    print(text)
    if args.report:
        report = Path(args.report)
        report.mkdir(parents=True, exist_ok=True)
        _save_json(report / "results.json", result)
        with atomic_path(report / "table.md") as tmp:
            Path(tmp).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
