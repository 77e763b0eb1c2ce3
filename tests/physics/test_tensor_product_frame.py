"""TFN's tensor-product convolution evaluated in the edge frame (TensorProductConv.in_frame): the
same messages, energies, forces and training gradients as the per-edge filters, for TFN and the
SE(3)-Transformer; paths that couple +m to -m keep the filters."""

import pytest
import torch

from ase_so3.potentials.blocks import RadialWeights
from ase_so3.potentials.convolution import TensorProductConv
from ase_so3.so3 import cpu_kernels, so2
from ase_so3.so3.edge_frame import EdgeWignerD
from ase_so3.so3.spherical_harmonics import SphericalHarmonics
from ase_so3.training.trainer import Trainer
from tests.integration.test_training import TINY, _cfg, _step_gradients


def _frame_messages(conv, x, vectors, w, lmax):
    frame = so2.frame_of(EdgeWignerD(lmax).double(), vectors, lmax)
    v = torch.einsum("qp,ep...->eq...", conv.frame_mix(), w)
    out = conv.through_frame(x, frame, v)
    return out if w.dim() == 3 else out.view(*out.shape[:2], w.shape[2], -1).transpose(1, 2)


@pytest.mark.parametrize("lmax, degrees, stacked, backend", [
    (1, None, False, "torch"), (2, None, False, "torch"), (3, None, True, "torch"),
    (3, (0, 1, 3), True, "torch"), (2, None, True, "cpp"), (4, None, False, "cpp")])
def test_edge_frame_convolution_equals_the_filters(lmax, degrees, stacked, backend):
    torch.manual_seed(lmax)
    conv = TensorProductConv(lmax, lmax, 2 * lmax, degrees=degrees).double()
    assert conv.frame_ok
    e, c = 23, 5
    vectors = torch.randn(e, 3, dtype=torch.float64)
    vectors[0] = torch.tensor([0.0, 1.3, 0.0])  # along the polar axis, and against it
    vectors[1] = torch.tensor([0.0, -0.7, 0.0])
    x = torch.randn(e, (lmax + 1) ** 2, c, dtype=torch.float64)
    w = torch.randn(e, conv.num_paths, *((2,) if stacked else ()), c, dtype=torch.float64)
    expected = conv(x, conv.filters(SphericalHarmonics(2 * lmax).double()(vectors)), w)
    with cpu_kernels.using(backend):
        got = _frame_messages(conv, x, vectors, w, lmax)
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-12)


def test_paths_coupling_plus_m_to_minus_m_keep_the_filters():
    assert not TensorProductConv(2, 2, 4, parity=False).frame_ok
    assert not TensorProductConv(1, 2, 3).frame_ok  # lmax_in != lmax_out


def test_radial_weights_mixed_through_the_last_layer():
    torch.manual_seed(0)
    radial = RadialWeights(8, 16, (6, 4)).double()
    basis, envelope = torch.randn(10, 8, dtype=torch.float64), torch.rand(10, dtype=torch.float64)
    mix = torch.randn(9, 6, dtype=torch.float64)
    for _ in range(2):
        expected = torch.einsum("qp,epc->eqc", mix, radial(basis, envelope))
        torch.testing.assert_close(radial(basis, envelope, mix), expected, rtol=1e-12, atol=1e-13)
        radial.mlp[-1].bias = None


@pytest.mark.parametrize("model, extra", [
    ("tfn", {"gate": True, "ffn_hidden": 8, "norm": True, "edge_species": True}),
    ("se3_transformer", {"num_heads": 2})])
def test_edge_frame_trains_as_the_filters(ethanol_h5, tmp_path, model, extra):
    """Loss and weight gradients of a training step (forces by autograd, then the force loss's
    second derivatives) with the edge frame and with the filters: float64 and float32."""
    model_config = {**TINY, "lmax": 2, "channels": 4, **extra}
    model_config.pop("mmax")
    for dtype, tol in (("float64", 1e-10), ("float32", 2e-4)):
        results = {}
        for in_frame in (True, False):
            trainer = Trainer(_cfg(ethanol_h5, tmp_path / f"{in_frame}", model=model, dtype=dtype,
                                   grad_clip=0, model_config=model_config))
            assert trainer.model.in_edge_frame
            trainer.model.in_edge_frame = in_frame
            batch = trainer.train_set.collate([0, 1, 2, 3], trainer.dtype, "cpu")
            with trainer.step_context(log=lambda *_: None):
                results[in_frame] = _step_gradients(trainer, batch)
        (loss_f, grad_f), (loss_t, grad_t) = results[True], results[False]
        assert loss_f == pytest.approx(loss_t, rel=tol)
        for k in grad_t:
            torch.testing.assert_close(grad_f[k], grad_t[k], rtol=tol, atol=tol * 1e-2, msg=k)
