"""CUDA graphs (ase_so3.cuda_graphs): the padding that gives a replay fixed shapes leaves every
result unchanged (checked on CPU, every model), and replays equal eager CUDA over an MD run where
the edge count changes (CUDA only)."""

import numpy as np
import pytest
import torch
from ase import units
from ase.md.velocitydistribution import MaxwellBoltzmannDistribution
from ase.md.verlet import VelocityVerlet

from ase_so3 import keys as K
from ase_so3.calculator import SO3Calculator
from ase_so3.cuda_graphs import pad_graph, unpad_results
from ase_so3.graph import atoms_to_graph
from ase_so3.potentials.forces import energy_forces_stress
from tests.conftest import make_model

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def test_padding_leaves_results_unchanged(model_spec, chiral, small_cell, slab):
    model = make_model(model_spec)
    for structures, stress in (([chiral], False), ([small_cell], True), ([slab, chiral], False)):
        graph = atoms_to_graph(structures, model.cutoff)
        e = graph[K.EDGE_INDEX].shape[1]
        ref = energy_forces_stress(model, graph, forces=True, stress=stress)
        padded = pad_graph(graph, e + 37, dummy_number=model.species[-1])
        assert padded[K.EDGE_INDEX].shape[1] == e + 37
        out = energy_forces_stress(model, padded, forces=True, stress=stress)
        assert abs(float(out[K.ENERGY][-1].detach())) > 0  # the dummy structure really has an energy
        got = unpad_results(out, graph[K.POSITIONS].shape[0], len(structures))
        assert got.keys() == ref.keys()
        for key in ref:
            torch.testing.assert_close(got[key], ref[key], atol=1e-12, rtol=0)


def test_padding_rejects_too_many_edges(chiral):
    graph = atoms_to_graph(chiral, 4.0)
    with pytest.raises(ValueError, match="do not fit"):
        pad_graph(graph, graph[K.EDGE_INDEX].shape[1] - 1, dummy_number=1)


def test_cuda_graphs_need_a_cuda_device_and_no_compile():
    with pytest.raises(ValueError, match="needs a CUDA device"):
        SO3Calculator(make_model("tfn"), device="cpu", cuda_graphs=True)
    if torch.cuda.is_available():
        with pytest.raises(ValueError, match="not both"):
            SO3Calculator(make_model("tfn"), device="cuda", cuda_graphs=True, compile=True)


@cuda
@pytest.mark.parametrize("spec", ["escn", "tfn", "se3_transformer-r"])
def test_cuda_graph_replay_equals_eager_over_md(spec, ethanol, small_cell):
    model = make_model(spec)
    eager = SO3Calculator(model, device="cuda")
    graphed = SO3Calculator(model, device="cuda", cuda_graphs=True)
    for atoms in (ethanol, small_cell):
        atoms = atoms.copy()
        MaxwellBoltzmannDistribution(atoms, temperature_K=3000, rng=np.random.default_rng(1))
        atoms.calc = graphed
        dyn = VelocityVerlet(atoms, timestep=1.0 * units.fs)
        edges = set()
        for _ in range(12):
            dyn.run(1)
            ref = atoms.copy()
            ref.calc = eager
            assert abs(atoms.get_potential_energy() - ref.get_potential_energy()) < 1e-9
            np.testing.assert_allclose(atoms.get_forces(), ref.get_forces(), atol=1e-9, rtol=0)
            if atoms.pbc.all():
                np.testing.assert_allclose(atoms.get_stress(), ref.get_stress(), atol=1e-9,
                                           rtol=0)
            edges.add(int(atoms_to_graph(atoms, model.cutoff)[K.EDGE_INDEX].shape[1]))
        assert len(edges) > 1  # the replays saw changing edge counts (70-72, 128-132 on CPU)
    assert graphed.graph_step.num_captures == 2  # one per structure: the headroom sufficed


@cuda
def test_cuda_graph_recaptures_when_edges_outgrow_capacity(small_cell):
    model = make_model("escn")
    calc = SO3Calculator(model, device="cuda", cuda_graphs=True)
    small, big = small_cell.copy(), small_cell.copy()
    big.set_cell(small_cell.cell * 0.8, scale_atoms=True)  # denser: more edges, same atoms
    for atoms in (small, big, small):
        ref = atoms.copy()
        ref.calc = SO3Calculator(model, device="cuda")
        atoms.calc = calc
        atoms.calc.reset()
        np.testing.assert_allclose(atoms.get_forces(), ref.get_forces(), atol=1e-9, rtol=0)
    assert calc.graph_step.num_captures == 2  # the larger capacity serves the smaller again
