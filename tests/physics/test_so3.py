"""The SO(3) layer on its own: CG, spherical harmonics, Wigner-D, edge frame, SO(2) maps."""

import pytest
import torch

from ase_so3.keys import POLAR_AXIS, lm_index, num_lm
from ase_so3.so3._e3nn import o3
from ase_so3.so3.clebsch_gordan import clebsch_gordan, tensor_product_paths
from ase_so3.so3.irreps import from_e3nn_layout, irreps, to_e3nn_layout
from ase_so3.so3.spherical_harmonics import spherical_harmonics, spherical_harmonics_at_pole
from ase_so3.so3.edge_frame import EdgeWignerD, edge_rotation
from ase_so3.so3.wigner import WignerD, random_rotation

torch.set_printoptions(precision=3)
GEN = torch.Generator().manual_seed(1234)


def _vectors(n=40):
    return torch.randn(n, 3, generator=GEN, dtype=torch.float64)


@pytest.mark.parametrize("l1,l2,l3", [(l1, l2, l3) for l1 in range(5) for l2 in range(5)
                                      for l3 in range(abs(l1 - l2), l1 + l2 + 1)])
def test_clebsch_gordan_matches_e3nn_wigner_3j(l1, l2, l3):
    ours = clebsch_gordan(l1, l2, l3)
    ref = o3.wigner_3j(l1, l2, l3, dtype=torch.float64) * (2 * l3 + 1) ** 0.5
    assert min((ours - ref).abs().max(), (ours + ref).abs().max()) < 1e-12


def test_clebsch_gordan_is_orthogonal_change_of_basis():
    for l1, l2 in [(1, 1), (2, 3), (4, 4), (6, 5)]:
        q = torch.cat([clebsch_gordan(l1, l2, l3).reshape(-1, 2 * l3 + 1)
                       for l3 in range(abs(l1 - l2), l1 + l2 + 1)], dim=1)
        eye = torch.eye(q.shape[0], dtype=torch.float64)
        assert torch.allclose(q.T @ q, eye, atol=1e-12)
        assert torch.allclose(q @ q.T, eye, atol=1e-12)


def test_clebsch_gordan_is_equivariant_at_high_degree():
    rot = random_rotation(generator=GEN)
    blocks = WignerD(12).blocks(rot[None])
    c = clebsch_gordan(6, 6, 12)
    lhs = torch.einsum("ai,bj,abk->ijk", blocks[6][0], blocks[6][0], c)
    rhs = torch.einsum("ijc,kc->ijk", c, blocks[12][0])
    assert (lhs - rhs).abs().max() < 1e-11


def test_parity_rule_on_paths():
    for li, lf, lo in tensor_product_paths(3, 6, 3):
        assert (li + lf + lo) % 2 == 0 and abs(li - lo) <= lf <= li + lo
    assert len(tensor_product_paths(3, 6, 3, parity=False)) > len(tensor_product_paths(3, 6, 3))


def test_spherical_harmonics_match_e3nn_up_to_degree_11():
    x = _vectors()
    ref = o3.spherical_harmonics(list(range(12)), x, normalize=True, normalization="component")
    assert (spherical_harmonics(11, x) - ref).abs().max() < 1e-11


def test_spherical_harmonics_normalisation_and_parity():
    x = _vectors()
    y = spherical_harmonics(12, x)
    yneg = spherical_harmonics(12, -x)
    for l in range(13):
        s = slice(l * l, (l + 1) ** 2)
        assert torch.allclose((y[:, s] ** 2).sum(1), torch.full((len(x),), 2.0 * l + 1,
                                                                  dtype=torch.float64), atol=1e-10)
        assert torch.allclose(yneg[:, s], (-1) ** l * y[:, s], atol=1e-12)


def test_harmonics_at_pole_nonzero_only_at_m0():
    y = spherical_harmonics_at_pole(8)
    for l in range(9):
        for m in range(-l, l + 1):
            expected = (2 * l + 1) ** 0.5 if m == 0 else 0.0
            assert abs(float(y[lm_index(l, m)]) - expected) < 1e-12
    assert POLAR_AXIS == (0.0, 1.0, 0.0)


@pytest.mark.parametrize("lmax", [1, 4, 8])
def test_wigner_d_rotates_spherical_harmonics(lmax):
    rot = random_rotation(10, generator=GEN)
    x = _vectors(10)
    d = WignerD(lmax)(rot)
    lhs = torch.einsum("bij,bj->bi", d, spherical_harmonics(lmax, x))
    rhs = spherical_harmonics(lmax, torch.einsum("bij,bj->bi", rot, x))
    assert (lhs - rhs).abs().max() < 1e-10


def test_wigner_d_is_orthogonal_homomorphism():
    lmax = 8
    r1, r2 = random_rotation(5, generator=GEN), random_rotation(5, generator=GEN)
    wd = WignerD(lmax)
    d1, d2, d12 = wd(r1), wd(r2), wd(r1 @ r2)
    eye = torch.eye(num_lm(lmax), dtype=torch.float64)
    assert (d1 @ d1.transpose(1, 2) - eye).abs().max() < 1e-10
    assert (d1 @ d2 - d12).abs().max() < 1e-10
    assert (wd(torch.eye(3, dtype=torch.float64)[None])[0] - eye).abs().max() < 1e-12
    assert torch.equal(wd.blocks(r1)[1], r1)  # degree 1 is the rotation itself


def test_edge_rotation_maps_edges_onto_polar_axis_everywhere():
    special = torch.tensor([[0, 1.0, 0], [0, -1.0, 0], [1e-12, -1.0, 0], [0, 1.0, -1e-12],
                            [1.0, 0, 0], [0, 0, -2.0], [3.0, 1e-9, 0]], dtype=torch.float64)
    vec = torch.cat([special, _vectors(50)])
    rot = edge_rotation(vec)
    unit = vec / vec.norm(dim=1, keepdim=True)
    mapped = torch.einsum("bij,bj->bi", rot, unit)
    assert (mapped - torch.tensor(POLAR_AXIS, dtype=torch.float64)).abs().max() < 1e-12
    assert (rot @ rot.transpose(1, 2) - torch.eye(3, dtype=torch.float64)).abs().max() < 1e-12
    assert (torch.linalg.det(rot) - 1).abs().max() < 1e-12
    # edge-frame harmonics are non-zero only at m = 0
    y = torch.einsum("bij,bj->bi", WignerD(6)(rot), spherical_harmonics(6, vec))
    m0 = [lm_index(l, 0) for l in range(7)]
    mask = torch.ones(num_lm(6), dtype=torch.bool)
    mask[m0] = False
    assert y[:, mask].abs().max() < 1e-10


def test_edge_rotation_gradients_are_finite_and_correct_at_poles():
    vec = torch.tensor([[0, 1.3, 0], [0, -0.9, 0], [1e-13, -1.0, 2e-13]], dtype=torch.float64,
                       requires_grad=True)
    rot = edge_rotation(vec)
    (rot ** 3).sum().backward()
    assert torch.isfinite(vec.grad).all()
    assert torch.autograd.gradcheck(lambda v: edge_rotation(v), (vec.detach().clone()
                                                                 .requires_grad_(True),))


AXES = [[0, 1.3, 0], [0, -0.9, 0], [1e-13, -1.0, 2e-13], [2.0, 0, 0], [-1, 0, 0], [0, 0, 1],
        [0, 0, -3], [1, 1.2, 0], [0, -1.0, 0.9]]  # poles, the other axes, near the chart switch


def test_edge_wigner_blocks_equal_wigner_d_of_the_edge_frame():
    """The factorised blocks (fixed matrices and multiple angles) equal the recursion's D^l of
    the same rotation, on both charts and exactly at the switch between them."""
    switch = [[1.0, 1.0, 0], [0, -1.0, 1.0], [0.5, 0.5 ** 0.5, -0.5]]  # |r_y| = 1/sqrt(2)
    vec = torch.cat([torch.tensor(AXES + switch, dtype=torch.float64), _vectors(60)])
    ours = EdgeWignerD(8).to(torch.float64).blocks(vec)
    reference = WignerD(8).to(torch.float64).blocks(edge_rotation(vec))
    assert torch.equal(ours[0], reference[0])
    for l in range(1, 9):
        assert (ours[l] - reference[l]).abs().max() < 1e-12, l


@pytest.mark.parametrize("compiling", [False, True])
def test_edge_wigner_gradients_at_axes_and_poles(compiling, monkeypatch):
    """Both ways of applying the tilted chart (its rows only; every row and a select, as traced
    under torch.compile) give the same blocks, with exact gradients."""
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: compiling)
    vec = torch.cat([torch.tensor(AXES, dtype=torch.float64), _vectors(4)]).requires_grad_(True)
    wigner = EdgeWignerD(3).to(torch.float64)
    reference = WignerD(3).to(torch.float64).blocks(edge_rotation(vec))
    for ours, ref in zip(wigner.blocks(vec), reference):
        assert (ours - ref).abs().max() < 1e-12
    assert torch.autograd.gradcheck(
        lambda v: torch.cat([b.flatten(1) for b in wigner.blocks(v)], dim=1), (vec,))


def test_e3nn_layout_round_trip_and_irreps():
    x = torch.randn(5, num_lm(3), 4, generator=GEN, dtype=torch.float64)
    flat = to_e3nn_layout(x, 3)
    assert flat.shape[1] == irreps(3, 4).dim
    assert torch.equal(from_e3nn_layout(flat, 3, 4), x)
    # the e3nn layout transforms with e3nn's own D_from_matrix
    rot = random_rotation(generator=GEN)
    d_ours = WignerD(3)(rot[None])[0]
    rx = torch.einsum("ij,njc->nic", d_ours, x)
    d_e3nn = irreps(3, 4).D_from_matrix(rot)
    # e3nn builds D_from_matrix in float32 internally
    assert (to_e3nn_layout(rx, 3) - flat @ d_e3nn.double().T).abs().max() < 1e-5
