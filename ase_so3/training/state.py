"""Optimiser-side state the trainer saves and restores exactly: EMA weights, the learning-rate
schedule, and checkpoint files."""

from __future__ import annotations

import hashlib
import math
import random
from pathlib import Path

import numpy as np
import torch

from ase_so3.errors import ASESO3Error, ConfigError, describe_exception
from ase_so3.io_utils import atomic_path

CHECKPOINT_FORMAT = "ase_so3.checkpoint"
CHECKPOINT_VERSION = 2  # 2: a ``checksum`` over the whole content (version 1 files still load)


class CheckpointError(ASESO3Error, ValueError):
    """A checkpoint that cannot resume this run."""


class EMA:
    """Exponential moving average of the parameters (decay warmed up as (1+n)/(10+n))."""

    def __init__(self, model: torch.nn.Module, decay: float):
        self.decay = decay
        self.updates = 0
        self.shadow = {k: p.detach().clone() for k, p in model.named_parameters()}

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        self.updates += 1
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        for k, p in model.named_parameters():
            self.shadow[k].mul_(d).add_(p.detach(), alpha=1 - d)

    @torch.no_grad()
    def swap(self, model: torch.nn.Module) -> None:
        """Exchange model parameters and shadow (call twice to restore)."""
        for k, p in model.named_parameters():
            tmp = p.detach().clone()
            p.copy_(self.shadow[k])
            self.shadow[k].copy_(tmp)

    def state_dict(self) -> dict:
        return {"decay": self.decay, "updates": self.updates, "shadow": self.shadow}

    def load_state_dict(self, state: dict) -> None:
        self.decay, self.updates = state["decay"], state["updates"]
        for k, v in state["shadow"].items():
            self.shadow[k].copy_(v)


class LRSchedule:
    """Linear warm-up (per step), then plateau decay on the validation metric, cosine decay over
    ``total_epochs``, or cosine decay over a wall-clock budget (``cosine_budget``).

    ``cosine_budget`` reaches ``min_lr`` when ``budget_s`` seconds of training are spent. Within
    an epoch the time is extrapolated from the step count at the seconds per step measured so far
    (validation included), so the learning rate follows only the checkpointed state: a resumed
    run repeats it exactly, and data-parallel ranks that share ``elapsed`` agree on it."""

    KINDS = ("plateau", "cosine", "cosine_budget", "none")

    def __init__(self, optimizer, kind: str, base_lr: float, warmup_steps: int, min_lr: float,
                 total_epochs: int, patience: int, factor: float, budget_s: float | None = None):
        if kind not in self.KINDS:
            raise ConfigError(f"scheduler must be one of {', '.join(self.KINDS)}, got {kind!r}")
        if kind == "cosine_budget" and not (budget_s and math.isfinite(budget_s) and budget_s > 0):
            raise ConfigError("scheduler cosine_budget decays over the time budget: set "
                              "time_budget_minutes")
        self.optimizer, self.kind, self.base_lr = optimizer, kind, base_lr
        self.warmup_steps, self.min_lr, self.total_epochs = warmup_steps, min_lr, total_epochs
        self.patience, self.factor, self.budget_s = patience, factor, budget_s
        self.step_count, self.epoch, self.plateau_scale = 0, 0, 1.0
        self.best, self.bad_epochs = math.inf, 0
        self.clock, self.clock_steps = 0.0, 0  # training seconds and steps at the last epoch end
        self.fixed_lr = None  # set: this learning rate from now on (a second training stage)
        self._apply()

    def _progress(self) -> float:
        if self.kind == "cosine":
            return min(1.0, self.epoch / max(1, self.total_epochs))
        t = self.clock
        if self.clock_steps:
            t += (self.step_count - self.clock_steps) * self.clock / self.clock_steps
        return min(1.0, t / self.budget_s)

    def lr(self) -> float:
        if self.fixed_lr is not None:
            return self.fixed_lr
        warm = min(1.0, (self.step_count + 1) / self.warmup_steps) if self.warmup_steps else 1.0
        if self.kind in ("cosine", "cosine_budget"):
            frac = self._progress()
            target = self.min_lr + 0.5 * (self.base_lr - self.min_lr) * (1 + math.cos(math.pi * frac))
        else:
            target = max(self.min_lr, self.base_lr * self.plateau_scale)
        return target * warm

    def _apply(self) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = self.lr()

    def hold(self, lr: float) -> None:
        """This learning rate from now on, whatever the schedule (a second training stage)."""
        self.fixed_lr = float(lr)
        self._apply()

    def step(self) -> None:
        self.step_count += 1
        self._apply()

    def end_epoch(self, metric: float, elapsed: float | None = None) -> None:
        """``elapsed``: training seconds so far (the clock of ``cosine_budget``)."""
        self.epoch += 1
        if elapsed is not None:
            self.clock, self.clock_steps = float(elapsed), self.step_count
        if self.kind == "plateau":
            if metric < self.best:
                self.best, self.bad_epochs = metric, 0
            else:
                self.bad_epochs += 1
                if self.bad_epochs > self.patience:
                    self.plateau_scale *= self.factor
                    self.bad_epochs = 0
        self._apply()

    def state_dict(self) -> dict:
        return {k: getattr(self, k) for k in ("step_count", "epoch", "plateau_scale", "best",
                                              "bad_epochs", "clock", "clock_steps",
                                              "fixed_lr")}

    def load_state_dict(self, state: dict) -> None:
        for k, v in state.items():
            setattr(self, k, v)
        self._apply()


def rng_state() -> dict:
    """Global RNG states as plain tensors and tuples (weights-only loadable)."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return {"torch": torch.get_rng_state(),
            "numpy": (name, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss),
                      float(cached)),
            "python": random.getstate()}


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    random.setstate(state["python"])


def _digest(obj, h) -> None:
    """Feed a nested structure of dicts, lists, tuples, tensors and plain values into ``h``, so
    that every tensor byte and every number of a checkpoint counts."""
    if isinstance(obj, torch.Tensor):
        t = obj.detach().cpu().contiguous()
        h.update(f"T{t.dtype}{tuple(t.shape)}".encode())
        if t.numel():
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    elif isinstance(obj, dict):
        h.update(f"D{len(obj)}".encode())
        for k in sorted(obj, key=repr):
            h.update(repr(k).encode())
            _digest(obj[k], h)
    elif isinstance(obj, (list, tuple)):
        h.update(f"{type(obj).__name__[0]}{len(obj)}".encode())
        for v in obj:
            _digest(v, h)
    else:
        h.update(f"V{type(obj).__name__}:{obj!r}".encode())


def checkpoint_checksum(payload: dict) -> str:
    h = hashlib.sha256()
    _digest({k: v for k, v in payload.items() if k != "checksum"}, h)
    return h.hexdigest()


def save_checkpoint(path: Path, payload: dict) -> None:
    payload = dict(payload, format=CHECKPOINT_FORMAT, format_version=CHECKPOINT_VERSION)
    payload["checksum"] = checkpoint_checksum(payload)
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def read_checkpoint(path: Path) -> dict:
    """Load a checkpoint and check that it is whole (size, format, checksum); raise
    :class:`CheckpointError` saying what is wrong otherwise."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path} is empty (0 bytes): it was truncated or never written")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(f"{path} cannot be read as a checkpoint ({describe_exception(exc)}); "
                              "it is truncated or damaged") from exc
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path} is not an ase_so3 training checkpoint")
    expected = payload.get("checksum")
    if expected is None and payload.get("format_version", 1) >= 2:
        raise CheckpointError(f"{path} is damaged: its checksum entry is missing")
    if expected is not None and expected != checkpoint_checksum(payload):
        raise CheckpointError(f"{path} is damaged: its checksum does not match its content")
    return payload


def sound_checkpoint_epoch(path: Path) -> int | None:
    """The epoch of the checkpoint at ``path`` if it exists and is whole, else None."""
    try:
        return int(read_checkpoint(path)["epoch"])
    except (CheckpointError, KeyError, TypeError, ValueError):
        return None


def load_checkpoint(path: Path, model_name: str, model_config: dict) -> dict:
    """Read a checkpoint and check it is whole and belongs to the same model and configuration."""
    payload = read_checkpoint(path)
    if payload["model"] != model_name:
        raise CheckpointError(f"{path} is a checkpoint of a '{payload['model']}' model, but this "
                              f"run trains '{model_name}'; use another --output folder or the "
                              "same model")
    if payload["model_config"] != model_config:
        diff = {k: (payload["model_config"].get(k), v) for k, v in model_config.items()
                if payload["model_config"].get(k) != v}
        raise CheckpointError(f"{path} was written with a different model configuration "
                              f"(checkpoint, now): {diff}; use another --output folder")
    return payload
