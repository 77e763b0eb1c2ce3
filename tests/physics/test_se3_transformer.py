"""SE(3)-Transformer attention: normalised, invariant, and shared code with TFN."""

import torch

from ase_so3.graph import atoms_to_graph
from ase_so3.potentials.convolution import TensorProductConv
from ase_so3.potentials.se3_transformer import SE3AttentionLayer
from ase_so3.potentials.tfn import TFNInteraction
from ase_so3.scatter import scatter_sum
from ase_so3.so3.wigner import random_rotation
from tests.conftest import make_model


def _attention(model, atoms):
    g = atoms_to_graph(atoms, model.cutoff)
    with torch.no_grad():
        return g, model.attention_weights(g)


def test_attention_weights_sum_to_one_and_are_invariant(ethanol):
    for features in ("r", "inverse", "mixed"):
        model = make_model("se3_transformer-r", attention_envelope=False, distance_features=features)
        g, alphas = _attention(model, ethanol)
        n = len(ethanol)
        for alpha in alphas:
            sums = scatter_sum(alpha, g["edge_index"][1], n)
            assert torch.allclose(sums, torch.ones_like(sums), atol=1e-12)
            assert (alpha > 0).all()
        rotated = ethanol.copy()
        rot = random_rotation(generator=torch.Generator().manual_seed(3)).numpy()
        rotated.positions = ethanol.positions @ rot.T
        g2, alphas2 = _attention(model, rotated)
        assert torch.equal(g["edge_index"], g2["edge_index"])
        for a1, a2 in zip(alphas, alphas2):
            assert (a1 - a2).abs().max() < 1e-12


def test_attention_with_envelope_is_normalised_and_differs(ethanol):
    with_env = make_model("se3_transformer-r", attention_envelope=True)
    without = make_model("se3_transformer-r", attention_envelope=False)
    g, a1 = _attention(with_env, ethanol)
    _, a2 = _attention(without, ethanol)
    sums = scatter_sum(a1[0], g["edge_index"][1], len(ethanol))
    assert torch.allclose(sums, torch.ones_like(sums), atol=1e-12)
    assert (a1[0] - a2[0]).abs().max() > 1e-4


def test_tfn_and_se3_transformer_share_the_convolution():
    tfn = make_model("tfn")
    se3 = make_model("se3_transformer-r")
    assert isinstance(tfn.layers[0], TFNInteraction) and isinstance(se3.layers[0], SE3AttentionLayer)
    assert type(tfn.layers[0].conv) is type(se3.layers[0].conv) is TensorProductConv
    assert tfn.layers[0].conv.paths == se3.layers[0].conv.paths


def test_stacked_weights_give_the_separate_convolutions():
    """Key and value in one call (the filter contraction shared) equal two separate calls."""
    g = torch.Generator().manual_seed(0)
    conv = TensorProductConv(2, 2, 4).to(torch.float64)
    e, c = 7, 3
    vec = torch.randn(e, 3, generator=g, dtype=torch.float64)
    from ase_so3.so3.spherical_harmonics import SphericalHarmonics
    filters = conv.filters(SphericalHarmonics(4).to(torch.float64)(vec))
    x = torch.randn(e, 9, c, generator=g, dtype=torch.float64)
    wk, wv = (torch.randn(e, conv.num_paths, c, generator=g, dtype=torch.float64) for _ in "kv")
    k, v = conv(x, filters, torch.stack([wk, wv], 2)).unbind(1)
    assert k.shape == (e, 9, c)
    assert torch.allclose(k, conv(x, filters, wk), atol=1e-12)
    assert torch.allclose(v, conv(x, filters, wv), atol=1e-12)
    assert not torch.allclose(k, v)


def test_degrees_0_1_3_leave_degree_2_exactly_zero_and_stay_equivariant(chiral):
    from ase_so3 import keys as K
    from ase_so3.checks import finite_difference_errors, symmetry_errors
    from ase_so3.graph import edge_vectors
    model = make_model("se3_transformer-r", degrees=(0, 3, 1), num_layers=3)
    cfg = model.config
    assert cfg.degrees == (0, 1, 3) and cfg.lmax == 3
    assert all(p[0] != 2 and p[2] != 2 for p in model.layers[0].conv.paths)
    assert any(p[1] == 2 for p in model.layers[0].conv.paths)  # degree-2 filters still used
    graph = atoms_to_graph(chiral, model.cutoff)
    species = model.species_index(graph[K.NUMBERS])
    vectors = edge_vectors(graph)
    r = torch.linalg.vector_norm(vectors, dim=-1)
    bases = {k: b(r) for k, b in model.bases.items()}
    filters = model.layers[0].conv.filters(model.sh(vectors))
    x = model.embedding(species)
    for layer in model.layers:
        x, _ = layer(x, graph[K.EDGE_INDEX], bases, model.envelope(r), filters)
        assert torch.count_nonzero(x[:, 4:9]) == 0  # l = 2 components
        assert torch.count_nonzero(x[:, 9:16]) > 0  # l = 3 is used
    errs = symmetry_errors(model, chiral, draws=3)
    assert max(errs.values()) < 1e-10, errs
    fd = finite_difference_errors(model, chiral)
    assert fd["forces"] < 1e-6, fd
