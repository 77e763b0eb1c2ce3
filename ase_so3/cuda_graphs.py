"""CUDA graphs for small structures: the whole energy + forces (+ stress) step, model forward and
autograd backward, captured once and replayed, so that a step costs one graph launch instead of
hundreds of kernel launches (for a molecule of tens of atoms the GPU time of a step is far
shorter than the time to launch its kernels one by one from Python).

A replayed graph needs fixed shapes. The edge list is padded to a *capacity* with edges of a dummy
two-atom structure appended to the batch (:func:`pad_graph`); messages along those edges reach only
the dummy atoms, whose energy, forces and stress are dropped, so the real structure's results are
unchanged (tested on CPU against the unpadded batch, and on CUDA replay against eager). One capture
then serves every step while the number of edges stays within the capacity; a larger count, or a
different number of atoms or structures, or stress on/off, captures again (the capture is a few
eager steps' time).

Used through ``SO3Calculator(..., device="cuda", cuda_graphs=True)``.
"""

from __future__ import annotations

import math
from collections import OrderedDict

import torch

from ase_so3 import keys as K
from ase_so3.errors import ConfigError
from ase_so3.potentials.forces import energy_forces_stress

DUMMY_BOND = (0.0, 0.6, 0.8)  # Å: the dummy atoms' separation, well inside any cutoff


def pad_graph(graph: dict, capacity: int, dummy_number: int) -> dict:
    """``graph`` (``N`` atoms, ``E <= capacity`` edges, ``G`` structures) plus one structure of
    two atoms of element ``dummy_number``, joined by ``capacity - E`` copies of one edge: ``N + 2``
    atoms, ``capacity`` edges, ``G + 1`` structures. Results of the first ``G`` structures equal
    those of ``graph``."""
    pos, edges = graph[K.POSITIONS], graph[K.EDGE_INDEX]
    n, e, g = pos.shape[0], edges.shape[1], graph[K.CELL].shape[0]
    if e > capacity:
        raise ValueError(f"{e} edges do not fit a capacity of {capacity}")
    f = dict(dtype=pos.dtype, device=pos.device)
    i = dict(dtype=torch.long, device=pos.device)
    dummy_pos = torch.tensor([(0.0, 0.0, 0.0), DUMMY_BOND], **f)
    pad = torch.tensor([[n + 1], [n]], **i).expand(2, capacity - e)
    return {
        K.POSITIONS: torch.cat([pos, dummy_pos]),
        K.NUMBERS: torch.cat([graph[K.NUMBERS], torch.full((2,), dummy_number, **i)]),
        K.BATCH: torch.cat([graph[K.BATCH], torch.full((2,), g, **i)]),
        K.EDGE_INDEX: torch.cat([edges, pad], dim=1),
        K.UNIT_SHIFTS: torch.cat([graph[K.UNIT_SHIFTS], torch.zeros((capacity - e, 3), **f)]),
        K.CELL: torch.cat([graph[K.CELL], torch.zeros((1, 3, 3), **f)]),
        K.PBC: torch.cat([graph[K.PBC], torch.zeros((1, 3), dtype=torch.bool,
                                                    device=pos.device)]),
        K.PTR: torch.cat([graph[K.PTR], graph[K.PTR][-1:] + 2]),
    }


def unpad_results(out: dict, n_atoms: int, n_graphs: int) -> dict:
    """The first ``n_atoms`` atoms' and ``n_graphs`` structures' rows of a padded batch's results
    (copies: a replay overwrites the captured outputs)."""
    per_atom = {K.NODE_ENERGY, K.FORCES}
    return {k: v[:n_atoms if k in per_atom else n_graphs].clone() for k, v in out.items()}


class _Capture:
    """One captured step: static input tensors, the graph, and its output tensors."""

    def __init__(self, potential, graph: dict, capacity: int, stress: bool):
        self.capacity = capacity
        self.static = pad_graph(graph, capacity, potential.species[0])
        device = self.static[K.POSITIONS].device
        side = torch.cuda.Stream(device)  # warm-up off the default stream, as capture requires
        side.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(side):
            for _ in range(2):
                energy_forces_stress(potential, self.static, forces=True, stress=stress)
        torch.cuda.current_stream(device).wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.out = energy_forces_stress(potential, self.static, forces=True, stress=stress)

    def run(self, graph: dict) -> dict:
        n, e, g = (graph[K.POSITIONS].shape[0], graph[K.EDGE_INDEX].shape[1],
                   graph[K.CELL].shape[0])
        s = self.static
        for key in (K.POSITIONS, K.NUMBERS, K.BATCH):
            s[key][:n].copy_(graph[key])
        for key in (K.CELL, K.PBC):
            s[key][:g].copy_(graph[key])
        s[K.PTR][:g + 1].copy_(graph[K.PTR])  # the dummy structure's end stays n + 2
        s[K.EDGE_INDEX][:, :e].copy_(graph[K.EDGE_INDEX])
        s[K.EDGE_INDEX][0, e:] = n + 1  # the rest: dummy edges again (the last step may have
        s[K.EDGE_INDEX][1, e:] = n      # had more real ones)
        s[K.UNIT_SHIFTS][:e].copy_(graph[K.UNIT_SHIFTS])
        s[K.UNIT_SHIFTS][e:] = 0.0
        self.graph.replay()
        return unpad_results(self.out, n, g)


class CUDAGraphStep:
    """``energy_forces_stress(potential, graph, forces=True, stress=...)`` through captured CUDA
    graphs, one per (atoms, structures, stress) kept, ``max_captures`` at most.

    A new capture gets ``headroom`` times the current edge count (rounded up to
    ``granularity``), so the fluctuating edge count of an MD run rarely outgrows it.
    """

    def __init__(self, potential, headroom: float = 1.15, granularity: int = 64,
                 max_captures: int = 4):
        if headroom < 1.0 or granularity < 1 or max_captures < 1:
            raise ConfigError("headroom must be >= 1, granularity and max_captures >= 1")
        self.potential = potential
        self.headroom, self.granularity, self.max_captures = headroom, granularity, max_captures
        self.captures: OrderedDict[tuple, _Capture] = OrderedDict()
        self.num_captures = 0  # how many captures were made (new shapes, outgrown capacities)

    def __call__(self, graph: dict, stress: bool = False) -> dict:
        if graph[K.POSITIONS].device.type != "cuda":
            raise ValueError("CUDA graphs need the batch on a CUDA device")
        key = (graph[K.POSITIONS].shape[0], graph[K.CELL].shape[0], bool(stress))
        edges = graph[K.EDGE_INDEX].shape[1]
        capture = self.captures.get(key)
        if capture is None or capture.capacity < edges:
            self.captures.pop(key, None)  # free the outgrown one before capturing a larger one
            capacity = self.granularity * math.ceil(max(1, edges) * self.headroom
                                                    / self.granularity)
            capture = _Capture(self.potential, graph, capacity, stress)
            self.num_captures += 1
            self.captures[key] = capture
            while len(self.captures) > self.max_captures:
                self.captures.popitem(last=False)
        self.captures.move_to_end(key)
        return capture.run(graph)
