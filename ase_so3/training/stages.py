"""The second training stage (MACE's ``--stage_two``, formerly SWA): for the last part of a run
the loss weights change (by default the energy weight is raised) and, optionally, the learning
rate is held at a constant value.

The stage starts at the beginning of an epoch: at epoch ``stage_two_start`` (a whole number
>= 1: after that many epochs) or at a fraction of the run (a number below 1: of ``max_epochs``,
or of the time budget when the run has one, whichever is reached first). The decision uses only
the checkpointed epoch count and training clock, so a resumed run enters it at the same epoch.
From then on the best epoch (``checkpoint_best.pt``, ``potential.pt``) is chosen among the
second stage's epochs by the validation loss with the second stage's weights, as MACE chooses
its stage-two model; the first stage's best stays in the history.
"""

from __future__ import annotations

import math

from ase_so3.errors import ConfigError


def check(cfg) -> None:
    """ConfigError for second-stage options that cannot work."""
    start = cfg.stage_two_start
    if start is None:
        return
    if not (math.isfinite(start) and start > 0):
        raise ConfigError(f"stage_two_start must be an epoch (>= 1) or a fraction of the run "
                          f"(between 0 and 1), got {start!r}")
    if start >= 1 and (start != int(start) or start >= cfg.max_epochs):
        raise ConfigError(f"stage_two_start={start!r}: as an epoch it must be a whole number "
                          f"below max_epochs ({cfg.max_epochs}), or the second stage never runs")
    if cfg.stage_two_lr is not None and not cfg.stage_two_lr > 0:
        raise ConfigError(f"stage_two_lr must be positive (or null to keep the schedule), got "
                          f"{cfg.stage_two_lr!r}")
    for name in ("stage_two_energy_weight", "stage_two_forces_weight"):
        value = getattr(cfg, name)
        if value is not None and not value >= 0:
            raise ConfigError(f"{name} must be >= 0, got {value!r}")


def begins(cfg, epochs_done: int, elapsed_s: float) -> bool:
    """Whether the epoch after ``epochs_done`` (at ``elapsed_s`` training seconds) is in the
    second stage."""
    start = cfg.stage_two_start
    if start is None:
        return False
    if start >= 1:
        return epochs_done >= start
    progress = epochs_done / cfg.max_epochs
    if cfg.time_budget_minutes:
        progress = max(progress, elapsed_s / (cfg.time_budget_minutes * 60))
    return progress >= start


def loss_weights(cfg, stage_two: bool) -> tuple[float, float]:
    """(energy weight, forces weight) of the loss in the given stage."""
    if not stage_two:
        return cfg.energy_weight, cfg.forces_weight
    forces = cfg.forces_weight if cfg.stage_two_forces_weight is None else cfg.stage_two_forces_weight
    return cfg.stage_two_energy_weight, forces


def validation_loss(metrics: dict, weights: tuple[float, float]) -> float:
    """The training loss's form on validation errors (eV and eV/Å, as the loss is written):
    ``w_E (energy RMSE per atom)^2 + w_F (force-component RMSE)^2``. Keys without the ``val_``
    prefix (:func:`~ase_so3.training.metrics.error_metrics`) or with it (a history row)."""
    def get(key):
        return metrics[key] if key in metrics else metrics[f"val_{key}"]
    energy = get("energy_rmse_meV_per_atom") * 1e-3
    forces = get("forces_rmse_meV_per_A") * 1e-3
    return weights[0] * energy ** 2 + weights[1] * forces ** 2
