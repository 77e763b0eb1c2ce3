"""Shared fixtures: small structures and one small instance of every registered model."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from ase import Atoms
from ase.build import molecule

from ase_so3.potentials import REGISTRY, build_potential

# real MD17 / revised-MD17 frames carried by the tests (tests/data/README.md: provenance)
SHARED = Path(__file__).resolve().parent / "data"
RMD17 = SHARED / "rmd17"
ETHANOL = [RMD17 / "rmd17_ethanol_train_01.npz", RMD17 / "rmd17_ethanol_test_01.npz"]

# Small, fast settings per model variant; a newly registered model is tested with its defaults.
MODEL_SPECS = {
    "tfn": ("tfn", dict(lmax=2, channels=8, num_layers=2)),
    "se3_transformer-r": ("se3_transformer", dict(lmax=2, channels=8, num_heads=2, num_layers=2)),
    "se3_transformer-inverse": ("se3_transformer", dict(lmax=1, channels=8, num_heads=2,
                                                        num_layers=2, distance_features="inverse")),
    "se3_transformer-mixed": ("se3_transformer", dict(lmax=1, channels=8, num_heads=2,
                                                      num_layers=2, distance_features="mixed")),
    "tfn-nequip": ("tfn", dict(lmax=2, channels=8, num_layers=2, edge_species=True, gate=True,
                               ffn_hidden=8, norm=True)),
    "se3_transformer-gated": ("se3_transformer", dict(lmax=2, channels=8, num_heads=2,
                                                      num_layers=2, edge_species=True, gate=True,
                                                      ffn_hidden=8)),
    "escn": ("escn", dict(lmax=3, mmax=2, channels=8, num_layers=2)),
    "escn-esen": ("escn", dict(lmax=3, mmax=2, channels=8, num_layers=2, edge_species=True,
                               message_centre=True, message_gate=True, hidden_channels=6,
                               ffn_hidden=8, norm=True, edge_degree_embedding=True)),
}
for _name in REGISTRY:
    if not any(spec[0] == _name for spec in MODEL_SPECS.values()):
        MODEL_SPECS[_name] = (_name, {})

SPECIES = ["H", "C", "O"]


def make_model(spec: str, seed: int = 0, cutoff: float = 4.0, scale: float = 30.0, **overrides):
    """A small untrained model whose outputs are scaled so forces are O(0.1-1) eV/Å."""
    import torch
    name, kwargs = MODEL_SPECS[spec]
    torch.manual_seed(seed)
    model = build_potential(name, species=SPECIES, cutoff=cutoff, **{**kwargs, **overrides})
    model.scale.fill_(scale)
    return model


@pytest.fixture(params=sorted(MODEL_SPECS))
def model_spec(request) -> str:
    return request.param


@pytest.fixture
def ethanol() -> Atoms:
    return molecule("CH3CH2OH")


@pytest.fixture
def chiral() -> Atoms:
    """A molecule with no mirror symmetry: for achiral ones (like ASE's ethanol) a reflection is a
    rotation, so reflection tests on them cannot fail."""
    return Atoms(numbers=[6, 6, 8, 1, 1, 1], positions=[[0, 0, 0], [1.5, 0, 0], [1.9, 1.3, 0],
                                                        [-0.4, 0.9, 0.5], [-0.3, -0.6, 0.8],
                                                        [2.0, -0.4, -0.9]])


@pytest.fixture
def small_cell() -> Atoms:
    """Four atoms in a skewed periodic cell much smaller than twice the 4 Å test cutoff."""
    cell = np.array([[3.2, 0.0, 0.0], [0.6, 3.0, 0.0], [0.3, 0.5, 3.4]])
    return Atoms("HCOH", scaled_positions=[[0, 0, 0], [0.5, 0.5, 0.1], [0.1, 0.5, 0.6],
                                           [0.6, 0.1, 0.5]], cell=cell, pbc=True)


@pytest.fixture
def slab() -> Atoms:
    """Partly periodic (x, y) with vacuum along z."""
    cell = np.array([[3.0, 0.0, 0.0], [0.4, 3.1, 0.0], [0.0, 0.0, 12.0]])
    return Atoms("COH", positions=[[0.2, 0.1, 5.0], [1.4, 1.0, 5.6], [0.5, 2.0, 6.1]], cell=cell,
                 pbc=[True, True, False])


def _ethanol_h5(tmp_path_factory, n_train: int, n_val: int, n_test: int) -> Path:
    from ase_so3.training.convert import convert_to_hdf5
    path = tmp_path_factory.mktemp("data") / "ethanol.h5"
    convert_to_hdf5(ETHANOL, path, n_train=n_train, n_val=n_val, n_test=n_test, seed=0)
    return path


@pytest.fixture(scope="session")
def ethanol_h5(tmp_path_factory):
    """rMD17 ethanol, 24 train / 8 val / 10 test structures (read-only: copy before changing)."""
    return _ethanol_h5(tmp_path_factory, 24, 8, 10)


@pytest.fixture(scope="session")
def small_h5(tmp_path_factory):
    """rMD17 ethanol, 12 train / 4 val / 4 test structures (read-only: copy before changing)."""
    return _ethanol_h5(tmp_path_factory, 12, 4, 4)


@pytest.fixture
def small_h5_copy(small_h5, tmp_path):
    """A private copy of ``small_h5`` that a test may change."""
    return Path(shutil.copy(small_h5, tmp_path / "ethanol.h5"))
