"""``ase-so3 evaluate``: errors of a potential on a split of an HDF5 data set, per-structure CSV,
and energy/force parity plots."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import torch

from ase_so3 import keys as K
from ase_so3.loading import load_potential
from ase_so3.potentials.forces import energy_forces_stress
from ase_so3.training.data import GraphSet
from ase_so3.training.hdf5 import HDF5Dataset
from ase_so3.training.trainer import evaluate_graph_set


def evaluate_potential(potential, data, split: str = "test", batch_size: int = 32,
                       device: str = "cpu", dtype: str = "float64", limit: int | None = None,
                       output: str | Path | None = None) -> dict:
    """Metrics dict (meV, meV/atom, meV/Å); with ``output`` also writes ``errors.csv`` and
    ``parity.png`` there."""
    model = load_potential(potential) if isinstance(potential, (str, Path)) else potential
    torch_dtype = {"float64": torch.float64, "float32": torch.float32}[dtype]
    model = model.to(device=device, dtype=torch_dtype).eval()
    ds = HDF5Dataset(data)
    indices = ds.split(split)
    if limit is not None:
        indices = indices[:limit]
    graph_set = GraphSet(ds, indices, model.cutoff)
    ds.close()
    metrics = evaluate_graph_set(model, graph_set, batch_size, torch_dtype, device,
                                 per_structure=output is not None)
    metrics["num_structures"] = len(graph_set)
    if output is not None:
        out = Path(output)
        out.mkdir(parents=True, exist_ok=True)
        rows = metrics.pop("per_structure")
        with open(out / "errors.csv", "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)
        metrics["parity_plot"] = _parity_plot(model, graph_set, batch_size, torch_dtype, device,
                                              out / "parity.png")
    return metrics


def _parity_plot(model, graph_set, batch_size, dtype, device, path: Path):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    e_ref, e_pred, f_ref, f_pred = [], [], [], []
    for b in graph_set.batches(batch_size, shuffle=False):
        graph, target = graph_set.collate(b, dtype, device)
        with torch.enable_grad():
            pred = energy_forces_stress(model, graph, forces=True)
        n = target["num_atoms"]
        e_ref.append((target[K.ENERGY] / n).cpu().numpy())
        e_pred.append((pred[K.ENERGY].detach() / n).cpu().numpy())
        f_ref.append(target[K.FORCES].cpu().numpy().ravel())
        f_pred.append(pred[K.FORCES].detach().cpu().numpy().ravel())
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.5))
    for ax, ref, prd, label in ((axes[0], e_ref, e_pred, "energy per atom (eV)"),
                                (axes[1], f_ref, f_pred, "force component (eV/Å)")):
        ref, prd = np.concatenate(ref), np.concatenate(prd)
        ax.scatter(ref, prd, s=3, alpha=0.4)
        lo, hi = min(ref.min(), prd.min()), max(ref.max(), prd.max())
        ax.plot([lo, hi], [lo, hi], "k--", lw=1)
        ax.set_xlabel(f"reference {label}")
        ax.set_ylabel(f"predicted {label}")
        mae = np.abs(ref - prd).mean()
        ax.set_title(f"MAE {mae * 1e3:.2f} m{label.split('(')[1][:-1]}")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return str(path)
