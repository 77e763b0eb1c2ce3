"""Chunked (bounded-memory) evaluation equals one pass over the whole structure."""

import numpy as np
import pytest

from ase_so3.benchmark.systems import molecular_box
from ase_so3.calculator import SO3Calculator
from ase_so3.potentials.chunked import HaloBuilder, spatial_chunks
from ase_so3.neighbors import neighbor_list
from tests.conftest import make_model


def _results(model, atoms, chunk):
    atoms = atoms.copy()
    atoms.calc = SO3Calculator(model, max_atoms_per_chunk=chunk)
    out = {"energy": atoms.get_potential_energy(), "forces": atoms.get_forces(),
           "energies": atoms.get_potential_energies()}
    if atoms.pbc.all():
        out["stress"] = atoms.get_stress()
    return out


@pytest.mark.parametrize("structure", ["box", "small_cell", "slab", "molecule"])
def test_chunked_equals_one_pass(model_spec, structure, small_cell, slab, chiral):
    atoms = {"box": molecular_box("ethanol", 2), "small_cell": small_cell, "slab": slab,
             "molecule": chiral}[structure]
    model = make_model(model_spec, num_layers=2)
    ref = _results(model, atoms, None)
    got = _results(model, atoms, 7 if structure == "box" else 1)
    assert set(got) == set(ref)
    scale = max(1.0, abs(ref["energy"]))
    assert abs(got["energy"] - ref["energy"]) < 1e-10 * scale
    for key in got:
        if key != "energy":
            np.testing.assert_allclose(got[key], ref[key], atol=1e-10, rtol=0, err_msg=key)


def test_spatial_chunks_partition_the_atoms_compactly():
    atoms = molecular_box("ethanol", 3)
    chunks = spatial_chunks(atoms.positions, 50)
    assert all(len(c) <= 50 for c in chunks)
    assert np.array_equal(np.sort(np.concatenate(chunks)), np.arange(len(atoms)))
    extent = [np.ptp(atoms.positions[c], axis=0).max() for c in chunks]
    assert max(extent) < 0.75 * atoms.cell.lengths().max()


def test_halo_holds_every_atom_within_the_hops(small_cell):
    atoms = small_cell.repeat((2, 1, 1))
    i, j, s, _ = neighbor_list(atoms.positions, atoms.cell.array, atoms.pbc, 4.0)
    builder = HaloBuilder(len(atoms), i, j, s, hops=2)
    atom, shift, hop, sender, receiver = builder.cluster(np.array([0]))
    assert hop[0] == 0 and set(hop.tolist()) == {0, 1, 2}
    # periodic images of one atom are distinct nodes at their image positions
    assert len(atom) > len(atoms)
    keys = {(int(a), *map(int, sh)) for a, sh in zip(atom, shift)}
    assert len(keys) == len(atom)
    # every receiver (hop < 2) has its full neighbour list in the cluster
    for node in np.nonzero(hop < 2)[0]:
        assert np.sum(receiver == node) == np.sum(i == atom[node])
    pos = atoms.positions[atom] + shift @ atoms.cell.array
    d = np.linalg.norm(pos[sender] - pos[receiver], axis=1)
    assert d.max() < 4.0 and d.min() > 0
