"""The SO(3) layer shared by all models: real Clebsch–Gordan coefficients, spherical harmonics,
Wigner-D matrices, the differentiable edge frame, and SO(2) maps (conventions in
:mod:`ase_so3.keys`)."""

from ase_so3.so3.clebsch_gordan import clebsch_gordan, tensor_product_paths
from ase_so3.so3.spherical_harmonics import SphericalHarmonics, spherical_harmonics
from ase_so3.so3.edge_frame import EdgeWignerD, edge_rotation
from ase_so3.so3.wigner import WignerD, random_rotation

__all__ = ["clebsch_gordan", "tensor_product_paths", "SphericalHarmonics", "spherical_harmonics",
           "WignerD", "EdgeWignerD", "edge_rotation", "random_rotation"]
