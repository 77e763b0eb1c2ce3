"""Training configuration: a YAML file plus ``key=value`` command-line overrides."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ase_so3.errors import ConfigError
from ase_so3.training import stages


@dataclass
class TrainConfig:
    data: str = ""  # HDF5 data set (ase_so3 schema)
    output: str = "runs/train"  # folder for potential.pt, checkpoints and logs
    model: str = "escn"  # registry name: tfn | se3_transformer | escn
    model_config: dict = field(default_factory=dict)  # model keyword arguments
    train_split: str = "train"  # split of the data set to train on
    val_split: str = "val"  # split for validation (early stopping, best weights)
    batch_size: int = 8  # structures per optimisation step
    val_batch_size: int = 32  # structures per validation pass
    max_epochs: int = 1000  # stop after this many epochs
    time_budget_minutes: float | None = None  # stop (cleanly, with checkpoints) after this
    snapshot_minutes: list = field(default_factory=list)  # also keep what a run of N min ships
    optimizer: str = "adam"  # adam | adamw
    amsgrad: bool = False  # the AMSGrad variant of Adam(W), as MACE and NequIP train
    lr: float = 5e-3  # peak learning rate (after the warm-up)
    weight_decay: float = 0.0  # decoupled with adamw, L2 with adam
    scheduler: str = "plateau"  # plateau, cosine (max_epochs), cosine_budget (time budget), none
    warmup_epochs: float = 1.0  # linear warm-up of the learning rate, in epochs
    plateau_patience: int = 10  # epochs without improvement before the plateau decay
    plateau_factor: float = 0.5  # learning-rate factor at each plateau decay
    min_lr: float = 1e-5  # floor of the learning rate
    energy_weight: float = 1.0  # on (energy error per atom)^2, eV^2
    forces_weight: float = 100.0  # on force component errors^2, (eV/Å)^2
    stress_weight: float = 1.0  # on stress component errors^2, (eV/Å^3)^2, where present
    stage_two_start: float | None = None  # MACE's second stage from this epoch (>= 1) or fraction of the run (< 1; of max_epochs or the time budget); None: one stage
    stage_two_energy_weight: float = 1000.0  # energy_weight in the second stage
    stage_two_forces_weight: float | None = None  # forces_weight in the second stage (None: forces_weight)
    stage_two_lr: float | None = None  # constant learning rate in the second stage (None: the schedule goes on)
    ema_decay: float = 0.99  # 0 disables the exponential moving average
    grad_clip: float = 10.0  # max gradient norm; 0 disables
    divergence_factor: float = 10.0  # stop when the validation force MAE exceeds this many times its best (0: never)
    early_stopping_patience: int = 100  # epochs without a better validation force MAE
    dtype: str = "float64"  # float32 or float64 for the weights and the data
    device: str = "cpu"  # cpu, cuda, cuda:N
    seed: int = 0  # initial weights and batch order
    init_from: str | None = None  # start from this potential's weights (file or shipped name): fine-tuning
    threads: int | None = None  # torch intra-op threads (None: torch's default)
    kernels: str = "auto"  # eSCN edge-frame rotations: cpp (fused CPU kernels), torch, auto (cpp on CPU if they build)
    preload: bool = True  # read all structures and neighbour lists up front (small data sets)
    num_workers: int = 0  # DataLoader worker processes that build batches ahead of training
    progress: bool = True  # progress bar per epoch
    tensorboard: bool = False  # also write a TensorBoard log

    @classmethod
    def load(cls, path: str | Path | None = None, overrides: list[str] | None = None):
        values: dict[str, Any] = {}
        if path is not None:
            loaded = yaml.safe_load(Path(path).read_text()) or {}
            if not isinstance(loaded, dict):
                raise ConfigError(f"{path}: a training config must be a YAML mapping")
            values.update(loaded)
        for item in overrides or []:
            if "=" not in item:
                raise ConfigError(f"override {item!r} is not key=value")
            key, raw = item.split("=", 1)
            value = yaml.safe_load(raw)
            if key.startswith("model_config."):
                values.setdefault("model_config", {})[key.split(".", 1)[1]] = value
            else:
                values[key] = value
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise ConfigError(f"unknown training options {unknown}; known: {sorted(names)}")
        cfg = cls(**values)
        if not cfg.data:
            raise ConfigError("no data set given (data: path/to/data.h5)")
        return cfg

    def __post_init__(self):
        # YAML 1.1 reads "1e-3" as a string: coerce numeric options by their declared type
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            kind = str(f.type)
            if isinstance(value, str) and kind.startswith(("float", "int")):
                try:
                    setattr(self, f.name, float(value) if kind.startswith("float") else int(value))
                except ValueError:
                    raise ConfigError(f"option {f.name} must be a number, got {value!r}") from None
        if self.dtype not in ("float32", "float64"):
            raise ConfigError(f"dtype must be float32 or float64, got {self.dtype!r}")
        if self.kernels not in ("auto", "cpp", "torch"):
            raise ConfigError(f"kernels must be auto, cpp or torch, got {self.kernels!r}")
        stages.check(self)
        if self.scheduler == "cosine_budget":
            if not self.time_budget_minutes:
                raise ConfigError("scheduler: cosine_budget decays the learning rate over the time "
                                  "budget; set time_budget_minutes (or use plateau or cosine)")
            if self.snapshot_minutes:
                raise ConfigError("snapshot_minutes with scheduler: cosine_budget: a snapshot of a "
                                  "run annealed over a longer budget is not what a shorter run "
                                  "ships; train each budget as its own run")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def reference_markdown() -> str:
    """A markdown table of every training option: name, type, default and the comment beside its
    declaration (the docs site's training-configuration reference)."""
    import inspect
    import re
    comments = {}
    for line in inspect.getsource(TrainConfig).splitlines():
        m = re.match(r"\s+(\w+): [^=]+=[^#]*(?:#\s*(.*))?$", line)
        if m:
            comments[m.group(1)] = (m.group(2) or "").strip()
    rows = ["| key | type | default | meaning |", "|---|---|---|---|"]
    for f in dataclasses.fields(TrainConfig):
        if f.default is not dataclasses.MISSING:
            default = repr(f.default)
        else:
            default = repr(f.default_factory())  # type: ignore[misc]
        kind = str(f.type).replace("|", "or")
        meaning = comments.get(f.name, "").replace("|", "or")
        rows.append(f"| `{f.name}` | {kind} | `{default}` | {meaning} |")
    return "\n".join(rows)
