"""Molecular dynamics in ASE with an ase_so3 potential: what ``ase-so3 md`` runs."""

from __future__ import annotations

import contextlib
import csv
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ase_so3.errors import ConfigError, MissingFileError


@dataclass
class MDResult:
    steps_done: int
    seconds: float
    steps_per_second: float
    drift_eV_per_atom_per_ps: float | None
    max_deviation_eV_per_atom: float
    trajectory: Path
    log: Path
    plot: Path | None
    interrupted: bool
    uncertain_frames: int = 0  # frames over ``uncertainty_threshold`` (saved or stopped at)
    stopped_uncertain: bool = False  # the run stopped at an uncertain frame


def maxwell_boltzmann(atoms, temperature_K: float, rng: np.random.Generator) -> None:
    """Set Maxwell–Boltzmann momenta at ``temperature_K`` with zero total momentum: the one
    velocity initialiser of the package."""
    from ase import units
    masses = atoms.get_masses()[:, None]
    p = rng.normal(size=(len(atoms), 3)) * np.sqrt(masses * units.kB * temperature_K)
    if len(atoms) > 1:
        p -= masses * (p.sum(0) / masses.sum())
    atoms.set_momenta(p)


def make_dynamics(atoms, ensemble: str, timestep_fs: float, temperature_K: float = 300.0,
                  friction_per_fs: float = 0.01, rng: np.random.Generator | None = None):
    """The one place integrators are built: ASE's velocity Verlet (``"nve"``) or Langevin
    (``"nvt"``; the centre of mass held by ASE's ``FixCom`` constraint, as ASE recommends)."""
    from ase import units
    from ase.md.langevin import Langevin
    from ase.md.verlet import VelocityVerlet
    if ensemble == "nve":
        return VelocityVerlet(atoms, timestep=timestep_fs * units.fs)
    if ensemble == "nvt":
        from ase.constraints import FixCom
        atoms.set_constraint(FixCom())
        return Langevin(atoms, timestep=timestep_fs * units.fs, temperature_K=temperature_K,
                        friction=friction_per_fs / units.fs,
                        rng=rng if rng is not None else np.random.default_rng(0), fixcm=False)
    raise ConfigError("ensemble must be 'nve' or 'nvt'")


def load_structure(spec: str):
    """A file in any ASE format (last frame), or the name of a shipped rMD17 molecule."""
    from ase.io import read

    from ase_so3.data import load_named_structure, named_structures
    path = Path(spec)
    if path.is_file():
        return read(path, index=-1)
    if spec in named_structures():
        return load_named_structure(spec)
    raise MissingFileError(f"{spec!r} is neither a structure file nor a shipped molecule "
                           f"({', '.join(named_structures())})")


def _plot(log_rows: list[dict], path: Path) -> Path | None:
    try:  # a Figure of its own: no pyplot state, the caller's backend left alone
        from matplotlib.figure import Figure
    except ImportError:
        return None
    t = [r["time_fs"] for r in log_rows]
    fig = Figure(figsize=(7, 6))
    ax1, ax2 = fig.subplots(2, 1, sharex=True)
    for key, label in (("total_eV", "total"), ("potential_eV", "potential"),
                       ("kinetic_eV", "kinetic")):
        e = np.asarray([r[key] for r in log_rows])
        ax1.plot(t, e - e[0], label=label)
    ax1.set_ylabel("energy − initial (eV)")
    ax1.legend()
    ax2.plot(t, [r["temperature_K"] for r in log_rows], color="tab:red")
    ax2.set_ylabel("temperature (K)")
    ax2.set_xlabel("time (fs)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return path


@contextlib.contextmanager
def _after_block_on_ctrl_c():
    """Ctrl-C inside the block takes effect when the block is done, so a frame is never half
    written (a trajectory with a torn last frame cannot be read back). Main thread only."""
    import os
    import signal
    import threading
    if (threading.current_thread() is not threading.main_thread()
            or signal.getsignal(signal.SIGINT) is None):  # a handler not set from Python: keep it
        yield
        return
    caught = []
    previous = signal.signal(signal.SIGINT, lambda *args: caught.append(args))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if caught:
        if callable(previous):
            previous(*caught[0])  # Python's default handler raises KeyboardInterrupt here
        elif previous == signal.SIG_DFL:
            os.kill(os.getpid(), signal.SIGINT)


def run_md(atoms, calculator, ensemble: str = "nve", temperature_K: float = 300.0,
           timestep_fs: float = 0.5, steps: int = 200, seed: int = 0, friction_per_fs: float = 0.01,
           output: str | Path = "md_out", interval: int = 1, traj_format: str = "traj",
           progress: bool = True, log_every: int = 10,
           uncertainty_threshold: float | None = None, on_uncertain: str = "save") -> MDResult:
    """Run NVE (velocity Verlet) or NVT (Langevin) MD; write trajectory, CSV log and plot.

    ``log.csv`` gets a row per step and is flushed to disk every ``log_every`` steps, so a run
    killed hard keeps its log up to then. Ctrl-C stops cleanly: frames written so far stay
    readable and the summary is still produced.

    With a calculator that reports uncertainty (an ``SO3Calculator`` of a calibrated potential)
    the log has ``energy_std_eV`` and ``max_forces_std_eV_per_A`` per step. A frame whose largest
    ``forces_std`` exceeds ``uncertainty_threshold`` (eV/Å) is written to ``uncertain.extxyz``
    (``on_uncertain="save"``) or ends the run there (``"stop"``, the frame saved as well).
    """
    from ase.io import Trajectory, write
    from tqdm import tqdm

    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    atoms = atoms.copy()
    atoms.calc = calculator
    rng = np.random.default_rng(seed)
    maxwell_boltzmann(atoms, temperature_K, rng)
    dyn = make_dynamics(atoms, ensemble, timestep_fs, temperature_K, friction_per_fs, rng)
    if on_uncertain not in ("save", "stop"):
        raise ConfigError(f"on_uncertain must be 'save' or 'stop', got {on_uncertain!r}")
    if uncertainty_threshold is not None and "forces_std" not in getattr(
            calculator, "implemented_properties", ()):
        raise ConfigError("uncertainty_threshold needs a calculator that reports forces_std: a "
                          "potential with an uncertainty calibration (ase-so3 calibrate)")
    uncertain_path = out / "uncertain.extxyz"
    if uncertain_path.exists():
        uncertain_path.unlink()
    uncertain = 0
    traj_path = out / ("trajectory.traj" if traj_format == "traj" else "trajectory.extxyz")
    if traj_path.exists():
        traj_path.unlink()
    traj = Trajectory(str(traj_path), "w", atoms) if traj_format == "traj" else None
    log_path = out / "log.csv"
    rows: list[dict] = []
    n = len(atoms)
    log_file = open(log_path, "w", newline="")
    log_writer = None

    def record() -> bool:
        """Log the step; True when the frame is over the uncertainty threshold."""
        epot, ekin = atoms.get_potential_energy(), atoms.get_kinetic_energy()
        nonlocal log_writer, uncertain
        rows.append({"step": dyn.nsteps, "time_fs": dyn.nsteps * timestep_fs,
                     "potential_eV": epot, "kinetic_eV": ekin, "total_eV": epot + ekin,
                     "temperature_K": atoms.get_temperature()})
        results = atoms.calc.results
        over = False
        if "forces_std" in results:
            worst = float(np.max(results["forces_std"]))
            rows[-1].update(energy_std_eV=float(results["energy_std"]),
                            max_forces_std_eV_per_A=worst)
            if uncertainty_threshold is not None and worst > uncertainty_threshold:
                over, uncertain = True, uncertain + 1
                write(uncertain_path, atoms, format="extxyz", append=True)
        if log_writer is None:
            log_writer = csv.DictWriter(log_file, fieldnames=list(rows[0]))
            log_writer.writeheader()
        log_writer.writerow(rows[-1])
        if dyn.nsteps % max(1, log_every) == 0:
            log_file.flush()
        if dyn.nsteps % interval == 0:
            if traj is not None:
                traj.write(atoms)
            else:
                write(traj_path, atoms, format="extxyz", append=True)
        return over

    bar = tqdm(total=steps, disable=not progress, unit="step", desc=f"MD {ensemble.upper()}",
               mininterval=0.5)
    interrupted = stopped = False
    start = time.perf_counter()
    try:
        with _after_block_on_ctrl_c():
            record()
        for _ in range(steps):
            dyn.run(1)
            with _after_block_on_ctrl_c():
                stopped = record() and on_uncertain == "stop"
            bar.update(1)
            if stopped:
                break
            bar.set_postfix(T=f"{rows[-1]['temperature_K']:.0f}K",
                            Etot=f"{rows[-1]['total_eV']:.4f}eV")
    except KeyboardInterrupt:
        interrupted = True
    finally:
        seconds = time.perf_counter() - start
        bar.close()
        log_file.close()
        if traj is not None:
            traj.close()
    total = np.asarray([r["total_eV"] for r in rows]) / n
    t_ps = np.asarray([r["time_fs"] for r in rows]) / 1000.0
    drift = float(np.polyfit(t_ps, total, 1)[0]) if ensemble == "nve" and len(rows) > 2 else None
    done = len(rows) - 1
    return MDResult(steps_done=done, seconds=seconds,
                    steps_per_second=done / seconds if seconds > 0 else float("nan"),
                    drift_eV_per_atom_per_ps=drift,
                    max_deviation_eV_per_atom=float(np.abs(total - total[0]).max()),
                    trajectory=traj_path, log=log_path, plot=_plot(rows, out / "energies.png"),
                    interrupted=interrupted, uncertain_frames=uncertain, stopped_uncertain=stopped)
