"""Parity panels that read at a glance: energies per atom relative to the reference mean (meV/atom,
so tick labels stay short), forces in eV/Å, MAE and RMSE inside each panel, units on every axis."""

from __future__ import annotations

import numpy as np


def parity_panel(ax, ref, pred, kind: str, title: str | None = None, fontsize: int = 8) -> None:
    """``kind``: ``"energy"`` (per-atom energies in eV, plotted in meV/atom from the mean of the
    reference) or ``"forces"`` (force components in eV/Å)."""
    ref, pred = np.asarray(ref, dtype=float).ravel(), np.asarray(pred, dtype=float).ravel()
    if kind == "energy":
        centre = ref.mean()
        x, y = (ref - centre) * 1e3, (pred - centre) * 1e3
        label, unit, err_unit, scale = "energy per atom − mean (meV/atom)", "meV/atom", "meV/atom", 1.0
    elif kind == "forces":
        x, y = ref, pred
        label, unit, err_unit, scale = "force component (eV/Å)", "eV/Å", "meV/Å", 1e3
    else:
        raise ValueError(f"kind must be 'energy' or 'forces', not {kind!r}")
    ax.scatter(x, y, s=2, alpha=0.3, rasterized=True)
    lo, hi = float(min(x.min(), y.min())), float(max(x.max(), y.max()))
    ax.plot([lo, hi], [lo, hi], "k--", lw=0.8)
    err = (y - x) * scale
    ax.text(0.04, 0.96, f"MAE {np.abs(err).mean():.2f} {err_unit}\nRMSE {np.sqrt((err ** 2).mean()):.2f} "
            f"{err_unit}", transform=ax.transAxes, va="top", fontsize=fontsize,
            bbox={"boxstyle": "round", "facecolor": "white", "alpha": 0.8, "lw": 0.5})
    ax.set_xlabel(f"reference {label}", fontsize=fontsize)
    ax.set_ylabel(f"predicted ({unit})", fontsize=fontsize)
    ax.tick_params(labelsize=fontsize - 1)
    if title:
        ax.set_title(title, fontsize=fontsize + 1)
