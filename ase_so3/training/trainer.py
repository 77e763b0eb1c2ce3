"""The training loop: energy + force (+ stress) loss, Adam(W), warm-up and plateau/cosine
schedule, EMA, gradient clipping, early stopping, atomic checkpoints with exact resume, a NaN
guard, progress bars and per-epoch logs, and PyTorch DDP under ``torchrun``.

Output folder: ``potential.pt`` (the best EMA weights with their uncertainty calibration,
loadable by ``SO3Calculator``),
``checkpoint_last.pt``, ``checkpoint_best.pt``, ``metrics.csv``, ``metrics.jsonl``,
``config.yaml`` and ``dataset_stats.json``.
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import os
import time
from pathlib import Path

import numpy as np
import torch
import yaml

from ase_so3 import keys as K
from ase_so3.calculator import parse_dtype
from ase_so3.errors import ASESO3Error
from ase_so3.io_utils import atomic_path, folder_lock
from ase_so3.potentials import build_potential, get_model_class
from ase_so3.potentials.forces import energy_forces_stress
from ase_so3.so3 import cpu_kernels
from ase_so3.training.config import TrainConfig
from ase_so3.training.data import (GraphSet, batch_loader, dataset_statistics,
                                   fit_atomic_energies, species_in)
from ase_so3.training import distributed, logs, outputs, stages
from ase_so3.training.hdf5 import HDF5Dataset
from ase_so3.training.init_from import init_weights
from ase_so3.training.metrics import evaluate_graph_set  # noqa: F401  (public here too)
from ase_so3.training.state import (EMA, CheckpointError, LRSchedule, load_checkpoint, rng_state,
                                    save_checkpoint, set_rng_state, sound_checkpoint_epoch)


class TrainingDivergedError(ASESO3Error, RuntimeError):
    """The loss or the gradients became NaN or infinite."""


def loss_terms(pred: dict, target: dict, cfg: TrainConfig,
               weights: tuple[float, float] | None = None) -> dict[str, torch.Tensor]:
    """The loss and its terms; ``weights``: (energy, forces) weights instead of the config's."""
    energy_weight, forces_weight = weights or (cfg.energy_weight, cfg.forces_weight)
    w = target["weight"]
    n = target["num_atoms"]
    e_err = ((pred[K.ENERGY] - target[K.ENERGY]) / n) ** 2
    out = {"energy": (w * e_err).sum() / w.sum(), "forces": ((pred[K.FORCES] - target[K.FORCES]) ** 2).mean()}
    total = energy_weight * out["energy"] + forces_weight * out["forces"]
    if K.STRESS in target and K.STRESS in pred:
        out["stress"] = ((pred[K.STRESS] - target[K.STRESS]) ** 2).mean()
        total = total + cfg.stress_weight * out["stress"]
    out["total"] = total
    return out


class Trainer:
    def __init__(self, cfg: TrainConfig):
        self.cfg = cfg
        self.dtype = parse_dtype(cfg.dtype)
        self.rank, self.world_size = distributed.init(cfg.device)
        self.device = torch.device(cfg.device if not cfg.device.startswith("cuda") or self.world_size == 1
                                   else f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}")
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        self.out = Path(cfg.output)
        torch.manual_seed(cfg.seed)
        ds = HDF5Dataset(cfg.data)
        for split in (cfg.train_split, cfg.val_split):
            ds.check(ds.split(split), split)  # finite, labelled: before anything is written
        species = tuple(cfg.model_config.get("species") or species_in(ds))
        model_kwargs = {**cfg.model_config, "species": list(species)}
        cutoff = model_kwargs.setdefault("cutoff", get_model_class(cfg.model).config_class.cutoff)
        self.train_set = GraphSet(ds, ds.split(cfg.train_split), cutoff, preload=cfg.preload)
        self.val_set = GraphSet(ds, ds.split(cfg.val_split), cutoff, preload=cfg.preload)
        ds.close()
        atomic = fit_atomic_energies(self.train_set, species)
        self.stats = dataset_statistics(self.train_set, atomic, species)
        model_kwargs.setdefault("avg_num_neighbors", round(self.stats["avg_num_neighbors"], 4))
        self.model = build_potential(cfg.model, **model_kwargs)
        self.model.atomic_energies.copy_(torch.as_tensor(atomic))
        self.model.scale.fill_(self.stats["force_rms"])
        self.init_metadata = init_weights(self.model, cfg.init_from) if cfg.init_from else None
        self.model.to(device=self.device, dtype=self.dtype)
        self.model_config = self.model.config.to_dict()
        self._params = [p for p in self.model.parameters() if p.requires_grad]
        self.ema = EMA(self.model, cfg.ema_decay) if cfg.ema_decay > 0 else None
        opt = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}[cfg.optimizer]
        self.optimizer = opt(self.model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay,
                             amsgrad=cfg.amsgrad)
        steps_per_epoch = len(self.train_set.batches(cfg.batch_size, False))
        self.schedule = LRSchedule(self.optimizer, cfg.scheduler, cfg.lr,
                                   int(cfg.warmup_epochs * steps_per_epoch), cfg.min_lr,
                                   cfg.max_epochs, cfg.plateau_patience, cfg.plateau_factor,
                                   budget_s=(cfg.time_budget_minutes * 60
                                             if cfg.time_budget_minutes else None))
        self.train_model = self.model
        if self.world_size > 1:
            from torch.nn.parallel import DistributedDataParallel
            self.train_model = DistributedDataParallel(self.model)
        self.epoch, self.best_metric, self.bad_epochs, self.history = 0, math.inf, 0, []
        self.elapsed = 0.0
        self.stage_two_from = None  # the first epoch of the second stage, once it has begun

    # -- one optimisation step ----------------------------------------------------------------
    def compute_loss(self, batch) -> dict[str, torch.Tensor]:
        """``batch``: positions into the training set, or an already collated (graph, target)."""
        if isinstance(batch, list):
            batch = self.train_set.collate(batch, self.dtype, "cpu")
        graph, target = (_to(x, self.device) for x in batch)
        pred = energy_forces_stress(self.train_model, graph, forces=True,
                                    stress=K.STRESS in target, training=True)
        return loss_terms(pred, target, self.cfg,
                          stages.loss_weights(self.cfg, self.stage_two_from is not None))

    def train_step(self, batch) -> float:
        self.optimizer.zero_grad(set_to_none=True)
        terms = self.compute_loss(batch)
        loss = terms["total"]
        if not torch.isfinite(loss):
            raise TrainingDivergedError(
                f"the loss became {loss.item()} in epoch {self.epoch + 1}; "
                f"{self._divergence_advice()}")
        # only the weights: the positions' own second derivatives are not needed
        with (distributed.same_layout_strides_quiet() if self.world_size > 1 else contextlib.nullcontext()):
            loss.backward(inputs=self._params)
        if self.cfg.grad_clip > 0:
            norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip)
            if not torch.isfinite(norm):
                raise TrainingDivergedError(f"gradients became non-finite in epoch "
                                            f"{self.epoch + 1}; {self._divergence_advice()}")
        self.optimizer.step()
        self.schedule.step()
        if self.ema is not None:
            self.ema.update(self.model)
        return float(loss.detach())

    # -- evaluation ---------------------------------------------------------------------------
    def validate(self) -> dict[str, float]:
        if self.ema is not None:
            self.ema.swap(self.model)
        try:
            return evaluate_graph_set(self.model, self.val_set, self.cfg.val_batch_size,
                                      self.dtype, self.device)
        finally:
            if self.ema is not None:
                self.ema.swap(self.model)

    # -- checkpoints --------------------------------------------------------------------------
    def _payload(self) -> dict:
        return {"model": self.model.name, "model_config": self.model_config,
                "state_dict": self.model.state_dict(),
                "ema": self.ema.state_dict() if self.ema else None,
                "optimizer": self.optimizer.state_dict(), "schedule": self.schedule.state_dict(),
                "epoch": self.epoch, "best_metric": self.best_metric,
                "bad_epochs": self.bad_epochs, "history": self.history, "elapsed": self.elapsed,
                "rng": rng_state(), "train_config": self.cfg.to_dict(),
                "stage_two_from": self.stage_two_from}

    def resume(self, path: Path | None = None) -> bool:
        """Continue from ``path`` (default ``checkpoint_last.pt`` of the output folder, if there
        is one). Then the logs are rebuilt from the checkpoint's history and ``potential.pt`` is
        re-exported from ``checkpoint_best.pt`` if a kill left it older than the best epoch."""
        explicit = path is not None
        path = Path(path) if explicit else self.out / "checkpoint_last.pt"
        if not explicit and not path.is_file():
            return False
        try:
            p = load_checkpoint(path, self.model.name, self.model_config)
        except CheckpointError as exc:
            raise CheckpointError(f"{exc}. {self._sound_alternative(path)}") from exc
        self._restore(p)
        if self.rank == 0:
            logs.rewrite(self.out, self.history)
            self._reexport_best_if_stale()
        return True

    def _restore(self, p: dict) -> None:
        self.model.load_state_dict(p["state_dict"])
        if self.ema is not None and p["ema"] is not None:
            self.ema.load_state_dict(p["ema"])
        self.optimizer.load_state_dict(p["optimizer"])
        self.schedule.load_state_dict(p["schedule"])
        self.epoch, self.best_metric = p["epoch"], p["best_metric"]
        self.bad_epochs, self.history, self.elapsed = p["bad_epochs"], p["history"], p["elapsed"]
        set_rng_state(p["rng"])
        self.stage_two_from = p.get("stage_two_from")  # absent in checkpoints written before it existed

    def _sound_alternative(self, bad: Path) -> str:
        """Advice after ``bad`` failed to load: an intact checkpoint of this folder to resume from."""
        for name in ("checkpoint_last.pt", "checkpoint_best.pt"):
            other = self.out / name
            if other.resolve() == Path(bad).resolve():
                continue
            epoch = sound_checkpoint_epoch(other)
            if epoch is not None:
                return (f"{other} (epoch {epoch}) is intact: resume from it with "
                        f"`ase-so3 train ... --resume-from {other}` (later epochs are trained "
                        "again)")
        return (f"No intact checkpoint is left in {self.out}: start afresh in a new --output "
                "folder (or delete the damaged file)")

    def _divergence_advice(self) -> str:
        last = self.out / "checkpoint_last.pt"
        epoch = sound_checkpoint_epoch(last)
        if epoch is None:
            return ("no checkpoint was written before it (it diverged in the first epoch). Lower "
                    "the learning rate (lr) and start again")
        return (f"the last good checkpoint {last} (epoch {epoch}) is kept. Lower the learning "
                "rate (lr), then resume with --resume")

    def _score(self, row: dict) -> float:
        """What the best epoch minimises: the validation force MAE, and in the second stage the
        validation loss with its weights (:mod:`~ase_so3.training.stages`)."""
        if self.stage_two_from is None:
            return row["val_forces_mae_meV_per_A"]
        return stages.validation_loss(row, stages.loss_weights(self.cfg, True))

    def _best_epoch(self) -> int | None:
        first = self.stage_two_from or 1
        scores = [(self._score(r), r["epoch"]) for r in self.history if r["epoch"] >= first]
        return min(scores)[1] if scores else None

    def _best_row(self) -> dict | None:
        best = self._best_epoch()
        return next((r for r in self.history if r["epoch"] == best), None)

    def _begin_stage_two(self, log) -> None:
        """From the next epoch on: the second stage's loss weights and learning rate, and a new
        best epoch chosen among its epochs."""
        self.stage_two_from, self.best_metric, self.bad_epochs = self.epoch + 1, math.inf, 0
        if self.cfg.stage_two_lr is not None:
            self.schedule.hold(self.cfg.stage_two_lr)
        e_w, f_w = stages.loss_weights(self.cfg, True)
        log(f"second stage from epoch {self.stage_two_from}: energy weight {e_w:g}, forces "
            f"weight {f_w:g}, learning rate "
            + (f"{self.cfg.stage_two_lr:g}" if self.cfg.stage_two_lr else "as scheduled"))

    def _reexport_best_if_stale(self) -> None:
        best = self._best_epoch()
        path = self.out / "potential.pt"
        if best is None:
            return
        try:
            from ase_so3.potentials.serialization import read_potential_file
            current = read_potential_file(path)["metadata"].get("epochs")
        except Exception:
            current = None
        if current == best:
            return
        best_path = self.out / "checkpoint_best.pt"
        if sound_checkpoint_epoch(best_path) != best:
            return
        here = copy.deepcopy(self._payload())  # state_dict() shares the live tensors
        self._restore(load_checkpoint(best_path, self.model.name, self.model_config))
        self.export_potential(path)
        self._restore(here)

    def export_potential(self, path: Path) -> None:
        if self.ema is not None:
            self.ema.swap(self.model)
        try:
            self.model.save(path, metadata={
                "training_data": str(self.cfg.data), "train_split": self.cfg.train_split,
                "epochs": self.epoch, "train_config": self.cfg.to_dict(),
                "best_val_forces_mae_meV_per_A": (self.history[-1]["val_forces_mae_meV_per_A"]
                                                  if self.history else None),
                **({"stage_two_from": self.stage_two_from} if self.stage_two_from else {}),
                "reference_structures": outputs.reference_structures(self.train_set),
                **({"init_from": self.init_metadata} if self.init_metadata else {})})
        finally:
            if self.ema is not None:
                self.ema.swap(self.model)

    # -- the loop -----------------------------------------------------------------------------
    def fit(self, resume: bool = False, log=print, resume_from: str | Path | None = None) -> dict:
        """Train. ``resume``: continue from ``checkpoint_last.pt`` if there is one;
        ``resume_from``: continue from that checkpoint (for example ``checkpoint_best.pt``).
        The output folder is locked for the run (:func:`~ase_so3.io_utils.folder_lock`)."""
        main = self.rank == 0
        with (folder_lock(self.out, "ase-so3 train") if main else contextlib.nullcontext()), \
                self.step_context(log):
            self._start(resume, resume_from, log)
            return self._fit(log)

    def _start(self, resume: bool, resume_from, log) -> None:
        if self.rank == 0:
            self.out.mkdir(parents=True, exist_ok=True)
            (self.out / "config.yaml").write_text(yaml.safe_dump(self.cfg.to_dict(),
                                                                 sort_keys=False))
            with atomic_path(self.out / "dataset_stats.json") as tmp:
                tmp.write_text(json.dumps(logs.finite_or_none(self.stats), indent=2,
                                          allow_nan=False))
        if resume_from is not None:
            self.resume(Path(resume_from))
            log(f"resumed from epoch {self.epoch} ({resume_from})")
        elif resume and self.resume():
            log(f"resumed from epoch {self.epoch}")

    def step_context(self, log=print):
        """What every training step runs in (:meth:`fit` enters it): the edge-frame backend of
        :mod:`ase_so3.so3.cpu_kernels` chosen by ``kernels``, restored afterwards."""
        applies = self.device.type == "cpu" and self.model.uses_edge_frame
        return cpu_kernels.using(cpu_kernels.resolve(self.cfg.kernels, applies, log))

    def _fit(self, log) -> dict:
        cfg, main = self.cfg, self.rank == 0
        from tqdm import tqdm
        budget = cfg.time_budget_minutes * 60 if cfg.time_budget_minutes else math.inf
        stop_reason = "max_epochs"
        while self.epoch < cfg.max_epochs:
            if self.elapsed >= budget:
                stop_reason = "time_budget"
                break
            if self.stage_two_from is None and stages.begins(cfg, self.epoch, self.elapsed):
                self._begin_stage_two(log if main else (lambda *_: None))
            start = time.perf_counter()
            batches = self.train_set.batches(cfg.batch_size, True, cfg.seed, self.epoch,
                                             self.rank, self.world_size)
            losses = []
            loader = batch_loader(self.train_set, batches, self.dtype, cfg.num_workers)
            for b in tqdm(loader, total=len(batches), desc=f"epoch {self.epoch + 1}", leave=False,
                          mininterval=1.0, disable=not (cfg.progress and main)):
                losses.append(self.train_step(b))
            train_seconds = time.perf_counter() - start
            metrics = self.validate()
            self.epoch += 1
            self.elapsed = distributed.shared_clock(self.elapsed + time.perf_counter() - start,
                                                  self.world_size, self.device)
            metric = metrics["forces_mae_meV_per_A"]
            self._check_blow_up(metric)
            self.schedule.end_epoch(metric, self.elapsed)
            # the unrounded clock: the budget is compared with it (a rounded one can reach it)
            row = {"epoch": self.epoch, "elapsed_s": self.elapsed,
                   "lr": self.optimizer.param_groups[0]["lr"], "train_loss": float(np.mean(losses)),
                   "structures_per_s": len(self.train_set) / max(train_seconds, 1e-9),
                   **{f"val_{k}": v for k, v in metrics.items()}}
            score = self._score(row)
            improved = score < self.best_metric
            self.best_metric = min(score, self.best_metric)
            self.bad_epochs = 0 if improved else self.bad_epochs + 1
            self.history.append(row)
            if main:  # checkpoint_last.pt commits the epoch; resume() repairs the rest
                payload = self._payload()
                if improved:
                    save_checkpoint(self.out / "checkpoint_best.pt", payload)
                save_checkpoint(self.out / "checkpoint_last.pt", payload)
                if improved:
                    self.export_potential(self.out / "potential.pt")
                self._write_logs(row)
                log(f"epoch {self.epoch}: loss {row['train_loss']:.4g}, val E MAE "
                    f"{metrics['energy_mae_meV']:.2f} meV, F MAE {metric:.2f} meV/Å, lr "
                    f"{row['lr']:.2e}, {row['structures_per_s']:.1f} structures/s")
                self._snapshots(log)
            if self.bad_epochs >= cfg.early_stopping_patience:
                stop_reason = "early_stopping"
                break
        if main and (self.out / "potential.pt").is_file():
            shift = self.refit_energy_shift(self.out / "potential.pt")
            log(f"refitted the per-atom energy shift on the training set: {shift * 1e3:+.3f} meV/atom")
            if len(self.val_set) >= 2:  # forces_std and energy_std (ase_so3.uncertainty)
                from ase_so3.uncertainty import calibrate_file
                cal, _ = calibrate_file(self.out / "potential.pt", self.out / "potential.pt",
                                        self.train_set, self.val_set, cfg.val_batch_size,
                                        self.dtype, self.device)
                log(f"uncertainty calibrated on the validation set: force scale "
                    f"{cal.forces_scale * 1e3:.3f} meV/Å")
        if self.world_size > 1:
            torch.distributed.barrier()
        best = self._best_row()
        return {"epochs": self.epoch, "best_epoch": best and best["epoch"],
                "best_val_forces_mae_meV_per_A": best["val_forces_mae_meV_per_A"] if best
                else math.inf, "stop_reason": stop_reason, "elapsed_s": self.elapsed,
                "stage_two_from": self.stage_two_from}

    def _check_blow_up(self, metric: float) -> None:
        """A run whose loss stays finite can still blow up (docs/accuracy_study.md: a 64-channel
        eSCN at a learning rate of 8.5e-3, from 9.3 to 585 meV/Å in seven epochs). Stop before
        the epoch is checkpointed when the validation force MAE exceeds ``divergence_factor``
        times the best so far; the best epoch's full state is kept."""
        factor = self.cfg.divergence_factor
        lowest, at = min(((r["val_forces_mae_meV_per_A"], r["epoch"]) for r in self.history),
                         default=(math.inf, None))
        if not factor or not math.isfinite(lowest) or metric <= factor * lowest:
            return
        best = self._best_epoch()
        where = self.out / "checkpoint_best.pt"
        raise TrainingDivergedError(
            f"the validation force MAE jumped to {metric:.4g} meV/Å in epoch {self.epoch}, "
            f"{metric / lowest:.0f}x the best ({lowest:.4g} in epoch {at}; "
            f"the limit is divergence_factor={factor:g}): training diverged and stopped before "
            f"this epoch was checkpointed. {where} holds epoch {best} with its optimiser state: "
            f"continue from it with a lower learning rate, `ase-so3 train ... "
            f"lr={self.cfg.lr / 2:g} --resume-from {where}`")

    def _snapshots(self, log) -> None:
        """``potential_<N>min.pt``: for each of ``snapshot_minutes`` passed, the potential a run
        with ``time_budget_minutes=N`` would ship (the best so far, energy shift refitted); so one
        long run gives the shorter budgets' results as well."""
        import shutil
        for minutes in self.cfg.snapshot_minutes:
            path = self.out / f"potential_{float(minutes):g}min.pt"
            if self.elapsed < float(minutes) * 60 or path.is_file():
                continue
            with atomic_path(path) as tmp:
                shutil.copyfile(self.out / "potential.pt", tmp)
                self.refit_energy_shift(tmp)
            log(f"snapshot for a {float(minutes):g}-minute budget: {path}")

    def refit_energy_shift(self, path: Path) -> float:
        """:func:`~ase_so3.training.outputs.refit_energy_shift` on the training set."""
        return outputs.refit_energy_shift(path, self.train_set, self.cfg.val_batch_size,
                                          self.dtype, self.device)

    def _write_logs(self, row: dict) -> None:
        logs.append_row(self.out, row, self.history)
        if self.cfg.tensorboard:
            from torch.utils.tensorboard import SummaryWriter
            with SummaryWriter(str(self.out / "tensorboard")) as tb:
                for k, v in row.items():
                    if k != "epoch" and isinstance(v, (int, float)):
                        tb.add_scalar(k, v, self.epoch)


def _to(d: dict, device) -> dict:
    return {k: v.to(device) for k, v in d.items()}
