"""Every shipped potential: loads by name, matches its model card, conserves energy in NVE; files
written by older versions (potentials, a training checkpoint) keep working."""

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from ase_so3 import SO3Calculator, checks, list_potentials, load_potential
from ase_so3.data import load_named_structure
from ase_so3.pretrained import model_card
from tests.conftest import SHARED

SHIPPED = list_potentials()


def test_shipped_potentials_have_cards():
    for name in SHIPPED:
        card = model_card(name)
        for key in ("model", "molecule", "config", "num_parameters", "data", "hyperparameters",
                    "training", "command", "test_errors", "test_errors_first100"):
            assert key in card, (name, key)


@pytest.mark.parametrize("name", SHIPPED)
def test_loads_by_name_and_gives_finite_results(name):
    card = model_card(name)
    atoms = load_named_structure(card["molecule"])
    atoms.calc = SO3Calculator(name)
    assert np.isfinite(atoms.get_potential_energy())
    assert np.isfinite(atoms.get_forces()).all()
    assert load_potential(name).metadata["pretrained_name"] == name


# Energy (eV) and force on atom 0 (eV/Å) of the molecule's built-in structure, float64, as
# version 0.1.0 (commit 98d45c4) computed them with the potentials it shipped (kept in
# tests/data/potentials-0.1.0/): options added to the model configs later must leave files written
# by older versions loading, with the same numbers.
OLD_FILES = Path(__file__).parents[1] / "data" / "potentials-0.1.0"
NUMBERS_0_1 = {
    "escn-rmd17-ethanol": (-4209.786098755823, [-0.71117205, -1.04490992, 1.77069062]),
    "se3_transformer-rmd17-ethanol": (-4209.777486565623, [-0.68703774, -1.15833607, 1.79521935]),
    "tfn-rmd17-ethanol": (-4209.7831029707195, [-0.62419502, -1.0695548, 1.7366004]),
    "escn-rmd17-aspirin": (-17617.68364354151, [-1.06560834, -0.70346969, 0.81404821]),
    "se3_transformer-rmd17-aspirin": (-17617.695489196987, [-0.98965639, -0.68054704, 0.85456206]),
    "tfn-rmd17-aspirin": (-17617.724387304865, [-0.98350049, -0.64747406, 0.89502197]),
}


@pytest.mark.parametrize("name", sorted(NUMBERS_0_1))
def test_potential_files_of_0_1_give_the_numbers_of_0_1(name):
    atoms = load_named_structure(name.split("-")[-1])
    atoms.calc = SO3Calculator(str(OLD_FILES / f"{name}.pt"), dtype="float64")
    energy, force0 = NUMBERS_0_1[name]
    assert atoms.get_potential_energy() == pytest.approx(energy, abs=1e-7)
    np.testing.assert_allclose(atoms.get_forces()[0], force0, atol=1e-7)


def test_a_checkpoint_of_0_2_1_resumes(small_h5, tmp_path, capsys):
    """A run folder written by 0.2.1 (commit e4aaba4) goes on from its epoch with today's trainer
    and configs, keeping its history, and ends in a potential that loads."""
    from ase_so3.cli import main
    run = tmp_path / "run"
    shutil.copytree(Path(__file__).parents[1] / "data" / "checkpoint-e4aaba4", run)
    assert main(["train", str(run / "config.yaml"), f"data={small_h5}", f"output={run}",
                 "max_epochs=3", "--resume"]) == 0
    assert "resumed from epoch 2" in capsys.readouterr().out
    with open(run / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3]
    assert float(rows[0]["val_forces_mae_meV_per_A"]) == pytest.approx(861.9549638875826)
    model = load_potential(run / "potential.pt")
    assert model.config.channels == 4 and model.metadata["train_config"]["max_epochs"] == 3


@pytest.mark.parametrize("name", SHIPPED)
def test_test_error_matches_model_card(name, tmp_path):
    card = model_card(name)
    mol = card["molecule"]
    test_npz = SHARED / "rmd17" / f"rmd17_{mol}_test_01.npz"  # the first 100 test frames
    from ase_so3.training.convert import convert_to_hdf5
    from ase_so3.training.evaluate import evaluate_potential
    train_npz = SHARED / "rmd17" / f"rmd17_{mol}_train_01.npz"
    convert_to_hdf5([train_npz, test_npz], tmp_path / "d.h5", n_train=30, n_val=10, n_test=100)
    m = evaluate_potential(name, tmp_path / "d.h5", split="test")
    full = card["test_errors"]["forces_mae_meV_per_A"]
    first100 = card["test_errors_first100"]["forces_mae_meV_per_A"]
    assert abs(m["forces_mae_meV_per_A"] - first100) < 1e-6 * first100  # reproduced exactly
    assert abs(m["forces_mae_meV_per_A"] - full) < 0.10 * full  # within 10% of the full test set


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_potential_conserves_energy_in_nve(name):
    atoms = load_named_structure(model_card(name)["molecule"])
    res = checks.nve_drift(load_potential(name), atoms, steps=100, timestep_fs=0.5)
    assert abs(res["drift_eV_per_atom_per_ps"]) < 1e-2
    assert res["max_deviation_eV_per_atom"] < 5e-3


# the self-check tests code more than weights: the molecules of up to 12 atoms cover every model's
# code in a fraction of the time, the larger ones run with -m slow (each potential's own weights
# are checked on its molecule by the tests above and by the NVE test)
SELF_CHECK_SLOW = {n for n in SHIPPED if len(load_named_structure(model_card(n)["molecule"])) > 12}


@pytest.mark.parametrize("name", [
    pytest.param(n, marks=pytest.mark.slow) if n in SELF_CHECK_SLOW else n for n in SHIPPED])
def test_shipped_potential_passes_self_check(name):
    from ase_so3.selfcheck import format_table, run_checks
    # 40 + 80 NVE steps: NVE over longer runs is test_shipped_potential_conserves_energy_in_nve
    rows = run_checks(load_potential(name), nve_steps=40)
    assert all(r.passed for r in rows), format_table(rows)


# Energy and forces of every shipped potential on its molecule's built-in structure, float64, as
# ase_so3 0.2.1 computed them at commit e4aaba4: faster formulations of a model (the training
# throughput work) must give the same numbers to round-off.
NUMBERS_0_2_1 = json.loads((Path(__file__).parents[1] / "data" / "shipped-0.2.1-numbers.json")
                           .read_text())["potentials"]


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_potentials_give_the_numbers_of_0_2_1(name):
    ref = NUMBERS_0_2_1[name]
    atoms = load_named_structure(model_card(name)["molecule"])
    atoms.calc = SO3Calculator(name, dtype="float64")
    assert atoms.get_potential_energy() == pytest.approx(ref["energy"], abs=1e-9)
    np.testing.assert_allclose(atoms.get_forces(), ref["forces"], rtol=0, atol=1e-9)
