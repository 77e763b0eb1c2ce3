"""Energy and force errors of a potential on a set of structures (validation, ``ase-so3 evaluate``)."""

from __future__ import annotations

import numpy as np
import torch

from ase_so3 import keys as K
from ase_so3.potentials.forces import energy_forces_stress
from ase_so3.training.data import GraphSet


def error_metrics(e_ref, e_pred, num_atoms, f_ref, f_pred, offset_free: bool = False) -> dict:
    """The one definition of the errors the package reports: energy MAE and RMSE (meV), energy
    MAE and RMSE per atom (meV/atom), force-component MAE and RMSE (meV/Å), from energies (eV, one per
    structure), atom counts and forces (eV/Å, any shape). ``offset_free`` adds the energy MAE
    after removing the mean error (a constant offset that forces do not constrain)."""
    e = (np.asarray(e_pred, dtype=float) - np.asarray(e_ref, dtype=float)) * 1e3
    f = (np.asarray(f_pred, dtype=float) - np.asarray(f_ref, dtype=float)).ravel() * 1e3
    out = {"energy_mae_meV": float(np.abs(e).mean()),
           "energy_rmse_meV": float(np.sqrt((e ** 2).mean())),
           "energy_mae_meV_per_atom": float(np.abs(e / np.asarray(num_atoms)).mean()),
           "energy_rmse_meV_per_atom": float(np.sqrt(((e / np.asarray(num_atoms)) ** 2).mean())),
           "forces_mae_meV_per_A": float(np.abs(f).mean()),
           "forces_rmse_meV_per_A": float(np.sqrt((f ** 2).mean()))}
    if offset_free:
        out["energy_mae_offset_free_meV"] = float(np.abs(e - e.mean()).mean())
    return out


def predictions(model, graph_set: GraphSet, batch_size: int, dtype, device):
    """The one evaluation loop: for each batch of ``graph_set`` in order, its positions in the
    set, the collated graph, the labels and ``model``'s energies and autograd forces."""
    for b in graph_set.batches(batch_size, shuffle=False):
        graph, target = graph_set.collate(b, dtype, device)
        with torch.enable_grad():
            pred = energy_forces_stress(model, graph, forces=True)
        yield b, graph, target, pred


def evaluate_graph_set(model, graph_set: GraphSet, batch_size: int, dtype, device,
                       per_structure: bool = False) -> dict:
    """Energy (meV, meV/atom) and force (meV/Å) MAE/RMSE of ``model`` on a graph set. With
    ``per_structure`` also per-structure rows and the raw ``parity`` arrays (per-atom energies and
    force components, reference and predicted, eV and eV/Å)."""
    e_ref, e_pred, f_ref, f_pred, counts, rows = [], [], [], [], [], []
    for b, graph, target, pred in predictions(model, graph_set, batch_size, dtype, device):
        e_ref.append(target[K.ENERGY].cpu().numpy())
        e_pred.append(pred[K.ENERGY].detach().cpu().numpy())
        f_ref.append(target[K.FORCES].cpu().numpy().reshape(-1))
        f_pred.append(pred[K.FORCES].detach().cpu().numpy().reshape(-1))
        counts.append(target["num_atoms"].cpu().numpy())
        if per_structure:
            ptr = graph[K.PTR].cpu().numpy()
            df = np.abs(f_pred[-1] - f_ref[-1]).reshape(-1, 3)
            for k, pos in enumerate(b):
                rows.append({"index": int(graph_set.indices[pos]), "num_atoms": int(counts[-1][k]),
                             "energy_ref_eV": float(e_ref[-1][k]),
                             "energy_pred_eV": float(e_pred[-1][k]),
                             "forces_mae_meV_per_A": float(df[ptr[k]:ptr[k + 1]].mean() * 1e3)})
    e_ref, e_pred, f_ref, f_pred, n = (np.concatenate(x) for x in (e_ref, e_pred, f_ref, f_pred, counts))
    out = error_metrics(e_ref, e_pred, n, f_ref, f_pred)
    if per_structure:
        out["per_structure"] = rows
        out["parity"] = {"energy_per_atom": (e_ref / n, e_pred / n), "forces": (f_ref, f_pred)}
    return out
