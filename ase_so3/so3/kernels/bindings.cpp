// Python bindings of the fused CPU kernels (see ase_so3/so3/cpu_kernels.py).
#include <torch/extension.h>

#include <vector>

// rotation.cpp
std::vector<torch::Tensor> rotate_in(torch::Tensor d, torch::Tensor x, torch::Tensor rows,
                                     torch::Tensor offsets, int64_t lmax, bool unit0);
torch::Tensor rotate_out(torch::Tensor d, std::vector<torch::Tensor> y, torch::Tensor rows,
                         torch::Tensor offsets, int64_t lmax, bool unit0);
torch::Tensor rotation_grad_d(torch::Tensor x, std::vector<torch::Tensor> g, torch::Tensor rows,
                              torch::Tensor offsets, int64_t lmax, int64_t t);
// wigner.cpp
torch::Tensor wigner_forward(torch::Tensor cs, torch::Tensor ca, torch::Tensor sa,
                             torch::Tensor tilted, torch::Tensor fold, torch::Tensor col_m,
                             torch::Tensor col_sign, torch::Tensor chart, torch::Tensor chart_t,
                             torch::Tensor offsets, int64_t lmax);
std::vector<torch::Tensor> wigner_backward(torch::Tensor cs, torch::Tensor ca, torch::Tensor sa,
                                           torch::Tensor tilted, torch::Tensor fold,
                                           torch::Tensor col_m, torch::Tensor col_sign,
                                           torch::Tensor chart, torch::Tensor chart_t,
                                           torch::Tensor offsets, int64_t lmax,
                                           torch::Tensor gd);

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("rotate_in", &rotate_in, "rotate features into the edge frame (m-blocks)");
  m.def("rotate_out", &rotate_out, "rotate edge-frame m-blocks back");
  m.def("rotation_grad_d", &rotation_grad_d, "gradient of the rotations' Wigner blocks");
  m.def("wigner_forward", &wigner_forward, "the edge frame's flattened Wigner-D blocks");
  m.def("wigner_backward", &wigner_backward, "their gradients from the blocks' gradient");
}
