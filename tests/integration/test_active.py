"""Active learning (ase_so3.active) and appending labelled structures to a data set."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from ase.calculators.emt import EMT
from ase.io import read

from ase_so3.active import ActiveLearning, ActiveLearningConfig, select
from ase_so3.training.hdf5 import HDF5Dataset, Structure, append_structures


class FlakyEMT(EMT):
    """EMT that fails after ``budget`` labels: an interrupted labelling run."""

    calls = 0
    budget = 10 ** 9

    def calculate(self, *args, **kwargs):
        if FlakyEMT.calls >= FlakyEMT.budget:
            raise RuntimeError("labeller stopped")
        FlakyEMT.calls += 1
        super().calculate(*args, **kwargs)


def test_append_keeps_old_structures_and_records_the_level_of_theory(small_h5_copy):
    ds = HDF5Dataset(small_h5_copy)
    n, train, first = len(ds), ds.split("train"), ds[0]
    ds.close()
    new = [Structure(numbers=first.numbers, positions=first.positions + 0.01 * k,
                     energy=-1.0 * k, forces=np.full_like(first.positions, 0.1 * k),
                     level_of_theory="PBE/def2-SVP (test)") for k in range(3)]
    idx = append_structures(small_h5_copy, new, split=["train", "val", "train"],
                            provenance="three test labels")
    assert idx.tolist() == [n, n + 1, n + 2]
    ds = HDF5Dataset(small_h5_copy)
    assert len(ds) == n + 3
    assert ds.split("train").tolist() == train.tolist() + [n, n + 2]
    assert ds.split("val")[-1] == n + 1
    assert ds[n + 1].energy == -1.0 and ds[n + 2].forces[0, 0] == pytest.approx(0.2)
    assert ds[n].level_of_theory == "PBE/def2-SVP (test)" and ds[0].level_of_theory == ""
    assert np.array_equal(ds[0].positions, first.positions)
    assert ds.provenance.endswith("three test labels")
    ds.close()


def test_select_takes_the_most_uncertain_frames_apart_from_each_other():
    steps = np.array([10, 20, 30, 40, 50, 60])
    scores = np.array([0.1, 0.9, 0.8, 0.2, 0.7, 0.3])
    # 30 is too close to 20; 60, 40 and 10 too close to 50 or 20: only two are far enough apart
    assert select(steps, scores, 3, min_separation=20) == [1, 4]
    assert select(steps, scores, 3, min_separation=10) == [1, 2, 4]
    assert select(steps, scores, 2, min_separation=0) == [1, 2]
    # the random baseline ignores the scores but keeps the separation, reproducibly
    draws = [select(steps, scores, 3, 20, np.random.default_rng(s)) for s in range(20)]
    assert all(abs(steps[a] - steps[b]) >= 20 for d in draws for a in d for b in d if a != b)
    assert any(d != [1, 4] for d in draws) and all(len(d) >= 2 for d in draws)
    assert draws[3] == select(steps, scores, 3, 20, np.random.default_rng(3))


@pytest.fixture(scope="module")
def tiny_potential(tmp_path_factory, small_h5):
    from ase_so3.cli import main
    out = tmp_path_factory.mktemp("al") / "run"
    assert main(["train", "model=tfn", f"data={small_h5}", f"output={out}", "max_epochs=1",
                 "progress=false", "batch_size=4", "model_config.channels=4",
                 "model_config.num_layers=1", "seed=0"]) == 0
    return out / "potential.pt"


def _config(tiny_potential, small_h5, output, **kw):
    return ActiveLearningConfig(potential=str(tiny_potential), data=str(small_h5),
                                structure="ethanol", output=str(output), md_steps=24,
                                sample_every=4, per_round=3, min_separation=8, val_every=3,
                                max_forces_std=1e3, labeller="tests.integration.test_active:FlakyEMT",
                                finetune_epochs=1, **kw)


def test_active_learning_labels_appends_finetunes_and_resumes(tiny_potential, small_h5, tmp_path):
    out = tmp_path / "al"
    FlakyEMT.calls, FlakyEMT.budget = 0, 2  # the labeller stops after 2 of round 0's 3 labels
    with pytest.raises(RuntimeError, match="labeller stopped"):
        ActiveLearning(_config(tiny_potential, small_h5, out, rounds=1)).run(log=lambda *_: None)
    assert len(read(out / "round_00" / "labelled.extxyz", index=":")) == 2  # kept on disk
    FlakyEMT.budget = 10 ** 9
    progress = ActiveLearning(_config(tiny_potential, small_h5, out, rounds=1)).run(
        log=lambda *_: None)
    assert FlakyEMT.calls == 3  # the two labels on disk were not computed again
    progress = ActiveLearning(_config(tiny_potential, small_h5, out, rounds=2)).run(
        log=lambda *_: None)
    assert FlakyEMT.calls == 6 and len(progress["rounds"]) == 2  # round 0 not repeated
    r0, r1 = progress["rounds"]
    assert r1["from_potential"] == r0["potential"] and (out / "round_01" / "train" /
                                                        "potential.pt").is_file()
    ds, orig = HDF5Dataset(out / "data.h5"), HDF5Dataset(small_h5)
    assert len(ds) == len(orig) + 6
    assert len(ds.split("val")) == len(orig.split("val")) + 2  # every third label
    labelled = [ds[i] for i in range(len(orig), len(ds))]
    assert all(s.level_of_theory.startswith("FlakyEMT") for s in labelled)
    first = read(out / "round_00" / "labelled.extxyz", index=0)
    assert np.allclose(labelled[0].forces, first.get_forces())
    chosen = json.loads((out / "round_00" / "candidates.json").read_text())
    assert len(chosen["chosen"]) == 3 and r0["labelled"] == 3
    ds.close()
    orig.close()


def test_active_learning_refuses_an_unknown_labeller(tiny_potential, small_h5, tmp_path):
    from ase_so3.errors import ConfigError
    with pytest.raises(ConfigError, match="selection must be one of"):
        ActiveLearning(_config(tiny_potential, small_h5, tmp_path / "x", selection="best"))
    cfg = _config(tiny_potential, small_h5, tmp_path / "x", rounds=1)
    cfg.labeller = "gaussian"
    with pytest.raises(ConfigError, match="unknown labeller"):
        ActiveLearning(cfg).run(log=lambda *_: None)
    shutil.rmtree(tmp_path / "x")


def test_label_makes_a_data_set_from_one_structure_and_resumes(tmp_path):
    from ase_so3.cli import main
    out = tmp_path / "new.h5"
    FlakyEMT.calls, FlakyEMT.budget = 0, 3
    argv = ["label", "ethanol", "-o", str(out), "--count", "6", "--rattle", "0.05", "--val", "2",
            "--labeller", "tests.integration.test_active:FlakyEMT"]
    with pytest.raises(RuntimeError, match="labeller stopped"):
        main(argv)
    assert not out.exists() and len(read(f"{out}.labels.extxyz", index=":")) == 3
    FlakyEMT.budget = 10 ** 9
    assert main(argv) == 0
    assert FlakyEMT.calls == 6  # three read back, three computed
    ds = HDF5Dataset(out)
    assert len(ds) == 6 and len(ds.split("val")) == 2 and len(ds.split("train")) == 4
    assert ds[0].level_of_theory.startswith("FlakyEMT") and "Gaussian displacements" in ds.provenance
    ref = read(f"{out}.labels.extxyz", index=0)
    assert np.allclose(ds[0].forces, ref.get_forces())
    ds.close()
    assert main(["label", "ethanol", "-o", str(tmp_path / "x.h5"), "--count", "2",
                 "--val", "2", "--labeller", "emt"]) == 2  # no training set left: a user error
    other = ["label", "ethanol", "-o", str(out), "--count", "6", "--rattle", "0.06", "--val", "2",
             "--labeller", "emt"]
    assert main(other) == 2  # the labels on disk are of other structures: refused, kept
    assert len(read(f"{out}.labels.extxyz", index=":")) == 6
