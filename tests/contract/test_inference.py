"""Batched evaluation and neighbour-list reuse give the same numbers as the plain path."""

import numpy as np
from ase import units
from ase.md.verlet import VelocityVerlet

from ase_so3 import SO3Calculator
from ase_so3.md import maxwell_boltzmann
from ase_so3.neighbors import VerletNeighborList, neighbor_list
from tests.conftest import make_model


def test_calculate_many_equals_one_by_one(ethanol, small_cell, slab):
    calc = SO3Calculator(make_model("escn"))
    images = [ethanol, small_cell, slab, ethanol.copy(), small_cell.copy()]
    images[3].rattle(0.05, seed=1)
    images[4].rattle(0.05, seed=2)
    many = calc.calculate_many(images, batch_size=2)
    for atoms, r in zip(images, many):
        a = atoms.copy()
        a.calc = SO3Calculator(make_model("escn"))
        assert abs(r["energy"] - a.get_potential_energy()) < 1e-10
        assert np.abs(r["forces"] - a.get_forces()).max() < 1e-10
        assert np.abs(r["energies"] - a.get_potential_energies()).max() < 1e-10
        if atoms.pbc.all():
            assert np.abs(r["stress"] - a.get_stress()).max() < 1e-10
        else:
            assert "stress" not in r


def test_verlet_list_equals_fresh_list(small_cell):
    rng = np.random.default_rng(0)
    nl = VerletNeighborList(cutoff=4.0, skin=0.6)
    atoms = small_cell.copy()
    for step in range(30):
        atoms.positions += rng.normal(scale=0.03, size=atoms.positions.shape)
        got = nl(atoms.positions, atoms.cell.array, atoms.pbc)
        ref = neighbor_list(atoms.positions, atoms.cell.array, atoms.pbc, 4.0)
        key = lambda r: sorted(zip(r[0].tolist(), r[1].tolist(), map(tuple, r[2].tolist())))
        assert key(got) == key(ref)
    assert 1 < nl.builds < 30  # reused most of the time, rebuilt when atoms moved


def test_neighbor_reuse_gives_same_forces_over_md(ethanol, small_cell):
    for atoms in (ethanol, small_cell):
        model = make_model("tfn", scale=10.0)
        reuse, fresh = atoms.copy(), atoms.copy()
        reuse.calc = SO3Calculator(model, skin=0.5)
        fresh.calc = SO3Calculator(model, skin=0.0)
        maxwell_boltzmann(reuse, 500, np.random.default_rng(0))
        fresh.set_momenta(reuse.get_momenta())
        d1 = VelocityVerlet(reuse, timestep=0.5 * units.fs)
        d2 = VelocityVerlet(fresh, timestep=0.5 * units.fs)
        for _ in range(40):
            d1.run(1)
            d2.run(1)
            assert np.abs(reuse.get_forces() - fresh.get_forces()).max() < 1e-10
        assert reuse.calc.neighbors.builds < 40 and fresh.calc.neighbors.builds == 41
