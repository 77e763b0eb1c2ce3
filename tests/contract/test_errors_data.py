"""Data sets: non-finite labels and coordinates named (file, split, structure) before anything
runs; the ``ase_so3_h5`` writer with partly labelled structures."""

import json

import h5py
import numpy as np
import pytest
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator
from ase.io import read, write

from ase_so3.cli import main
from ase_so3.training.convert import convert_to_hdf5
from ase_so3.training.hdf5 import DatasetFileError, HDF5Dataset
from ase_so3.training.trainer import Trainer
from tests.integration.test_training import _cfg


def _poison(path, dataset, index, value=np.nan):
    with h5py.File(path, "r+") as f:
        data = f[dataset][()]
        data.reshape(len(data), -1)[index] = value
        f[dataset][...] = data


@pytest.mark.parametrize("dataset, field", [("structures/energy", "energy"),
                                            ("atoms/forces", "forces"),
                                            ("atoms/positions", "positions")])
def test_non_finite_values_in_a_data_set_are_named_before_training(small_h5_copy, tmp_path, dataset,
                                                                    field):
    ds = HDF5Dataset(small_h5_copy)
    structure = int(ds.split("train")[3])
    atom = int(ds.offsets[structure]) + 4
    ds.close()
    _poison(small_h5_copy, dataset, structure if field == "energy" else atom, np.inf)
    out = tmp_path / "run"
    with pytest.raises(DatasetFileError) as info:
        Trainer(_cfg(small_h5_copy, out, max_epochs=1))
    msg = str(info.value)
    assert str(small_h5_copy) in msg and f"structure {structure} of split 'train'" in msg
    assert f"non-finite {field}" in msg and "ase-so3 convert" in msg
    assert not out.exists()  # nothing written, no dataset_stats.json with a bare NaN


def test_evaluate_names_a_nan_coordinate(small_h5_copy, capsys):
    ds = HDF5Dataset(small_h5_copy)
    structure = int(ds.split("test")[1])
    ds.close()
    _poison(small_h5_copy, "atoms/positions", int(ds.offsets[structure]) + 4)
    from tests.physics.test_selfcheck import _save_tiny
    potential = small_h5_copy.parent / "p.pt"
    _save_tiny(potential)
    assert main(["evaluate", str(potential), str(small_h5_copy), "--split", "test"]) != 0
    err = capsys.readouterr().err
    assert f"atom 4 of structure {structure} of split 'test' has a non-finite positions" in err
    assert "non-finite coordinate along axis" not in err


def test_divergence_message_says_which_checkpoint_exists(small_h5_copy, tmp_path, monkeypatch):
    import ase_so3.training.trainer as tm
    original = tm.loss_terms
    monkeypatch.setattr(tm, "loss_terms", lambda p, t, c, w=None: {
        **original(p, t, c, w), "total": original(p, t, c, w)["total"] * float("nan")})
    with pytest.raises(tm.TrainingDivergedError, match="no checkpoint was written") as info:
        Trainer(_cfg(small_h5_copy, tmp_path / "run", max_epochs=1)).fit(log=lambda *_: None)
    assert "last good checkpoint" not in str(info.value)
    json.loads((tmp_path / "run" / "dataset_stats.json").read_text())  # valid JSON


def test_convert_refuses_non_finite_values_naming_file_and_frame(tmp_path):
    images = []
    for k in range(4):
        a = Atoms("H2O", positions=[[0, 0, 0], [0.96, 0, 0], [-0.24, 0.93, 0]])
        forces = np.zeros((3, 3))
        if k == 2:
            forces[1, 0] = np.nan
        a.calc = SinglePointCalculator(a, energy=-1.0 - k, forces=forces)
        images.append(a)
    src = tmp_path / "water.extxyz"
    write(src, images)
    out = tmp_path / "water.h5"
    with pytest.raises(ValueError, match=r"water.extxyz: frame 2 holds NaN or infinite values "
                                         r"in forces; nothing was written"):
        convert_to_hdf5([src], out, n_train=2, n_val=1, n_test=1)
    assert not out.exists()


def _water(energy=None, forces=None):
    a = Atoms("H2O", positions=[[0, 0, 0], [0.96, 0, 0], [-0.24, 0.93, 0]])
    if energy is not None or forces is not None:
        a.calc = SinglePointCalculator(a, energy=energy, forces=forces)
    return a


def test_ase_io_writes_partly_labelled_structures_and_appends(tmp_path):
    path = tmp_path / "mixed.h5"
    images = [_water(), _water(energy=-2.0), _water(energy=-3.0, forces=np.ones((3, 3)))]
    write(path, images, format="ase_so3_h5")
    back = read(path, ":")
    assert back[0].calc is None
    assert back[1].get_potential_energy() == -2.0 and "forces" not in back[1].calc.results
    assert np.array_equal(back[2].get_forces(), np.ones((3, 3)))
    with pytest.raises(FileExistsError, match="append=True .* overwrite=True"):
        write(path, images[:1], format="ase_so3_h5")
    write(path, [_water(energy=-4.0, forces=np.zeros((3, 3)))], format="ase_so3_h5", append=True)
    assert len(read(path, ":")) == 4 and read(path, "3").get_potential_energy() == -4.0
    write(path, images[:1], format="ase_so3_h5", overwrite=True)
    assert len(read(path, ":")) == 1
    ds = HDF5Dataset(path)
    with pytest.raises(DatasetFileError, match="has no energy label"):
        ds.check([0])
