"""Bounded-memory evaluation of large structures: spatial chunks with halos.

A model with ``L`` message-passing layers gives atom i an energy that depends only on atoms within
``L`` neighbour-list hops. So the atoms are split into compact spatial chunks (recursive
bisection along the longest extent); for each chunk the atoms within ``L`` hops, including
periodic images, are gathered as explicit copies at their image positions (a cluster without
periodicity); the model runs on that cluster with edges only out of atoms less than ``L`` hops
away (their neighbourhoods are complete, which is all the chunk's energies need); the energies
of the chunk's own atoms are summed and differentiated. Forces on an atom add up the gradients of
all its copies; the stress is the symmetric virial ``sum_k r_k (x) dE/dr_k / V`` over the
explicit copies, which equals the strain derivative because every copy moves affinely with the
cell. The result equals one pass over the whole structure (tested to round-off); peak memory is
set by the largest chunk with its halo instead of the whole structure.
"""

from __future__ import annotations

from contextlib import nullcontext

import numpy as np
import torch

from ase_so3 import keys as K


def spatial_chunks(positions: np.ndarray, max_atoms: int) -> list[np.ndarray]:
    """Split atom indices into compact groups of at most ``max_atoms`` (recursive bisection)."""
    out = []
    stack = [np.arange(len(positions))]
    while stack:
        idx = stack.pop()
        if len(idx) <= max_atoms:
            out.append(idx)
            continue
        p = positions[idx]
        axis = int(np.argmax(p.max(0) - p.min(0)))
        order = idx[np.argsort(p[:, axis], kind="stable")]
        half = len(order) // 2
        stack += [order[half:], order[:half]]
    return out


class HaloBuilder:
    """The neighbour list as CSR by centre atom, and the L-hop clusters around chunks."""

    def __init__(self, n_atoms: int, centre, neigh, shifts, hops: int):
        order = np.argsort(centre, kind="stable")
        self.neigh = np.asarray(neigh)[order]
        self.shifts = np.asarray(shifts, dtype=np.int64)[order]
        self.ptr = np.zeros(n_atoms + 1, dtype=np.int64)
        np.cumsum(np.bincount(centre, minlength=n_atoms), out=self.ptr[1:])
        self.n, self.hops = n_atoms, hops
        span = int(np.abs(self.shifts).max()) if len(self.shifts) else 0
        self.m = hops * span + 1
        self.base = 2 * self.m + 1

    def _keys(self, atom: np.ndarray, shift: np.ndarray) -> np.ndarray:
        s = shift + self.m
        return atom + self.n * (s[:, 0] + self.base * (s[:, 1] + self.base * s[:, 2]))

    def _expand(self, atom: np.ndarray, shift: np.ndarray):
        """All neighbour entries of the nodes ``(atom, shift)``: (node index, neighbour atom,
        neighbour shift)."""
        counts = self.ptr[atom + 1] - self.ptr[atom]
        node = np.repeat(np.arange(len(atom)), counts)
        entry = np.repeat(self.ptr[atom] - np.cumsum(counts) + counts, counts) + np.arange(counts.sum())
        return node, self.neigh[entry], shift[node] + self.shifts[entry]

    def cluster(self, chunk: np.ndarray):
        """Nodes ``(atom, shift, hop)`` within ``hops`` of the chunk, and the cluster's edges
        ``(sender, receiver)`` as node indices (receivers less than ``hops`` away)."""
        atom = np.asarray(chunk, dtype=np.int64)
        shift = np.zeros((len(atom), 3), dtype=np.int64)
        hop = np.zeros(len(atom), dtype=np.int64)
        keys = self._keys(atom, shift)
        frontier = slice(0, len(atom))
        for h in range(1, self.hops + 1):
            _, na, ns = self._expand(atom[frontier], shift[frontier])
            nk = self._keys(na, ns)
            nk, first = np.unique(nk, return_index=True)
            new = ~np.isin(nk, keys)
            start = len(atom)
            atom = np.concatenate([atom, na[first[new]]])
            shift = np.concatenate([shift, ns[first[new]]])
            hop = np.concatenate([hop, np.full(int(new.sum()), h, dtype=np.int64)])
            keys = np.concatenate([keys, nk[new]])
            frontier = slice(start, len(atom))
        inner = np.nonzero(hop < self.hops)[0]
        node, na, ns = self._expand(atom[inner], shift[inner])
        order = np.argsort(keys)
        sender = order[np.searchsorted(keys, self._keys(na, ns), sorter=order)]
        return atom, shift, hop, sender, inner[node]


def energy_forces_stress_chunked(model, positions: np.ndarray, numbers: np.ndarray,
                                 cell: np.ndarray, pair_list: tuple, max_atoms: int,
                                 stress: bool, dtype: torch.dtype, device,
                                 uncertainty=None) -> dict:
    """Energy (eV), per-atom energies, forces (eV/Å) and, with ``stress``, the 3x3 stress
    (eV/Å^3) of one structure, evaluated chunk by chunk. ``pair_list`` is the full neighbour list
    ``(centre, neighbour, unit_shifts)`` of the structure (see :mod:`ase_so3.neighbors`). With an
    ``uncertainty`` calibration (:mod:`ase_so3.uncertainty`) also ``energy_std`` and
    ``forces_std``, from the features of each chunk's own atoms."""
    from ase_so3.uncertainty import readout_features
    centre, neigh, shifts = pair_list[:3]
    n = len(positions)
    builder = HaloBuilder(n, centre, neigh, shifts, model.receptive_hops)
    forces = np.zeros((n, 3))
    node_energy = np.zeros(n)
    virial = np.zeros((3, 3))
    energy = 0.0
    u = torch.zeros(n, dtype=torch.float64)
    t = dict(dtype=dtype, device=device)
    for chunk in spatial_chunks(positions, max_atoms):
        atom, shift, hop, sender, receiver = builder.cluster(chunk)
        pos = positions[atom] + shift @ cell
        pos = pos - pos[hop == 0].mean(0)
        x = torch.as_tensor(pos, **t).requires_grad_(True)
        graph = {K.POSITIONS: x,
                 K.NUMBERS: torch.as_tensor(numbers[atom], dtype=torch.long, device=device),
                 K.BATCH: torch.zeros(len(atom), dtype=torch.long, device=device),
                 K.EDGE_INDEX: torch.as_tensor(np.stack([sender, receiver]), dtype=torch.long,
                                               device=device),
                 K.UNIT_SHIFTS: torch.zeros((len(sender), 3), **t),
                 K.CELL: torch.zeros((1, 3, 3), **t),
                 K.PBC: torch.zeros((1, 3), dtype=torch.bool, device=device),
                 K.PTR: torch.as_tensor([0, len(atom)], dtype=torch.long, device=device)}
        own = torch.as_tensor(hop == 0, device=device)
        capture = readout_features(model) if uncertainty is not None else nullcontext({})
        with torch.enable_grad(), capture as holder:
            out = model(graph)[K.NODE_ENERGY]
            e_own = out[own]
            (grad,) = torch.autograd.grad(e_own.sum(), x)
        g = grad.detach().cpu().double().numpy()
        np.add.at(forces, atom, -g)
        node_energy[atom[hop == 0]] = e_own.detach().cpu().double().numpy()
        energy += float(e_own.detach().double().sum())
        if uncertainty is not None:
            u[atom[hop == 0]] = uncertainty.atom_u(holder["features"][own], graph[K.NUMBERS][own]).cpu()
        if stress:
            virial += pos.T @ g
    result = {"energy": energy, "energies": node_energy, "forces": forces}
    if stress:
        volume = abs(np.linalg.det(cell))
        result["stress"] = 0.5 * (virial + virial.T) / volume
    if uncertainty is not None:
        stds = uncertainty.stds(u, torch.zeros(n, dtype=torch.long), 1)
        result[K.ENERGY_STD] = float(stds[K.ENERGY_STD][0])
        result[K.FORCES_STD] = stds[K.FORCES_STD].numpy()
    return result
