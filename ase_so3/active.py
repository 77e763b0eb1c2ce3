"""Active learning: from a potential and its data set to a better one, where MD goes.

Each round runs Langevin MD with the current potential (calibrated, :mod:`ase_so3.uncertainty`),
keeps a candidate frame every ``sample_every`` steps with its largest ``forces_std``, picks the
``per_round`` most uncertain candidates at least ``min_separation`` steps apart (mutually
different; ``selection="random"`` draws them at random instead, the baseline), labels them with
an ASE calculator (DFT with :class:`~ase_so3.labelling.PySCFCalculator` by default), appends
them to the data set (every ``val_every``-th to the validation split) with their level of
theory, and fine-tunes the potential on the grown set (``init_from``). The fine-tuned
potential is calibrated again by the trainer and drives the next round.

Everything lives in the output folder: ``data.h5`` (a copy of the data set that grows),
``round_NN/`` (candidates, the selection, ``labelled.extxyz`` written one label at a time, the
fine-tuning run) and ``progress.json``. Started again with the same folder, the loop goes on
where it stopped: labels on disk are never computed twice.

    ase-so3 active-learn --potential run/potential.pt --data data.h5 --structure start.xyz \\
        --output al --rounds 5 --temperature 500 --md-steps 4000 --per-round 10
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ase_so3.errors import ConfigError
from ase_so3.io_utils import atomic_path
from ase_so3.labelling import label_images, level_of_theory, make_labeller


@dataclass
class ActiveLearningConfig:
    potential: str  # the starting potential (file or shipped name)
    data: str  # HDF5 data set with train and val splits (copied, never changed)
    structure: str  # MD starting structure (file or shipped molecule name)
    output: str = "active"
    rounds: int = 3
    temperature_K: float = 500.0
    timestep_fs: float = 0.5
    md_steps: int = 2000  # per round
    sample_every: int = 10  # MD steps between candidate frames
    per_round: int = 10  # labels per round
    min_separation: int = 100  # MD steps between two frames chosen in one round
    selection: str = "uncertainty"  # or "random": the same MD, frames drawn at random (a baseline)
    val_every: int = 5  # every val_every-th label goes to the validation split
    max_forces_std: float = 2.0  # eV/Å: the MD of a round stops past this (the potential broke)
    labeller: str = "pyscf"  # pyscf, emt, or module:Class of any ASE calculator
    labeller_options: dict = field(default_factory=dict)
    finetune_epochs: int = 30
    finetune_lr: float = 1e-3
    train_overrides: list = field(default_factory=list)  # key=value for the fine-tuning runs
    seed: int = 0


SELECTIONS = ("uncertainty", "random")


def select(steps: np.ndarray, scores: np.ndarray, count: int, min_separation: int,
           rng: np.random.Generator | None = None) -> list[int]:
    """Positions of up to ``count`` candidates, most uncertain first, no two closer than
    ``min_separation`` steps. With ``rng``, candidates are taken in a random order instead
    (the baseline active learning is measured against)."""
    order = np.argsort(-scores, kind="stable") if rng is None else rng.permutation(len(scores))
    chosen: list[int] = []
    for k in order:
        if all(abs(int(steps[k]) - int(steps[c])) >= min_separation for c in chosen):
            chosen.append(int(k))
        if len(chosen) == count:
            break
    return chosen


class ActiveLearning:
    def __init__(self, cfg: ActiveLearningConfig):
        if cfg.selection not in SELECTIONS:
            raise ConfigError(f"selection must be one of {', '.join(SELECTIONS)}, got "
                              f"{cfg.selection!r}")
        self.cfg = cfg
        self.out = Path(cfg.output)
        self.out.mkdir(parents=True, exist_ok=True)
        self.data = self.out / "data.h5"
        if not self.data.is_file():
            with atomic_path(self.data) as tmp:
                shutil.copyfile(cfg.data, tmp)
        self.progress_path = self.out / "progress.json"
        self.progress = (json.loads(self.progress_path.read_text())
                         if self.progress_path.is_file() else {"rounds": []})

    def _save_progress(self) -> None:
        with atomic_path(self.progress_path) as tmp:
            Path(tmp).write_text(json.dumps(self.progress, indent=1))

    def current_potential(self) -> str:
        done = self.progress["rounds"]
        return done[-1]["potential"] if done else self.cfg.potential

    def run(self, log=print) -> dict:
        for r in range(len(self.progress["rounds"]), self.cfg.rounds):
            start = time.perf_counter()
            folder = self.out / f"round_{r:02d}"
            folder.mkdir(exist_ok=True)
            row = {"round": r, "from_potential": self.current_potential()}
            row.update(self._explore(folder, r))
            row.update(self._label_and_append(folder, r))
            row.update(self._finetune(folder))
            row["seconds"] = time.perf_counter() - start
            self.progress["rounds"].append(row)
            self._save_progress()
            log(f"round {r}: MD {row['md_steps_done']} steps, largest forces_std "
                f"{row['max_forces_std']:.3f} eV/Å; {row['labelled']} new labels "
                f"({row['total_structures']} in data.h5); after fine-tuning validation force "
                f"MAE {row['val_forces_mae_meV_per_A']:.2f} meV/Å")
        self.progress["config"] = asdict(self.cfg)
        self._save_progress()
        return self.progress

    # -- the stages; each one's result is on disk before the next starts ---------------------
    def _explore(self, folder: Path, r: int) -> dict:
        from ase.io import read, write

        from ase_so3 import SO3Calculator
        from ase_so3.md import load_structure, make_dynamics, maxwell_boltzmann
        path = folder / "candidates.extxyz"
        info = folder / "candidates.json"
        if not info.is_file():
            cfg = self.cfg
            atoms = load_structure(cfg.structure)
            atoms.calc = SO3Calculator(self.current_potential(), uncertainty=True)
            rng = np.random.default_rng([cfg.seed, r])
            maxwell_boltzmann(atoms, cfg.temperature_K, rng)
            dyn = make_dynamics(atoms, "nvt", cfg.timestep_fs, cfg.temperature_K, rng=rng)
            frames, steps, scores, stop = [], [], [], ""
            for step in range(cfg.sample_every, cfg.md_steps + 1, cfg.sample_every):
                try:
                    dyn.run(cfg.sample_every)
                    worst = float(np.max(atoms.calc.get_property("forces_std", atoms)))
                except Exception as exc:  # a broken potential may put atoms on top of each other
                    stop = f"{type(exc).__name__}: {str(exc)[:100]}"
                    break
                frame = atoms.copy()
                frame.set_constraint()
                frame.calc = None
                frames.append(frame)
                steps.append(step)
                scores.append(worst)
                if worst > cfg.max_forces_std:
                    stop = f"forces_std {worst:.2f} eV/Å over max_forces_std"
                    break
            if not frames:
                raise ConfigError(f"round {r}: the MD gave no frame ({stop}); start from another "
                                  "structure or a better potential")
            with atomic_path(path) as tmp:
                write(tmp, frames, format="extxyz")
            pick = (np.random.default_rng([cfg.seed, r, 1]) if cfg.selection == "random"
                    else None)
            chosen = select(np.array(steps), np.array(scores), cfg.per_round, cfg.min_separation,
                            pick)
            with atomic_path(info) as tmp:
                Path(tmp).write_text(json.dumps({"steps": steps, "max_forces_std": scores,
                                                 "chosen": chosen, "stopped": stop}))
        meta = json.loads(info.read_text())
        self._frames = [read(path, index=k) for k in meta["chosen"]]
        return {"md_steps_done": meta["steps"][-1], "md_stopped": meta["stopped"],
                "max_forces_std": max(meta["max_forces_std"]),
                "chosen_forces_std": [meta["max_forces_std"][k] for k in meta["chosen"]]}

    def _label_and_append(self, folder: Path, r: int) -> dict:
        from ase_so3.training.hdf5 import HDF5Dataset, Structure, append_structures
        calc = make_labeller(self.cfg.labeller, self.cfg.labeller_options)
        level = level_of_theory(calc)
        done = label_images(self._frames, calc, folder / "labelled.extxyz")
        ds = HDF5Dataset(self.data)
        appended = f"active learning round {r}:" in ds.provenance  # the append is one rewrite
        total = len(ds) + (0 if appended else len(done))
        ds.close()
        if not appended:
            structs = [Structure.from_atoms(a, level_of_theory=level) for a in done]
            splits = ["val" if (k + 1) % self.cfg.val_every == 0 else "train"
                      for k in range(len(structs))]
            note = f"active learning round {r}: {len(structs)} structures labelled with {level}"
            append_structures(self.data, structs, split=splits, provenance=note)
        return {"labelled": len(done), "level_of_theory": level, "total_structures": total}

    def _finetune(self, folder: Path) -> dict:
        from ase_so3.loading import load_potential
        from ase_so3.training.config import TrainConfig
        from ase_so3.training.trainer import Trainer
        source = self.current_potential()
        model = load_potential(source)
        base = dict(model.metadata.get("train_config", {}))
        known = set(TrainConfig.__dataclass_fields__)
        values = {k: v for k, v in base.items() if k in known}
        values.update(data=str(self.data), output=str(folder / "train"), model=model.name,
                      model_config=model.config.to_dict(), init_from=str(source),
                      max_epochs=self.cfg.finetune_epochs, lr=self.cfg.finetune_lr,
                      scheduler="cosine", time_budget_minutes=None, snapshot_minutes=[],
                      early_stopping_patience=10 ** 6, progress=False, warmup_epochs=0,
                      seed=self.cfg.seed)
        cfg = TrainConfig.load(None, [f"{k}={json.dumps(v)}" for k, v in values.items()]
                               + list(self.cfg.train_overrides))
        result = Trainer(cfg).fit(resume=True, log=lambda *_: None)
        return {"potential": str(folder / "train" / "potential.pt"),
                "val_forces_mae_meV_per_A": result["best_val_forces_mae_meV_per_A"],
                "finetune_epochs": result["epochs"]}
