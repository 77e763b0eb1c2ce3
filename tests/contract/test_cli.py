"""The ase-so3 command line."""

import subprocess
import sys

import pytest
from ase.io import read

from ase_so3.cli import main


def test_info(capsys):
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert "ase_so3" in out and "tfn" in out and "escn" in out and "se3_transformer" in out


def test_md_writes_trajectory_log_and_plot(tmp_path, capsys):
    code = main(["md", "ethanol", "--untrained", "tfn", "--steps", "20", "--output", str(tmp_path),
                 "--quiet", "--interval", "5"])
    assert code == 0
    out = capsys.readouterr().out
    assert "NVE energy drift" in out and "steps/s" in out
    frames = read(tmp_path / "trajectory.traj", ":")
    assert len(frames) == 5 and len(frames[0]) == 9
    assert (tmp_path / "energies.png").stat().st_size > 1000
    assert len((tmp_path / "log.csv").read_text().splitlines()) == 22


def test_plots_leave_the_matplotlib_backend_alone(tmp_path):
    """The MD energy plot and the parity plot draw on Figures of their own: a notebook user's
    backend is not switched."""
    import matplotlib
    import numpy as np

    from ase_so3.md import _plot
    from ase_so3.training.evaluate import _parity_plot
    before = matplotlib.get_backend()
    matplotlib.use("svg")
    try:
        rows = [{"time_fs": t, "total_eV": 0.0, "potential_eV": -t, "kinetic_eV": t,
                 "temperature_K": 300.0} for t in range(5)]
        _plot(rows, tmp_path / "md.png")
        x = np.linspace(0, 1, 20)
        _parity_plot({"energy_per_atom": (x, x), "forces": (x, x)}, tmp_path / "parity.png")
        assert matplotlib.get_backend() == "svg"
    finally:
        matplotlib.use(before)
    assert (tmp_path / "md.png").stat().st_size > 1000
    assert (tmp_path / "parity.png").stat().st_size > 1000


def test_user_errors_are_one_line_and_bugs_keep_their_traceback(tmp_path, capsys, monkeypatch):
    """The CLI turns the project's own errors (what a user can fix) into one line and exit code
    2; any other exception is a bug and propagates with its traceback."""
    import ase_so3.cli as cli
    config = tmp_path / "c.yaml"
    config.write_text("model: escn\nkernels: fast\n")
    assert main(["train", str(config), "data=x.h5"]) == 2
    err = capsys.readouterr().err
    assert err.strip().startswith("ase-so3 train: error: kernels must be auto, cpp or torch")
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1

    def broken(args):
        raise ValueError("a bug, not a user error")
    monkeypatch.setitem(cli.__dict__, "_cmd_info", broken)
    with pytest.raises(ValueError, match="a bug"):
        main(["info"])


def test_md_nvt_extxyz(tmp_path):
    assert main(["md", "ethanol", "--untrained", "escn", "--ensemble", "nvt", "--steps", "6",
                 "--output", str(tmp_path), "--quiet", "--format", "extxyz", "--interval", "3"]) == 0
    assert len(read(tmp_path / "trajectory.extxyz", ":")) == 3


def test_md_bad_structure_is_a_clear_error(capsys):
    assert main(["md", "no-such-molecule", "--untrained", "tfn", "--quiet"]) == 2
    assert "neither a structure file nor a shipped molecule" in capsys.readouterr().err


def test_console_script_runs():
    res = subprocess.run([sys.executable, "-m", "ase_so3.cli", "info"], capture_output=True,
                         text=True, timeout=120)
    assert res.returncode == 0 and "registered models" in res.stdout


@pytest.mark.parametrize("kernels", ["torch", "cpp"])
def test_scaling_benchmark_runs_tiny(capsys, tmp_path, kernels):
    out = tmp_path / "s.json"
    assert main(["benchmark", "scaling", "--edges", "200", "--channels", "4", "--lmax", "1", "2",
                 "--repeats", "1", "--kernels", kernels, "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "TFN/eSCN" in text and "fitted cost" in text
    import json
    data = json.loads(out.read_text())
    assert [r["lmax"] for r in data["rows"]] == [1, 2] and data["kernels"] == kernels
    assert all(r["tfn"]["seconds"] > 0 and r["escn"]["seconds"] > 0 for r in data["rows"])


def test_md_ctrl_c_keeps_the_trajectory(tmp_path):
    import signal
    import time
    out = tmp_path / "md"
    # output to files, not pipes: a pipe nobody reads until the end can fill and block the run
    with open(tmp_path / "stdout", "w") as so, open(tmp_path / "stderr", "w") as se:
        proc = subprocess.Popen([sys.executable, "-m", "ase_so3.cli", "md", "ethanol",
                                 "--untrained", "tfn", "--steps", "100000", "--output", str(out),
                                 "--quiet"], stdout=so, stderr=se, text=True,
                                # a shell's background job ignores SIGINT, and a child that starts
                                # with SIGINT ignored never raises KeyboardInterrupt: restore it
                                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    log = out / "trajectory.traj"
    try:
        # interrupt only once the MD loop runs (a loaded machine may take long to import torch)
        deadline = time.time() + 600
        while time.time() < deadline and proc.poll() is None and (
                not log.exists() or log.stat().st_size < 20000):
            time.sleep(0.5)
        assert proc.poll() is None, "md exited before it was interrupted"
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=300)
    except BaseException:
        proc.kill()
        proc.wait()
        raise AssertionError("md did not stop on SIGINT; stderr:\n"
                             + (tmp_path / "stderr").read_text()[-3000:])
    stdout = (tmp_path / "stdout").read_text()
    assert proc.returncode == 130
    assert "interrupted after" in stdout
    frames = read(log, ":")
    assert len(frames) > 5 and len(frames[-1]) == 9
    assert (out / "log.csv").is_file() and (out / "energies.png").is_file()
