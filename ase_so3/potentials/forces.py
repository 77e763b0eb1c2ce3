"""Forces and stress: the one place where the energy is differentiated.

Forces are ``-dE/dr``. Stress is ``(1/V) dE/d(strain)`` (ASE's sign convention), with a symmetric
strain applied to positions *and* cell so that every periodic image moves with the cell. Both come
from one backward pass; nothing here depends on which model produced the energy.
"""

from __future__ import annotations

import torch

from ase_so3 import keys as K


def energy_forces_stress(model, graph: dict, forces: bool = True, stress: bool = False,
                         training: bool = False) -> dict[str, torch.Tensor]:
    """Run ``model`` on ``graph`` and return energy, per-atom energies, forces and stress.

    ``training=True`` keeps the graph of the derivatives so a loss on forces can be
    back-propagated to the weights.
    """
    graph = dict(graph)
    inputs = []
    pos = graph[K.POSITIONS]
    if forces or stress:
        pos = pos.detach().requires_grad_(True)
        inputs.append(pos)
    if stress:
        n_graphs = graph[K.CELL].shape[0]
        strain = torch.zeros((n_graphs, 3, 3), dtype=pos.dtype, device=pos.device,
                             requires_grad=True)
        inputs.append(strain)
        sym = 0.5 * (strain + strain.transpose(1, 2))
        eye = torch.eye(3, dtype=pos.dtype, device=pos.device)
        deform = eye + sym  # [G, 3, 3]
        pos = torch.einsum("ni,nij->nj", pos, deform[graph[K.BATCH]])
        graph[K.CELL] = graph[K.CELL] @ deform
    graph[K.POSITIONS] = pos
    out = model(graph)
    result = {K.ENERGY: out[K.ENERGY], K.NODE_ENERGY: out[K.NODE_ENERGY]}
    if not inputs:
        return result
    grads = torch.autograd.grad(out[K.ENERGY].sum(), inputs, create_graph=training,
                                allow_unused=True)
    if forces:
        g = grads[0]
        result[K.FORCES] = -g if g is not None else torch.zeros_like(pos)
    if stress:
        g = grads[-1]
        if g is None:
            g = torch.zeros_like(strain)
        volume = torch.linalg.det(graph[K.CELL]).abs()  # strained cell = cell at zero strain
        volume = torch.where(volume > 0, volume, torch.ones_like(volume))  # molecules in a batch
        result[K.VIRIAL] = -g
        result[K.STRESS] = g / volume[:, None, None]
    return result


def split_by_structure(out: dict[str, torch.Tensor], graph: dict) -> list[dict]:
    """Batched results -> one dict of float64 numpy values per structure: ``energy`` (float),
    ``energies`` (per atom), ``forces`` and, when computed, ``stress`` (3x3), ``energy_std``
    (float) and ``forces_std`` (per atom)."""
    ptr = graph[K.PTR].tolist()
    energy = out[K.ENERGY].detach().cpu().double().numpy()
    node = out[K.NODE_ENERGY].detach().cpu().double().numpy()
    forces = out[K.FORCES].detach().cpu().double().numpy() if K.FORCES in out else None
    stress = out[K.STRESS].detach().cpu().double().numpy() if K.STRESS in out else None
    e_std = out[K.ENERGY_STD].detach().cpu().double().numpy() if K.ENERGY_STD in out else None
    f_std = out[K.FORCES_STD].detach().cpu().double().numpy() if K.FORCES_STD in out else None
    results = []
    for g in range(len(ptr) - 1):
        r = {"energy": float(energy[g]), "energies": node[ptr[g]:ptr[g + 1]]}
        if forces is not None:
            r["forces"] = forces[ptr[g]:ptr[g + 1]]
        if stress is not None:
            r["stress"] = stress[g]
        if e_std is not None:
            r[K.ENERGY_STD] = float(e_std[g])
            r[K.FORCES_STD] = f_std[ptr[g]:ptr[g + 1]]
        results.append(r)
    return results
