"""The graph layer: neighbour lists, the edge convention, batching."""

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk, molecule
from ase.neighborlist import neighbor_list as ase_neighbor_list

from ase_so3 import keys as K
from ase_so3.graph import atoms_to_graph, edge_vectors
from ase_so3.neighbors import neighbor_list


def _structures():
    mol = molecule("CH3CH2OH")
    tiny = Atoms("H", positions=[[0, 0, 0]], cell=[1.5, 1.5, 1.5], pbc=True)
    skew = Atoms("H2", positions=[[0, 0, 0], [1.1, 0.3, 0.2]],
                 cell=[[2, 0, 0], [1.7, 1.2, 0], [0.5, 0.4, 1.5]], pbc=True)
    chain = mol.copy()
    chain.cell = [[2.5, 0, 0], [0, 0, 0], [0, 0, 0]]
    chain.pbc = [True, False, False]
    slab = bulk("Cu", "fcc", a=3.6, cubic=True)
    slab.pbc = [True, True, False]
    far = bulk("Cu", "fcc", a=3.6) * (2, 2, 2)
    far.positions += 1000.0  # far outside the cell
    far.rattle(0.05, seed=3)
    return {"molecule": mol, "tiny cell": tiny, "skewed cell": skew, "wire": chain,
            "slab": slab, "outside cell": far}


@pytest.mark.parametrize("name", list(_structures()))
def test_neighbor_list_matches_ase(name):
    atoms = _structures()[name]
    cutoff = 3.5
    i, j, s, d = neighbor_list(atoms.positions, atoms.cell.array, atoms.pbc, cutoff)
    ai, aj, a_s = ase_neighbor_list("ijS", atoms, cutoff)
    ours = sorted(zip(i.tolist(), j.tolist(), map(tuple, s.tolist())))
    ref = sorted(zip(ai.tolist(), aj.tolist(), map(tuple, a_s.tolist())))
    assert ours == ref and len(ours) > 0
    vec = atoms.positions[j] - atoms.positions[i] + s @ atoms.cell.array
    assert np.allclose(np.linalg.norm(vec, axis=1), d)


def test_edge_convention_centre_is_row_one():
    # atom 0 at the origin, atom 1 at +x: the edge centred on 0 points to +x
    atoms = Atoms("H2", positions=[[0, 0, 0], [1.0, 0, 0]])
    g = atoms_to_graph(atoms, cutoff=2.0)
    vec = edge_vectors(g)
    for (src, dst), v in zip(g[K.EDGE_INDEX].T.tolist(), vec):
        assert (src, dst) in [(1, 0), (0, 1)]
        expected = atoms.positions[src] - atoms.positions[dst]  # neighbour minus centre
        assert torch.allclose(v, torch.as_tensor(expected, dtype=v.dtype))
    assert K.SENDER == 0 and K.RECEIVER == 1


def test_batch_offsets_and_shapes():
    structures = [molecule("H2O"), bulk("Cu", "fcc", a=3.6), molecule("CH4")]
    for a in structures:
        a.numbers[:] = 1
    g = atoms_to_graph(structures, cutoff=3.0)
    assert g[K.PTR].tolist() == [0, 3, 4, 9]
    assert g[K.BATCH].tolist() == [0, 0, 0, 1, 2, 2, 2, 2, 2]
    src, dst = g[K.EDGE_INDEX]
    assert torch.equal(g[K.BATCH][src], g[K.BATCH][dst])  # no edges across structures
    assert g[K.CELL].shape == (3, 3, 3) and g[K.PBC].shape == (3, 3)
    assert (torch.linalg.vector_norm(edge_vectors(g), dim=1) < 3.0).all()
    # the periodic single atom sees its own images
    own = (src == 3) & (dst == 3)
    assert own.sum() == 12


def test_dtype_and_device_follow_request():
    g = atoms_to_graph(molecule("H2O"), cutoff=3.0, dtype=torch.float32)
    assert g[K.POSITIONS].dtype == torch.float32 and g[K.UNIT_SHIFTS].dtype == torch.float32
    assert g[K.NUMBERS].dtype == torch.long and g[K.EDGE_INDEX].dtype == torch.long
