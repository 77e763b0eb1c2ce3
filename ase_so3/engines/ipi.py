"""``ase-so3 ipi-client``: serve an ase_so3 potential to a running i-PI server over its socket
protocol (UNIX or TCP), through ASE's :class:`~ase.calculators.socketio.SocketClient`.

i-PI owns the dynamics (path-integral, replica exchange, thermostats) and sends positions and
cell; the client returns energy, forces and (for 3-D periodic structures) the virial. Several
clients may serve one server: i-PI hands each bead to whichever client is free. i-PI does not
send species, so the client reads them from a structure file with the same atoms in the same
order as i-PI's initial configuration.
"""

from __future__ import annotations

import time

from ase_so3.errors import ASESO3Error


class IPIConnectionError(ASESO3Error, ConnectionError):
    """No i-PI server to connect to, or the server went away mid-run."""


def socket_path(unix: str) -> str:
    """Where i-PI puts the UNIX socket of ``<address>unix</address>`` (ASE's convention)."""
    from ase.calculators.socketio import actualunixsocketname
    return actualunixsocketname(unix)


def connect(unix: str | None = None, host: str = "localhost", port: int | None = None,
            wait_s: float = 10.0, poll_s: float = 0.2):
    """An ASE ``SocketClient`` connected to the server, retrying for up to ``wait_s`` seconds
    (a server started by the same script may not be listening yet)."""
    from ase.calculators.socketio import SocketClient
    where = f"UNIX socket {socket_path(unix)}" if unix else f"{host}:{port or 31415} (TCP)"
    deadline = time.monotonic() + max(0.0, wait_s)
    while True:
        try:
            return SocketClient(host=host, port=port, unixsocket=unix)
        except (FileNotFoundError, ConnectionRefusedError, ConnectionResetError) as exc:
            if time.monotonic() >= deadline:
                raise IPIConnectionError(
                    f"no i-PI server at {where} after {wait_s:g} s ({type(exc).__name__}). Start "
                    "i-PI first (i-pi input.xml), check that its <ffsocket> address and mode "
                    "match --unix/--host/--port, or wait longer with --wait") from None
            time.sleep(poll_s)


def serve(potential, structure, unix: str | None = None, host: str = "localhost",
          port: int | None = None, device: str = "cpu", dtype: str = "float64",
          wait_s: float = 10.0, log=print) -> int:
    """Answer force requests until the server ends; returns the number of evaluations."""
    from ase.calculators.socketio import SocketClosed

    from ase_so3.calculator import SO3Calculator
    from ase_so3.md import load_structure
    atoms = load_structure(str(structure))
    atoms.calc = SO3Calculator(potential, device=device, dtype=dtype)
    client = connect(unix=unix, host=host, port=port, wait_s=wait_s)
    periodic = bool(atoms.pbc.all())
    log(f"connected to i-PI ({'UNIX ' + socket_path(unix) if unix else f'{host}:{port}'}); "
        f"{len(atoms)} atoms, {'with' if periodic else 'no'} virial")
    done = 0
    try:
        for _ in client.irun(atoms, use_stress=periodic):
            done += 1
    except (BrokenPipeError, ConnectionResetError, SocketClosed, OSError) as exc:
        if client.state == "HAVEDATA":
            raise IPIConnectionError(
                f"the i-PI server went away after {done} force evaluations, before it took the "
                f"last forces ({type(exc).__name__}); its output says why") from None
        # i-PI ends a run by sending EXIT and closing its clients' sockets: an idle client that
        # is answering a STATUS poll at that moment sees a broken pipe instead of the EXIT (ASE
        # counts a closed socket as the end of the run likewise)
        log(f"i-PI closed the connection after {done} force evaluations")
        return done
    finally:
        client.close()
    log(f"i-PI ended the run after {done} force evaluations")
    return done


def add_parser(sub) -> None:
    p = sub.add_parser("ipi-client", help="serve a potential to a running i-PI server")
    p.add_argument("potential", help="potential file or shipped potential name")
    p.add_argument("structure", help="structure file with i-PI's atoms in i-PI's order (species), "
                                     "or a shipped rMD17 molecule name")
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--unix", metavar="NAME", help="i-PI's UNIX socket address (/tmp/ipi_NAME)")
    where.add_argument("--host", help="i-PI's host name for a TCP socket (with --port)")
    p.add_argument("--port", type=int, default=None, help="TCP port (i-PI's default 31415)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="float64", choices=["float32", "float64"])
    p.add_argument("--wait", type=float, default=10.0, metavar="SECONDS",
                   help="how long to retry connecting before giving up (default 10)")


def run_cli(args) -> int:
    import sys
    try:
        serve(args.potential, args.structure, unix=args.unix, host=args.host or "localhost",
              port=args.port, device=args.device, dtype=args.dtype, wait_s=args.wait)
    except IPIConnectionError as exc:
        print(f"ase-so3 ipi-client: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("ase-so3 ipi-client: interrupted; disconnected from the i-PI server", file=sys.stderr)
        return 130
    return 0
