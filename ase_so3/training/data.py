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
    """The structures of one split with their neighbour lists.

    ``preload=True`` reads every structure and builds its neighbour list once, up front (small
    data sets such as rMD17). ``preload=False`` keeps only the indices and reads each structure
    lazily from the HDF5 file when a batch is collated, e.g. inside DataLoader workers
    (:func:`batch_loader`), so large files never sit in memory.
    """

    def __init__(self, dataset: HDF5Dataset, indices, cutoff: float, preload: bool = True):
        self.indices = np.asarray(indices, dtype=np.int64)
        self.dataset, self.cutoff = dataset, cutoff
        self.has_stress = dataset.has_stress
        self._items = [self._load(k) for k in range(len(self.indices))] if preload else None

    def _load(self, k: int):
        s = self.dataset[int(self.indices[k])]
        c, n, sh, _ = neighbor_list(s.positions, s.cell, s.pbc, self.cutoff)
        return s, (s.positions, s.numbers, s.cell, s.pbc, c, n, sh)

    def item(self, k: int):
        return self._items[k] if self._items is not None else self._load(k)

    def iter_items(self):
        """Every (structure, arrays) pair in order, read one at a time if not preloaded."""
        return (self.item(k) for k in range(len(self)))

    def __len__(self) -> int:
        return len(self.indices)

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
        loaded = [self.item(k) for k in positions]
        graph = collate_arrays([arrays for _, arrays in loaded], dtype=dtype, device=device)
        structs = [s for s, _ in loaded]
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


class _Batches(torch.utils.data.Dataset):
    def __init__(self, graph_set: GraphSet, batches: list[list[int]], dtype):
        self.graph_set, self.batches, self.dtype = graph_set, batches, dtype

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, b: int):
        return self.graph_set.collate(self.batches[b], self.dtype, "cpu")


def batch_loader(graph_set: GraphSet, batches: list[list[int]], dtype, num_workers: int):
    """Collated CPU batches in the given order; ``num_workers > 0`` builds them (reading HDF5 and
    neighbour lists) in DataLoader worker processes, ahead of the training step."""
    if num_workers <= 0:
        return (graph_set.collate(b, dtype, "cpu") for b in batches)
    return torch.utils.data.DataLoader(_Batches(graph_set, batches, dtype), batch_size=None,
                                       shuffle=False, num_workers=num_workers,
                                       collate_fn=_identity, prefetch_factor=4)


def _identity(x):
    return x


def fit_atomic_energies(graph_set: GraphSet, species: tuple[int, ...]) -> np.ndarray:
    """Per-element reference energies by least squares ``E_s ~ sum_Z n_sZ e_Z`` (minimum-norm
    solution when compositions do not vary, as in single-molecule data sets)."""
    index = {z: k for k, z in enumerate(species)}
    counts = np.zeros((len(graph_set), len(species)))
    energies = np.zeros(len(graph_set))
    for row, (s, _) in enumerate(graph_set.iter_items()):
        for z in s.numbers:
            counts[row, index[int(z)]] += 1
        energies[row] = s.energy
    sol, *_ = np.linalg.lstsq(counts, energies, rcond=None)
    return sol


def dataset_statistics(graph_set: GraphSet, atomic_energies: np.ndarray,
                       species: tuple[int, ...]) -> dict[str, float]:
    """Average number of neighbours, RMS force component, and per-atom residual energy spread."""
    index = {z: k for k, z in enumerate(species)}
    n_edges = n_atoms = 0
    sq_forces = n_force = 0.0
    residual = []
    for s, arrays in graph_set.iter_items():
        n_edges += len(arrays[4])
        n_atoms += len(s.numbers)
        sq_forces += float((s.forces ** 2).sum())
        n_force += s.forces.size
        residual.append((s.energy - sum(atomic_energies[index[int(z)]] for z in s.numbers))
                        / len(s.numbers))
    residual = np.asarray(residual)
    return {"avg_num_neighbors": n_edges / max(n_atoms, 1),
            "force_rms": float(np.sqrt(sq_forces / n_force)) if n_force else 1.0,
            "energy_per_atom_std": float(residual.std()), "num_structures": len(graph_set),
            "num_atoms": n_atoms}


def species_in(dataset: HDF5Dataset) -> tuple[int, ...]:
    return tuple(sorted(set(int(z) for z in np.unique(dataset.all_numbers()))))
