"""The fused CPU kernels (``ASE_SO3_KERNELS=cpp``) against the torch-native path they replace.

The first test in a fresh environment compiles the extension (g++ and ninja, about 40 s).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase import Atoms

from ase_so3 import checks
from ase_so3.so3 import cpu_kernels, so2
from ase_so3.so3.edge_frame import EdgeWignerD
from tests.conftest import make_model


@pytest.fixture
def cpp():
    """The cpp backend for one test (built here on first use), then the default again."""
    before = cpu_kernels.get_backend()
    cpu_kernels.set_backend("cpp")
    yield
    cpu_kernels.set_backend(before)


def _vectors(n: int, seed: int, dtype=torch.float64) -> torch.Tensor:
    """Random edges plus edges exactly on every axis (both charts of the edge frame)."""
    gen = torch.Generator().manual_seed(seed)
    axes = torch.cat([torch.eye(3), -torch.eye(3)]).to(dtype)
    return torch.cat([axes, torch.randn(n, 3, generator=gen, dtype=dtype)])


def _native(fn, *args):
    cpu_kernels.set_backend("torch")
    try:
        return fn(*args)
    finally:
        cpu_kernels.set_backend("cpp")


@pytest.mark.parametrize("lmax,mmax,channels", [(1, 1, 3), (2, 1, 8), (3, 3, 5), (4, 2, 16),
                                                (6, 6, 16), (5, 3, 32)])
def test_rotations_equal_torch_path(cpp, lmax, mmax, channels):
    vec = _vectors(40, lmax)
    wigner = EdgeWignerD(lmax).to(torch.float64)
    flat = wigner.flat(vec)
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(vec.shape[0], (lmax + 1) ** 2, channels, generator=gen, dtype=torch.float64)
    fused = so2.edge_frame(wigner.split(flat), lmax, mmax, flat=flat)
    plain = _native(so2.edge_frame, wigner.split(flat), lmax, mmax, flat)
    assert fused.flat is not None and plain.flat is None
    ours, ref = so2.rotate_to_edge_frame(x, fused), so2.rotate_to_edge_frame(x, plain)
    assert [tuple(b.shape) for b in ours] == [tuple(b.shape) for b in ref]
    for a, b in zip(ours, ref):
        assert torch.allclose(a, b, atol=1e-13, rtol=0)
    y = [torch.randn(b.shape, generator=gen, dtype=torch.float64) for b in ref]
    back, back_ref = so2.rotate_from_edge_frame(y, fused), so2.rotate_from_edge_frame(y, plain)
    assert torch.allclose(back, back_ref, atol=1e-13, rtol=0)


@pytest.mark.parametrize("lmax,mmax,channels", [(2, 2, 3), (3, 1, 8), (4, 4, 16)])
def test_rotation_gradients_of_every_order(cpp, lmax, mmax, channels):
    """First and second derivatives (a force loss's parameter gradients need both) against
    finite differences, with respect to the Wigner blocks and the features."""
    e = 3
    gen = torch.Generator().manual_seed(lmax)
    d = torch.randn(e, sum((2 * l + 1) ** 2 for l in range(1, lmax + 1)), generator=gen,
                    dtype=torch.float64, requires_grad=True)
    x = torch.randn(e, (lmax + 1) ** 2, channels, generator=gen, dtype=torch.float64,
                    requires_grad=True)
    sizes = so2.block_sizes(lmax, mmax)
    y = [torch.randn(e, n, channels, generator=gen, dtype=torch.float64, requires_grad=True)
         for n in sizes]
    rot_in = lambda d_, x_: cpu_kernels.rotate_in(d_, x_, lmax, mmax)  # noqa: E731
    rot_out = lambda d_, *y_: cpu_kernels.rotate_out(d_, list(y_), lmax, mmax)  # noqa: E731
    assert torch.autograd.gradcheck(rot_in, (d, x))
    assert torch.autograd.gradgradcheck(rot_in, (d, x), fast_mode=lmax > 3)
    assert torch.autograd.gradcheck(rot_out, (d, *y))
    assert torch.autograd.gradgradcheck(rot_out, (d, *y), fast_mode=lmax > 3)


@pytest.mark.parametrize("lmax", [1, 3, 6])
def test_wigner_blocks_and_gradients_equal_torch_path(cpp, lmax):
    wigner = EdgeWignerD(lmax).to(torch.float64)
    vec = _vectors(60, 10 + lmax).requires_grad_(True)
    ours = wigner.flat(vec)
    ref = _native(wigner.flat, vec)
    assert torch.allclose(ours, ref, atol=1e-14, rtol=0)
    grad_out = torch.randn(ref.shape, generator=torch.Generator().manual_seed(2),
                           dtype=torch.float64)
    g_ours = torch.autograd.grad(ours, vec, grad_out)[0]
    g_ref = torch.autograd.grad(ref, vec, grad_out)[0]
    assert torch.allclose(g_ours, g_ref, atol=1e-12, rtol=0)
    small = vec.detach()[:10].clone().requires_grad_(True)  # axes and random edges
    assert torch.autograd.gradcheck(wigner.flat, (small,))
    # Second order in full up to lmax 3; at lmax 6 (4,540 outputs) along random directions.
    assert torch.autograd.gradgradcheck(wigner.flat, (small,), fast_mode=lmax > 3)


def test_escn_energy_forces_stress_equal_torch_path(cpp, small_cell, chiral):
    model = make_model("escn", lmax=4, mmax=3, channels=16)
    for structures in ([small_cell], [small_cell, chiral]):  # with stress, then a mixed batch
        ours = checks.evaluate(model, structures)
        ref = _native(checks.evaluate, model, structures)
        for a, b in zip(ours, ref):
            assert abs(a["energy"] - b["energy"]) < 1e-10
            assert np.abs(a["forces"] - b["forces"]).max() < 1e-10
    assert np.abs(ours[0]["forces"]).max() > 1e-3
    ours, ref = checks.evaluate(model, [small_cell]), _native(checks.evaluate, model, [small_cell])
    assert np.abs(ours[0]["stress"] - ref[0]["stress"]).max() < 1e-10
    errors = checks.finite_difference_errors(model, chiral, delta=1e-5)
    assert errors["forces"] < 1e-7
    lone = Atoms("CO", positions=[[0, 0, 0], [0, 0, 9.0]])  # no edges at all
    ours, ref = checks.evaluate(model, [lone])[0], _native(checks.evaluate, model, [lone])[0]
    assert abs(ours["energy"] - ref["energy"]) < 1e-12 and not ours["forces"].any()


def test_force_loss_parameter_gradients_equal_torch_path(cpp, chiral):
    """Training differentiates the forces again: the kernels' backward must be differentiable."""
    from ase_so3.graph import atoms_to_graph
    from ase_so3.potentials.forces import energy_forces_stress

    model = make_model("escn", lmax=3, mmax=2, channels=8)
    graph = atoms_to_graph(chiral, model.cutoff, dtype=torch.float64)

    def loss_grads():
        model.zero_grad()
        out = energy_forces_stress(model, graph, training=True)
        (out["forces"] ** 2).sum().backward()
        return [p.grad.clone() for p in model.parameters() if p.grad is not None]

    ours = loss_grads()
    ref = _native(loss_grads)
    assert len(ours) == len(ref) > 0
    for a, b in zip(ours, ref):
        assert torch.allclose(a, b, atol=1e-10, rtol=1e-8)


def test_results_do_not_depend_on_thread_count(cpp):
    lmax, vec = 4, _vectors(3000, 3, dtype=torch.float32)
    wigner = EdgeWignerD(lmax).to(torch.float32)
    x = torch.randn(vec.shape[0], 25, 16, generator=torch.Generator().manual_seed(0))
    before = torch.get_num_threads()
    results = []
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            flat = wigner.flat(vec)
            results.append([flat] + cpu_kernels.rotate_in(flat, x, lmax, lmax))
    finally:
        torch.set_num_threads(before)
    for a, b in zip(*results):
        assert torch.equal(a, b)  # each edge is computed alone: bit for bit


def test_bad_backend_and_bad_shapes_give_clear_errors(cpp):
    with pytest.raises(ValueError, match="unknown kernel backend"):
        cpu_kernels.set_backend("fast")
    d = torch.zeros(4, 9 + 25)
    with pytest.raises(RuntimeError, match="features have 16 rows, expected 9"):
        cpu_kernels.rotate_in(d, torch.zeros(4, 16, 8), 2, 2)
    with pytest.raises(RuntimeError, match="m-blocks"):  # one block where there are three
        cpu_kernels.rotate_out(d, [torch.zeros(4, 3, 8)], 2, 2)
    with pytest.raises(RuntimeError, match="differ in dtype"):
        cpu_kernels.rotate_in(d, torch.zeros(4, 9, 8, dtype=torch.float64), 2, 2)
