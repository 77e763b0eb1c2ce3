"""``ase-so3 check`` passes on sound models and fails, on the right row, on broken ones; its NVE
row runs on a recorded training structure and catches non-conservative forces."""

import numpy as np
import torch

from ase_so3 import SO3Calculator
from ase_so3.cli import main
from ase_so3.potentials.blocks import PolynomialEnvelope
from ase_so3.selfcheck import default_structures, run_checks
from tests.conftest import make_model


def _save_tiny(path, spec="escn"):
    model = make_model(spec, channels=4, num_layers=1, lmax=1, mmax=1)
    model.save(path)
    return model


def test_check_passes_on_a_sound_model(tmp_path, capsys):
    _save_tiny(tmp_path / "ok.pt")
    assert main(["check", str(tmp_path / "ok.pt"), "--nve-steps", "20"]) == 0
    out = capsys.readouterr().out
    assert "0 failed" in out and "stress vs finite differences" in out


def test_default_structures_cover_the_hard_cases():
    model = make_model("tfn")
    s = default_structures(model)
    cell = s["periodic cell"]
    assert cell.pbc.all() and max(cell.cell.lengths()) < 2 * model.cutoff
    assert list(s["slab"].pbc) == [True, True, False]
    assert abs(s["far from origin"].positions).min() > 1e3


def test_check_flags_a_discontinuous_cutoff(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(PolynomialEnvelope, "forward", lambda self, r: torch.ones_like(r))
    _save_tiny(tmp_path / "cliff.pt")
    assert main(["check", str(tmp_path / "cliff.pt"), "--nve-steps", "5"]) == 1
    failed = [line for line in capsys.readouterr().out.splitlines() if line.endswith("FAIL")]
    assert failed and all("continuity at cutoff" in line for line in failed)


def test_check_flags_a_model_that_sees_cartesian_coordinates():
    model = make_model("tfn", channels=4, num_layers=1, lmax=1)
    original = type(model).node_energies

    def broken(self, graph, species, vectors):
        return original(self, graph, species, vectors) + 1e-3 * graph["positions"][:, 2] ** 2

    model.node_energies = broken.__get__(model)
    structures = default_structures(model)
    rows = run_checks(model, {"molecule": structures["molecule"]}, nve_steps=5)
    failed = {r.check for r in rows if not r.passed}
    assert {"energy rotation", "energy reflection", "forces rotation"} <= failed
    assert "forces vs finite differences" not in failed  # still conservative


def test_check_runs_dynamics_on_a_recorded_training_structure(tmp_path, capsys):
    model = make_model("escn", channels=4, num_layers=1, lmax=1, mmax=1)
    from ase_so3.data import load_named_structure
    ethanol = load_named_structure("ethanol")
    model.metadata = {"reference_structures": [{
        "numbers": ethanol.numbers.tolist(), "positions": ethanol.positions.tolist(),
        "cell": np.zeros((3, 3)).tolist(), "pbc": [False] * 3}]}
    structures = default_structures(model)
    first = next(iter(structures))
    assert first == "training structure"
    assert np.allclose(structures[first].positions, ethanol.positions)
    assert "molecule" in structures  # the random cluster stays, for the symmetry rows
    rows = run_checks(model, nve_steps=20)
    nve = [r for r in rows if r.check.startswith("NVE")][0]
    assert nve.structure == "training structure" and nve.passed


def test_nve_row_still_fails_a_non_conservative_force_field(monkeypatch):
    """A torque added to the forces pumps energy in steadily: the drift is far above what the run
    resolves, so the scaled tolerance does not hide it."""
    model = make_model("escn", channels=4, num_layers=1, lmax=1, mmax=1)
    original = SO3Calculator.calculate

    def with_torque(self, atoms=None, properties=("energy",), system_changes=None):
        original(self, atoms, properties, system_changes or [])
        r = self.atoms.positions - self.atoms.positions.mean(0)
        self.results["forces"] = self.results["forces"] + 2.0 * np.cross([0, 0, 1.0], r)

    monkeypatch.setattr(SO3Calculator, "calculate", with_torque)
    structures = default_structures(model)
    rows = run_checks(model, {"molecule": structures["molecule"]}, nve_steps=100)
    nve = [r for r in rows if r.check.startswith("NVE")][0]
    assert not nve.passed
