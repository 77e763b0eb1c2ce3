"""What a training run writes into its potential file besides the weights: the reference
structures that ``ase-so3 check`` runs on, and the per-atom energy shift refitted on the
training set."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ase_so3 import keys as K


def reference_structures(train_set, count: int = 2) -> list[dict]:
    """The first ``count`` training structures as plain lists (numbers, positions, cell, pbc):
    what ``ase-so3 check`` runs its dynamics on, inside the training distribution."""
    ds = train_set.dataset
    out = []
    for i in train_set.indices[:count]:
        s = ds[int(i)]
        out.append({"numbers": s.numbers.tolist(), "positions": s.positions.tolist(),
                    "cell": np.asarray(s.cell).tolist(), "pbc": np.asarray(s.pbc).tolist()})
    ds.close()
    return out


def refit_energy_shift(path: Path, train_set, batch_size: int, dtype, device) -> float:
    """Forces do not constrain a constant energy offset, and a force-weighted loss barely does:
    fit the per-atom shift of the potential file ``path`` to the training energies by least
    squares (mean of (E_ref - E_pred) / N) and save it again. Returns the change in eV/atom."""
    from ase_so3.loading import load_potential
    model = load_potential(path).to(device=device, dtype=dtype)
    residual = []
    for b in train_set.batches(batch_size, shuffle=False):
        graph, target = train_set.collate(b, dtype, device)
        with torch.no_grad():
            energy = model(graph)[K.ENERGY]
        residual.append(((target[K.ENERGY] - energy) / target["num_atoms"]).cpu())
    delta = float(torch.cat(residual).mean())
    model.shift += delta
    meta = dict(model.metadata)
    meta["energy_shift_refit_eV_per_atom"] = meta.get("energy_shift_refit_eV_per_atom", 0.0) + delta
    model.save(path, metadata=meta)
    return delta
