"""i-PI: a 4-bead PIMD of ethanol served by one, then two, ``ase-so3 ipi-client`` processes over a
UNIX socket, and by the in-process ``ffdirect`` driver; i-PI's bead energies equal a direct
``SO3Calculator`` evaluation of the bead geometries; a client without a server fails fast; an
idle client whose server closes mid-poll ends cleanly."""

import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
from ase.io import read

pytest.importorskip("ipi")

from ase_so3 import SO3Calculator  # noqa: E402
from tests.conftest import make_model  # noqa: E402

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "ipi"
STEPS = 3


def _input(tmp: Path, forcefield: str) -> Path:
    xml = (EXAMPLE / "input.xml").read_text()
    start, end = xml.index("<ffsocket"), xml.index("</ffsocket>") + len("</ffsocket>")
    xml = xml[:start] + forcefield + xml[end:]
    xml = (xml.replace("<total_steps>2000</total_steps>", f"<total_steps>{STEPS}</total_steps>")
              .replace('nbeads="8"', 'nbeads="4"')
              .replace('stride="100" format', 'stride="1" format')
              .replace("<properties stride=\"10\" filename=\"out\">",
                       "<properties stride=\"1\" filename=\"beads\">[ step, "
                       "bead_potentials{electronvolt} ]</properties>\n"
                       "    <properties stride=\"1\" filename=\"out\">"))
    (tmp / "input.xml").write_text(xml)
    (tmp / "init.xyz").write_text((EXAMPLE / "init.xyz").read_text())
    return tmp / "input.xml"


def _env():
    root = str(Path(__file__).resolve().parents[2])
    return {**os.environ, "PYTHONPATH": root + os.pathsep + os.environ.get("PYTHONPATH", ""),
            "OMP_NUM_THREADS": "1"}


def _check_beads(tmp: Path, potential: Path) -> None:
    """Bead energies i-PI printed at the last step against our calculator on the geometries
    i-PI wrote at that step."""
    rows = np.loadtxt(tmp / "pimd.beads", ndmin=2)
    assert rows[-1, 0] == STEPS
    calc = SO3Calculator(str(potential))
    for bead in range(4):
        atoms = read(tmp / f"pimd.pos_{bead}.xyz", index=-1)
        atoms.pbc = False
        atoms.calc = calc
        assert abs(atoms.get_potential_energy() - rows[-1, 1 + bead]) < 1e-5


@pytest.fixture()
def potential(tmp_path):
    path = tmp_path / "tiny.pt"
    make_model("escn", channels=4, num_layers=1, lmax=1, mmax=1).save(path)
    return path


@pytest.mark.parametrize("clients", [1, 2])
def test_pimd_with_socket_clients(tmp_path, potential, clients):
    name = f"so3test_{uuid.uuid4().hex[:8]}"
    forcefield = (f'<ffsocket name="so3" mode="unix" pbc="false"><address>{name}</address>'
                  "<latency>1e-4</latency></ffsocket>")
    xml = _input(tmp_path, forcefield)
    server = subprocess.Popen(["i-pi", xml.name], cwd=tmp_path, env=_env(),
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        procs = [subprocess.Popen([sys.executable, "-m", "ase_so3.cli", "ipi-client",
                                   str(potential), "init.xyz", "--unix", name, "--wait", "60"],
                                  cwd=tmp_path, env=_env(), stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, text=True) for _ in range(clients)]
        outputs = [p.communicate(timeout=300)[0] for p in procs]
        assert all(p.returncode == 0 for p in procs), outputs
        assert server.wait(timeout=120) == 0
    finally:
        if server.poll() is None:
            server.kill()
    served = [int(o.split("after ")[-1].split()[0]) for o in outputs]
    assert sum(served) == 4 * (STEPS + 1)
    if clients == 2:
        assert all(n > 0 for n in served)  # i-PI used both
    _check_beads(tmp_path, potential)


def test_pimd_with_the_in_process_driver(tmp_path, potential):
    from ase_so3.engines import ipi_driver
    forcefield = (f'<ffdirect name="so3" pbc="false"><pes>custom</pes>'
                  f"<pes_path>{ipi_driver.__file__}</pes_path><batch_size>4</batch_size>"
                  f"<parameters>{{template: init.xyz, potential: {potential}}}</parameters>"
                  "</ffdirect>")
    xml = _input(tmp_path, forcefield)
    run = subprocess.run(["i-pi", xml.name], cwd=tmp_path, env=_env(), capture_output=True,
                         text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    _check_beads(tmp_path, potential)


def test_client_without_server_fails_fast_and_clearly(potential, tmp_path):
    start = time.monotonic()
    run = subprocess.run([sys.executable, "-m", "ase_so3.cli", "ipi-client", str(potential),
                          "ethanol", "--unix", f"nobody_{uuid.uuid4().hex[:8]}", "--wait", "1"],
                         env=_env(), capture_output=True, text=True, timeout=120)
    assert run.returncode == 1
    assert "no i-PI server at UNIX socket" in run.stderr and "Traceback" not in run.stderr
    assert time.monotonic() - start < 60


def _fake_server(name: str, closed: threading.Event):
    """A server that polls its client once and closes: what an idle client sees when i-PI ends
    the run while that client is answering a STATUS poll."""
    from ase_so3.engines.ipi import socket_path
    path = socket_path(name)
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen(1)

    def poll_and_close():
        conn, _ = server.accept()
        conn.sendall(b"STATUS".ljust(12))
        conn.close()
        server.close()
        os.unlink(path)
        closed.set()
    return threading.Thread(target=poll_and_close, daemon=True)


def test_idle_client_ends_cleanly_when_the_server_closes_mid_poll(potential, tmp_path):
    from ase_so3.engines.ipi import serve
    closed = threading.Event()
    name = f"so3fake_{uuid.uuid4().hex[:8]}"
    thread = _fake_server(name, closed)
    thread.start()
    lines = []

    def log(msg):  # the client answers the poll only after the server has gone
        lines.append(msg)
        assert closed.wait(30)
        time.sleep(0.1)

    assert serve(potential, EXAMPLE / "init.xyz", unix=name, wait_s=10, log=log) == 0
    assert lines[-1] == "i-PI closed the connection after 0 force evaluations"
