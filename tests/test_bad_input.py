"""Bad input gets a clear error that says what to do, and loses nothing."""

import os

import numpy as np
import pytest
import torch
from ase import Atoms

from ase_so3 import SO3Calculator, load_potential
from ase_so3.errors import InvalidStructureError, PotentialFileError, UnknownElementError
from ase_so3.io_utils import atomic_path
from tests.conftest import make_model


@pytest.fixture
def calc():
    return SO3Calculator(make_model("tfn"))


def test_unknown_element(calc):
    atoms = Atoms("CFe", positions=[[0, 0, 0], [1.5, 0, 0]])
    atoms.calc = calc
    with pytest.raises(UnknownElementError, match=r"trained on H, C, O only .* Fe \(Z=26\)"):
        atoms.get_potential_energy()


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_positions(calc, bad):
    atoms = Atoms("CO", positions=[[0, 0, 0], [1.2, bad, 0]])
    atoms.calc = calc
    with pytest.raises(InvalidStructureError, match="NaN or infinite"):
        atoms.get_potential_energy()


def test_pbc_without_cell(calc):
    atoms = Atoms("CO", positions=[[0, 0, 0], [1.2, 0, 0]], pbc=True)
    atoms.calc = calc
    with pytest.raises(InvalidStructureError, match="cell vector is zero.*set atoms.cell"):
        atoms.get_potential_energy()
    flat = Atoms("CO", positions=[[0, 0, 0], [1.2, 0, 0]], cell=[[2, 0, 0], [4, 0, 0], [0, 0, 3]],
                 pbc=True)
    flat.calc = calc
    with pytest.raises(InvalidStructureError, match="volume is zero"):
        flat.get_potential_energy()


def test_coincident_atoms_raise_and_close_atoms_warn(calc):
    atoms = Atoms("COH", positions=[[0, 0, 0], [0, 0, 0], [1.0, 0, 0]])
    atoms.calc = calc
    with pytest.raises(InvalidStructureError, match="same position.*remove the duplicate"):
        atoms.get_potential_energy()
    close = Atoms("CO", positions=[[0, 0, 0], [0.3, 0, 0]])
    close.calc = calc
    with pytest.warns(UserWarning, match="closer than min_distance"):
        assert np.isfinite(close.get_potential_energy())


def test_not_a_potential_file(tmp_path):
    junk = tmp_path / "junk.pt"
    junk.write_bytes(os.urandom(256))
    with pytest.raises(PotentialFileError, match="not a readable ase_so3 potential"):
        load_potential(junk)
    other = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(3)}, other)
    with pytest.raises(PotentialFileError, match="not an ase_so3 potential file"):
        load_potential(other)


def test_truncated_and_tampered_files(tmp_path):
    model = make_model("escn")
    path = tmp_path / "m.pt"
    model.save(path)
    data = path.read_bytes()
    cut = tmp_path / "cut.pt"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(PotentialFileError, match="truncated or damaged"):
        load_potential(cut)
    payload = torch.load(path, weights_only=True)
    key = next(k for k in payload["state_dict"] if k.endswith("weight"))
    payload["state_dict"][key] = payload["state_dict"][key] + 1e-3
    torch.save(payload, tmp_path / "tampered.pt")
    with pytest.raises(PotentialFileError, match="checksum does not match"):
        load_potential(tmp_path / "tampered.pt")


def test_newer_format_and_unknown_model(tmp_path):
    model = make_model("tfn")
    model.save(tmp_path / "m.pt")
    payload = torch.load(tmp_path / "m.pt", weights_only=True)
    newer = dict(payload, format_version=99)
    torch.save(newer, tmp_path / "newer.pt")
    with pytest.raises(PotentialFileError, match="version 99.*Upgrade ase_so3"):
        load_potential(tmp_path / "newer.pt")
    alien = dict(payload, model="allegro", checksum=None)
    torch.save(alien, tmp_path / "alien.pt")
    with pytest.raises(PotentialFileError, match="'allegro' model, which this ase_so3 does not know"):
        load_potential(tmp_path / "alien.pt")


def test_weights_of_another_model_are_refused(tmp_path):
    tfn = make_model("tfn")
    tfn.save(tmp_path / "m.pt")
    payload = torch.load(tmp_path / "m.pt", weights_only=True)
    escn_state = make_model("escn").state_dict()
    torch.save(dict(payload, state_dict=escn_state, checksum=None), tmp_path / "mixed.pt")
    with pytest.raises(PotentialFileError, match="weights do not fit a 'tfn' model"):
        load_potential(tmp_path / "mixed.pt")


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_pickled_code_is_refused(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"format": "ase_so3.potential", "payload": _Evil()}, path)
    with pytest.raises(PotentialFileError, match="pickled code, which is refused"):
        load_potential(path)


def test_atomic_write_keeps_previous_file_on_failure(tmp_path):
    target = tmp_path / "model.pt"
    make_model("tfn").save(target)
    before = target.read_bytes()
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"partial")
            raise RuntimeError("killed mid-write")
    assert target.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["model.pt"]


def test_invalid_configs():
    from ase_so3.potentials import ESCN, SE3Transformer, TFN
    with pytest.raises(ValueError, match="unknown chemical symbol"):
        TFN(species=["Xx"])
    with pytest.raises(ValueError, match="mmax"):
        ESCN(lmax=2, mmax=3)
    with pytest.raises(ValueError, match="distance_features"):
        SE3Transformer(distance_features="r2")
    with pytest.raises(ValueError, match="cutoff must be positive"):
        TFN(cutoff=-1)


def test_atomic_writes_get_normal_permissions(tmp_path):
    target = tmp_path / "model.pt"
    make_model("tfn").save(target)
    mask = os.umask(0)
    os.umask(mask)
    assert (target.stat().st_mode & 0o777) == (0o666 & ~mask)
