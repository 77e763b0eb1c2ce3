"""eSCN: the SO(2) convolution equals the TFN tensor product; the edge frame is safe at poles
and the energy does not depend on the roll about the edge."""

from collections import Counter

import numpy as np
import pytest
import torch
from ase import Atoms

from ase_so3 import checks
from ase_so3.potentials.convolution import TensorProductConv
from ase_so3.so3 import so2
from ase_so3.so3.spherical_harmonics import spherical_harmonics
from ase_so3.so3.edge_frame import edge_rotation
from ase_so3.so3.wigner import WignerD, block_diagonal
from tests.conftest import make_model


@pytest.mark.parametrize("lmax", [1, 2, 3, 4, 5])  # one dense group up to 3, per-degree above
def test_so2_convolution_reproduces_tensor_product(lmax):
    gen = torch.Generator().manual_seed(lmax)
    e, c = 12, 3
    vec = torch.randn(e, 3, generator=gen, dtype=torch.float64)
    vec[0] = torch.tensor([0.0, 1.3, 0.0])  # exactly along +y (the polar axis)
    vec[1] = torch.tensor([0.0, -0.7, 0.0])  # exactly along -y
    vec[2] = torch.tensor([1e-9, -1.0, 0.0])  # nearly along -y
    x = torch.randn(e, (lmax + 1) ** 2, c, generator=gen, dtype=torch.float64)
    conv = TensorProductConv(lmax, lmax, 2 * lmax).to(torch.float64)
    w = torch.randn(e, conv.num_paths, c, generator=gen, dtype=torch.float64)
    reference = conv(x, conv.filters(spherical_harmonics(2 * lmax, vec)), w)
    norms = {lo: n ** 0.5 for lo, n in Counter(lo for _, _, lo in conv.paths).items()}
    weights = so2.tfn_weights_to_so2(w, conv.paths, lmax, norms)
    blocks = WignerD(lmax).to(torch.float64).blocks(edge_rotation(vec))
    frame = so2.edge_frame(blocks, lmax, lmax)
    assert len(frame.matrices) == 1 + max(0, lmax - so2.DENSE_FRAME_MAX_L)
    x_rot = so2.rotate_to_edge_frame(x, frame)
    out = so2.rotate_from_edge_frame(so2.so2_linear(x_rot, weights, lmax, lmax), frame)
    assert reference.abs().max() > 0.1
    assert (out - reference).abs().max() < 1e-10


def test_truncation_mmax_changes_result():
    """mmax < lmax really drops orders (so the equivalence above is not vacuous)."""
    gen = torch.Generator().manual_seed(0)
    lmax = 3
    vec = torch.randn(5, 3, generator=gen, dtype=torch.float64)
    x = torch.randn(5, 16, 2, generator=gen, dtype=torch.float64)
    blocks = WignerD(lmax).to(torch.float64).blocks(edge_rotation(vec))
    frame = so2.edge_frame(blocks, lmax, lmax)
    full = so2.rotate_from_edge_frame(so2.rotate_to_edge_frame(x, frame), frame)
    assert (full - x).abs().max() < 1e-12  # rotation round trip with all orders
    cut_frame = so2.edge_frame(blocks, lmax, 1)
    cut_rot = so2.rotate_to_edge_frame(x, cut_frame)
    assert [b.shape[1] for b in cut_rot] == [4, 2 * 3]  # m = 0 rows, then +-1 rows for l = 1..3
    cut = so2.rotate_from_edge_frame(cut_rot, cut_frame)
    assert (cut - x).abs().max() > 1e-3


@pytest.mark.parametrize("dense_max", [0, 1, 3, 6])
@pytest.mark.parametrize("lmax,mmax", [(4, 4), (4, 2), (5, 1), (2, 2), (3, 1), (6, 6)])
def test_edge_frame_groupings_equal_dense_rotation(lmax, mmax, dense_max, monkeypatch):
    """However the degrees are grouped, rotating in and out equals the product with the dense
    block-diagonal Wigner-D restricted to the m-major rows, gradients included."""
    monkeypatch.setattr(so2, "DENSE_FRAME_MAX_L", dense_max)
    gen = torch.Generator().manual_seed(lmax + 10 * mmax)
    vec = torch.randn(7, 3, generator=gen, dtype=torch.float64, requires_grad=True)
    x = torch.randn(7, (lmax + 1) ** 2, 3, generator=gen, dtype=torch.float64,
                    requires_grad=True)
    sizes = so2.block_sizes(lmax, mmax)
    scale = torch.arange(1, sum(sizes) + 1, dtype=x.dtype)[:, None]
    blocks = WignerD(lmax).to(torch.float64).blocks(edge_rotation(vec))
    frame = so2.edge_frame(blocks, lmax, mmax)
    assert len(frame.matrices) == 1 + max(0, lmax - dense_max)
    x_rot = so2.rotate_to_edge_frame(x, frame)
    assert [b.shape[1] for b in x_rot] == sizes
    back = so2.rotate_from_edge_frame([b * s for b, s in zip(x_rot, scale.split(sizes))], frame)
    dense = block_diagonal(blocks)[:, so2.m_major_rows(lmax, mmax)]  # reference
    ref_rot = dense @ x
    ref_back = dense.transpose(1, 2) @ (scale * ref_rot)
    outs = [(torch.cat(x_rot, dim=1), back,
             *torch.autograd.grad(back.square().sum(), (vec, x), retain_graph=True)),
            (ref_rot, ref_back, *torch.autograd.grad(ref_back.square().sum(), (vec, x)))]
    for a, b in zip(*outs):
        assert (a - b).abs().max() < 1e-12 * (1 + a.abs().max())


def _polar_molecule(eps: float) -> Atoms:
    """Edges exactly (eps = 0) or nearly along +y and -y, plus one off-axis atom."""
    return Atoms("COHH", positions=[[0.0, 0.0, 0.0], [eps, 1.2, 0.0], [0.0, -1.1, eps],
                                    [0.9, 0.3, 0.4]])


@pytest.mark.parametrize("eps", [0.0, 1e-7, 1e-4])
def test_forces_at_poles_match_finite_differences(eps):
    model = make_model("escn")
    atoms = _polar_molecule(eps)
    res = checks.evaluate(model, [atoms])[0]
    assert np.isfinite(res["forces"]).all()
    assert checks.finite_difference_errors(model, atoms, delta=1e-5)["forces"] < 1e-7


def test_energy_invariant_to_roll_about_edge(monkeypatch):
    model = make_model("escn")
    atoms = Atoms("COHH", positions=[[0, 0, 0], [0.3, 1.2, 0.1], [0.2, -1.1, 0.5],
                                     [0.9, 0.3, 0.4]])
    ref = checks.evaluate(model, [atoms])[0]
    gen = torch.Generator().manual_seed(5)

    wigner, calls = WignerD(model.config.lmax).to(torch.float64), []

    def rolled(vectors):  # the edge frame followed by a random rotation about +y, per edge
        calls.append(vectors.shape[0])
        rot = edge_rotation(vectors)
        phi = torch.rand(vectors.shape[0], generator=gen, dtype=vectors.dtype) * 2 * np.pi
        c, s, z, o = torch.cos(phi), torch.sin(phi), torch.zeros_like(phi), torch.ones_like(phi)
        roll_y = torch.stack([torch.stack([c, z, s], -1), torch.stack([z, o, z], -1),
                              torch.stack([-s, z, c], -1)], dim=1)  # rotation about +y
        blocks = wigner.blocks(roll_y @ rot)[1:]  # as EdgeWignerD.flat lays them out
        return torch.cat([b.reshape(b.shape[0], -1) for b in blocks], dim=1)

    monkeypatch.setattr(model.wigner, "flat", rolled)
    out = checks.evaluate(model, [atoms])[0]
    assert abs(out["energy"] - ref["energy"]) < 1e-10
    assert np.abs(out["forces"] - ref["forces"]).max() < 1e-10
    assert calls  # the model builds its frame from EdgeWignerD.flat
