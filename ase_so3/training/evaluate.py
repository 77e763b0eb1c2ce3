"""``ase-so3 evaluate``: errors of a potential on a split of an HDF5 data set, per-structure CSV,
and energy/force parity plots."""

from __future__ import annotations

import csv
from pathlib import Path

from ase_so3.calculator import parse_dtype
from ase_so3.loading import load_potential
from ase_so3.training.data import GraphSet
from ase_so3.training.hdf5 import HDF5Dataset
from ase_so3.training.metrics import evaluate_graph_set


def evaluate_potential(potential, data, split: str = "test", batch_size: int = 32,
                       device: str = "cpu", dtype: str = "float64", limit: int | None = None,
                       output: str | Path | None = None, title: str | None = None) -> dict:
    """Metrics dict (meV, meV/atom, meV/Å); with ``output`` also writes ``errors.csv`` and
    ``parity.png`` (headed ``title``) there."""
    model = load_potential(potential) if isinstance(potential, (str, Path)) else potential
    torch_dtype = parse_dtype(dtype)
    model = model.to(device=device, dtype=torch_dtype).eval()
    ds = HDF5Dataset(data)
    indices = ds.split(split)
    if limit is not None:
        indices = indices[:limit]
    ds.check(indices, split)
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
        metrics["parity_plot"] = _parity_plot(metrics.pop("parity"), out / "parity.png", title)
    return metrics


def _parity_plot(parity: dict, path: Path, title: str | None = None):
    try:  # a Figure of its own: no pyplot state, the caller's backend left alone
        from matplotlib.figure import Figure
    except ImportError:
        return None
    from ase_so3.plotting import parity_panel
    fig = Figure(figsize=(10, 4.5))
    axes = fig.subplots(1, 2)
    parity_panel(axes[0], *parity["energy_per_atom"], "energy", fontsize=9)
    parity_panel(axes[1], *parity["forces"], "forces", fontsize=9)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return str(path)
