"""From an HDF5 data set to batches: neighbour lists precomputed once per structure (off the
critical path), deterministic per-epoch order, and the same batch dict as inference."""

from __future__ import annotations

import numpy as np
import torch

from ase_so3 import keys as K
from ase_so3.graph import collate_arrays
from ase_so3.neighbors import neighbor_list
from ase_so3.training.hdf5 import HDF5Dataset


class GraphSet:
    """The structures of one split with neighbour lists, held in memory as numpy arrays."""

    def __init__(self, dataset: HDF5Dataset, indices, cutoff: float):
        self.indices = np.asarray(indices, dtype=np.int64)
        self.items = []
        for i in self.indices:
            s = dataset[int(i)]
            c, n, sh, _ = neighbor_list(s.positions, s.cell, s.pbc, cutoff)
            self.items.append((s, (s.positions, s.numbers, s.cell, s.pbc, c, n, sh)))
        self.has_stress = dataset.has_stress

    def __len__(self) -> int:
        return len(self.items)

    def batches(self, batch_size: int, shuffle: bool, seed: int = 0, epoch: int = 0,
                rank: int = 0, world_size: int = 1) -> list[list[int]]:
        """Batches of positions into this set; the order depends only on (seed, epoch). With
        ``world_size > 1`` each batch is split into equal contiguous shards, one per rank."""
        order = np.arange(len(self))
        if shuffle:
            order = np.random.default_rng([seed, epoch]).permutation(len(self))
        out = []
        for start in range(0, len(order), batch_size):
            b = order[start:start + batch_size]
            if world_size > 1:
                b = np.array_split(b, world_size)[rank]
            if len(b):
                out.append(b.tolist())
        return out

    def collate(self, positions: list[int], dtype: torch.dtype, device) -> tuple[dict, dict]:
        graph = collate_arrays([self.items[k][1] for k in positions], dtype=dtype, device=device)
        structs = [self.items[k][0] for k in positions]
        t = dict(dtype=dtype, device=device)
        targets = {
            K.ENERGY: torch.tensor([s.energy for s in structs], **t),
            K.FORCES: torch.as_tensor(np.concatenate([s.forces for s in structs]), **t),
            "weight": torch.tensor([s.weight for s in structs], **t),
            "num_atoms": torch.tensor([len(s.numbers) for s in structs], **t),
        }
        if self.has_stress:
            targets[K.STRESS] = torch.as_tensor(np.stack([s.stress for s in structs]), **t)
        return graph, targets


def fit_atomic_energies(graph_set: GraphSet, species: tuple[int, ...]) -> np.ndarray:
    """Per-element reference energies by least squares ``E_s ~ sum_Z n_sZ e_Z`` (minimum-norm
    solution when compositions do not vary, as in single-molecule data sets)."""
    index = {z: k for k, z in enumerate(species)}
    counts = np.zeros((len(graph_set), len(species)))
    energies = np.zeros(len(graph_set))
    for row, (s, _) in enumerate(graph_set.items):
        for z in s.numbers:
            counts[row, index[int(z)]] += 1
        energies[row] = s.energy
    sol, *_ = np.linalg.lstsq(counts, energies, rcond=None)
    return sol


def dataset_statistics(graph_set: GraphSet, atomic_energies: np.ndarray,
                       species: tuple[int, ...]) -> dict[str, float]:
    """Average number of neighbours, RMS force component, and per-atom residual energy spread."""
    index = {z: k for k, z in enumerate(species)}
    n_edges = sum(len(arrays[4]) for _, arrays in graph_set.items)
    n_atoms = sum(len(s.numbers) for s, _ in graph_set.items)
    forces = np.concatenate([s.forces.reshape(-1) for s, _ in graph_set.items])
    residual = np.array([(s.energy - sum(atomic_energies[index[int(z)]] for z in s.numbers))
                         / len(s.numbers) for s, _ in graph_set.items])
    return {"avg_num_neighbors": n_edges / max(n_atoms, 1),
            "force_rms": float(np.sqrt(np.mean(forces ** 2))) if len(forces) else 1.0,
            "energy_per_atom_std": float(residual.std()), "num_structures": len(graph_set),
            "num_atoms": n_atoms}


def species_in(dataset: HDF5Dataset) -> tuple[int, ...]:
    return tuple(sorted(set(int(z) for z in np.unique(dataset.all_numbers()))))
