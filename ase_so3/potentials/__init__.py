"""Energy models over atomic graphs. Forces and stress come from :mod:`.forces`."""

from ase_so3.potentials.base import Potential, PotentialConfig
from ase_so3.potentials.escn import ESCN, ESCNConfig
from ase_so3.potentials.registry import REGISTRY, build_potential, get_model_class
from ase_so3.potentials.se3_transformer import SE3Transformer, SE3TransformerConfig
from ase_so3.potentials.tfn import TFN, TFNConfig

__all__ = ["Potential", "PotentialConfig", "TFN", "TFNConfig", "SE3Transformer",
           "SE3TransformerConfig", "ESCN", "ESCNConfig", "REGISTRY", "build_potential",
           "get_model_class"]
