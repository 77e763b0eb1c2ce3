"""``ase-so3 check`` passes on sound models and fails, on the right row, on broken ones."""

import torch

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
