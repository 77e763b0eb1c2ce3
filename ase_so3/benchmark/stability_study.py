"""``ase-so3 benchmark stability``: MD stability of a potential as in Fu et al., "Forces are not
enough" (2022): NVT at 500 K from test structures, time until collapse and the distance
histogram h(r) against the reference structures, several replicas in one batched evaluation.

    ase-so3 benchmark stability --potential escn-rmd17-ethanol --data runs/rmd17_ethanol_01.h5 \\
        --replicas 3 --ps 50 --output runs/stability/escn-ethanol [--resume]

Dynamics: Langevin BAOAB (Leimkuhler and Matthews), 0.5 fs, friction 0.01 /fs, 500 K, every
replica started from its own test structure with its own Maxwell-Boltzmann velocities; the forces
of all replicas come from one ``calculate_many`` pass per step. A replica collapses when a bond
(a pair closer than 1.25 x the sum of covalent radii in its starting structure) deviates from its
starting length by more than 0.5 Å (Fu et al.), or when its energy or positions stop being
finite; it is then frozen and its time recorded. h(r) is the histogram of all interatomic
distances (0-10 Å, 0.1 Å bins, normalised to unit area) over the frames before collapse, sampled
every 10 fs; its MAE is the integral of |h(r) - h_ref(r)| over r, with h_ref from the structures
of the data set's ``--reference-split`` (default ``train``, what the potential learned from).

State (positions, velocities, RNG, histograms, collapse times) is written atomically to
``state.npz`` every ``--checkpoint-ps``; ``--resume`` continues from it exactly. Result:
``stability.json``; ``--report OUT DIR [DIR ...]`` writes ``OUT/stability.md`` and
``OUT/stability_hr.png`` (h(r) overlays) and ``OUT/stability_time.png`` (stable time per
replica and run) from several finished runs.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from ase_so3.benchmark.stability import bonds_of
from ase_so3.io_utils import atomic_path

BINS = np.linspace(0.0, 10.0, 101)


def distance_histogram(positions: np.ndarray) -> np.ndarray:
    """Counts of the pairwise distances of one structure in :data:`BINS`."""
    d = np.linalg.norm(positions[:, None] - positions[None], axis=-1)
    iu = np.triu_indices(len(positions), k=1)
    return np.histogram(d[iu], bins=BINS)[0].astype(np.float64)


def normalised(counts: np.ndarray) -> np.ndarray:
    total = counts.sum() * (BINS[1] - BINS[0])
    return counts / total if total > 0 else counts


def hr_mae(h: np.ndarray, h_ref: np.ndarray) -> float:
    """∫ |h(r) - h_ref(r)| dr of two normalised histograms (0 to 2)."""
    return float(np.abs(normalised(h) - normalised(h_ref)).sum() * (BINS[1] - BINS[0]))


def reference_histogram(data, split: str = "train") -> np.ndarray:
    from ase_so3.training.hdf5 import HDF5Dataset
    ds = HDF5Dataset(data)
    try:
        return sum(distance_histogram(ds[int(i)].positions) for i in ds.split(split))
    finally:
        ds.close()


class BatchedLangevin:
    """BAOAB Langevin dynamics of several molecules with one batched force call per step.

    Not torch-sim's ``nvt_langevin`` (the same BAOAB splitting), because a replica that collapses
    must leave the batch: torch-sim 0.3 integrates every system of its state at every step, so a
    collapsed molecule would go on costing force calls and, once its positions stop being
    finite, fail the input check of the whole batch. Exact resume also needs the noise from a
    generator whose state is saved (``state.npz``), not torch's global one."""

    def __init__(self, calc, images, temperature_K: float, timestep_fs: float,
                 friction_per_fs: float, seed: int):
        from ase import units
        self.calc, self.images = calc, [a.copy() for a in images]
        self.dt = timestep_fs * units.fs
        self.kT = units.kB * temperature_K
        self.c1 = float(np.exp(-friction_per_fs / units.fs * self.dt))
        from ase_so3.md import maxwell_boltzmann
        self.rng = np.random.default_rng(seed)
        self.masses = [a.get_masses()[:, None] for a in self.images]
        for a in self.images:
            maxwell_boltzmann(a, temperature_K, self.rng)
        self.v = [a.get_velocities() for a in self.images]
        self.active = np.ones(len(self.images), dtype=bool)
        self.energy = np.zeros(len(self.images))
        self.forces = self._forces()

    def _forces(self) -> list[np.ndarray]:
        idx = np.nonzero(self.active)[0]
        out = [np.zeros_like(a.positions) for a in self.images]
        if len(idx):
            res = self.calc.calculate_many([self.images[i] for i in idx], batch_size=len(idx))
            for i, r in zip(idx, res):
                out[i], self.energy[i] = r["forces"], r["energy"]
        return out

    def step(self) -> None:
        c2 = np.sqrt(1.0 - self.c1 ** 2)
        half = 0.5 * self.dt
        for i in np.nonzero(self.active)[0]:
            a, m = self.images[i], self.masses[i]
            self.v[i] = self.v[i] + half * self.forces[i] / m                       # B
            a.positions = a.positions + half * self.v[i]                           # A
            noise = self.rng.normal(size=self.v[i].shape) * np.sqrt(self.kT / m)
            self.v[i] = self.c1 * self.v[i] + c2 * noise                             # O
            a.positions = a.positions + half * self.v[i]                           # A
        self.forces = self._forces()
        for i in np.nonzero(self.active)[0]:
            self.v[i] = self.v[i] + half * self.forces[i] / self.masses[i]           # B

    def state(self) -> dict:
        return {"positions": [a.positions.copy() for a in self.images], "v": self.v,
                "active": self.active.copy(), "rng": self.rng.bit_generator.state}

    def restore(self, state: dict) -> None:
        for a, p in zip(self.images, state["positions"]):
            a.positions = p
        self.v = [np.array(v) for v in state["v"]]
        self.active = np.array(state["active"], dtype=bool)
        self.rng.bit_generator.state = state["rng"]
        self.forces = self._forces()


def run(args, log=print) -> dict:
    from ase_so3.calculator import SO3Calculator
    from ase_so3.training.hdf5 import HDF5Dataset
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    ds = HDF5Dataset(args.data)
    test = ds.split("test")
    starts = [int(test[k]) for k in np.linspace(0, len(test) - 1, args.replicas).astype(int)]
    images = [ds[i].to_atoms() for i in starts]
    ds.close()
    for a in images:
        a.calc = None
    calc = SO3Calculator(args.potential, device=args.device, dtype=args.dtype)
    identity = potential_identity(args.potential)
    dyn = BatchedLangevin(calc, images, args.temperature, args.timestep, args.friction, args.seed)
    bonds = [bonds_of(a) for a in images]
    steps_total = int(round(args.ps * 1000 / args.timestep))
    sample = max(1, int(round(10.0 / args.timestep)))
    check = max(1, int(round(args.checkpoint_ps * 1000 / args.timestep)))
    step, collapse = 0, [None] * len(images)
    reasons = [""] * len(images)
    hist = np.zeros((len(images), len(BINS) - 1))
    state_path = out / "state.npz"
    if args.resume and state_path.is_file():
        saved = np.load(state_path, allow_pickle=False)
        meta = json.loads(str(saved["meta"]))
        if meta.get("potential_checksum") not in (None, identity["potential_checksum"]):
            raise SystemExit(
                f"{state_path} was written by a run of a potential with checksum "
                f"{meta['potential_checksum']}, but {args.potential} now has checksum "
                f"{identity['potential_checksum']} (other weights under the same name?). Give a "
                "new --output, or remove state.npz to start again")
        dyn.restore({"positions": list(saved["positions"]), "v": list(saved["v"]),
                     "active": saved["active"], "rng": meta["rng"]})
        step, collapse, reasons = meta["step"], meta["collapse"], meta["reasons"]
        hist = saved["hist"]
        log(f"resumed at {step * args.timestep / 1000:g} ps")
    seconds, done = 0.0, 0
    while step < steps_total and dyn.active.any():
        start = time.perf_counter()
        dyn.step()
        seconds += time.perf_counter() - start
        step += 1
        done += 1
        for i in np.nonzero(dyn.active)[0]:
            pos = dyn.images[i].positions
            if not (np.all(np.isfinite(pos)) and np.isfinite(dyn.energy[i])):
                reasons[i] = "non-finite energy or positions"
            else:
                (pairs, length) = bonds[i]
                dev = np.abs(np.linalg.norm(pos[pairs[:, 0]] - pos[pairs[:, 1]], axis=1) - length)
                if len(dev) and dev.max() > args.bond_tolerance:
                    reasons[i] = f"bond {pairs[dev.argmax()].tolist()} deviated by {dev.max():.2f} Å"
            if reasons[i]:
                collapse[i] = step * args.timestep / 1000
                dyn.active[i] = False
            elif step % sample == 0:
                hist[i] += distance_histogram(pos)
        if step % check == 0 or step == steps_total or not dyn.active.any():
            _save_state(state_path, dyn, step, collapse, reasons, hist, identity)
            log(f"{step * args.timestep / 1000:g} ps, {int(dyn.active.sum())} of {len(images)} "
                "replicas intact")
    h_ref = reference_histogram(args.data, args.reference_split)
    stable = [c if c is not None else step * args.timestep / 1000 for c in collapse]
    result = {"potential": str(args.potential), **identity, "data": str(args.data),
              "start_indices": starts,
              "temperature_K": args.temperature, "timestep_fs": args.timestep,
              "max_ps": args.ps, "stable_ps": stable, "collapsed": [c is not None for c in collapse],
              "reasons": reasons, "hr_mae": [hr_mae(h, h_ref) if h.sum() else None for h in hist],
              "hr_mae_all": hr_mae(hist.sum(0), h_ref), "h": normalised(hist.sum(0)).tolist(),
              "h_ref": normalised(h_ref).tolist(), "bins": BINS.tolist(),
              "steps_per_s_batch": done / seconds if seconds else None}
    with atomic_path(out / "stability.json") as tmp:
        tmp.write_text(json.dumps(result, indent=1))
    return result


def potential_identity(potential) -> dict:
    """Which weights ran: the potential file's checksum and the ase_so3 release running it (a
    shipped name points to other weights in another release)."""
    import ase_so3
    from ase_so3.potentials.serialization import read_potential_file
    path = Path(potential)
    if not path.is_file():
        from ase_so3.pretrained import potential_path
        path = potential_path(str(potential))
    return {"potential_checksum": read_potential_file(path).get("checksum"),
            "ase_so3_version": ase_so3.__version__}


def _save_state(path: Path, dyn: BatchedLangevin, step, collapse, reasons, hist,
                identity: dict) -> None:
    meta = {"step": step, "collapse": collapse, "reasons": reasons,
            "rng": dyn.rng.bit_generator.state, **identity}
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, positions=np.stack([a.positions for a in dyn.images]),
                     v=np.stack(dyn.v), active=dyn.active, hist=hist, meta=json.dumps(meta))


def write_report(output, folders) -> Path:
    """``stability.md`` (a row per run folder: replicas, stable time, collapses, h(r) MAE, speed),
    ``stability_hr.png`` (h(r) of each run over the reference, a panel per data set) and
    ``stability_time.png`` (stable time of every replica, a row per run)."""
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    runs: dict[str, dict] = {}
    for f in folders:
        r = json.loads((Path(f) / "stability.json").read_text())
        name = Path(f).name  # the same run name from two releases: both, told apart
        if name in runs:
            name = f"{name} ({r.get('ase_so3_version') or Path(f).parent.name})"
        runs[name] = r
    lines = ["| run | potential | release | T (K) | replicas | ps each | stable ps (each) | "
             "collapsed | h(r) MAE | steps/s (all replicas) |", "|---" * 10 + "|"]
    for name, r in runs.items():
        speed = r["steps_per_s_batch"]
        stable = ", ".join(f"{t:g}" for t in r["stable_ps"])
        temperature = r.get("temperature_K")
        lines.append(f"| {name} | `{r['potential']}` | {r.get('ase_so3_version', '-')} | "
                     f"{'-' if temperature is None else format(temperature, 'g')} | "
                     f"{len(r['stable_ps'])} | {r['max_ps']:g} | "
                     f"{stable} | {sum(r['collapsed'])} | {r['hr_mae_all']:.3f} | "
                     f"{'-' if speed is None else format(speed, '.1f')} |")
    path = output / "stability.md"
    with atomic_path(path) as tmp:
        tmp.write_text("\n".join(lines) + "\n")
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return path
    panels: dict[str, list] = {}  # one panel per data set: each has its own reference h(r)
    for name, r in runs.items():
        panels.setdefault(Path(r["data"]).stem, []).append((name, r))
    ncol = min(len(panels), 4)
    nrow = -(-len(panels) // ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(5 * ncol, 3.6 * nrow), squeeze=False)
    centres = 0.5 * (BINS[1:] + BINS[:-1])
    for ax, (data, members) in zip(axes.flat, panels.items()):
        ax.plot(centres, members[0][1]["h_ref"], color="black", lw=2,
                label="reference structures")
        for name, r in members:
            ax.plot(centres, r["h"], lw=1, label=f"{name} (h(r) MAE {r['hr_mae_all']:.3f})")
        ax.set_xlabel("interatomic distance r (Å)")
        ax.set_ylabel("h(r) (1/Å)")
        ax.set_title(data, fontsize=10)
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(panels):]:
        ax.set_visible(False)
    fig.tight_layout()
    with atomic_path(output / "stability_hr.png") as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)
    _plot_stable_time(plt, runs, output / "stability_time.png")
    return path


def _plot_stable_time(plt, runs: dict, path: Path) -> None:
    """Stable time of every replica (dots) against the length of its run (bar), a row per run."""
    names = list(runs)
    fig, ax = plt.subplots(figsize=(7, 0.5 * len(names) + 1.4))
    for y, name in enumerate(names):
        r = runs[name]
        ax.barh(y, r["max_ps"], color="0.88", edgecolor="0.6", height=0.7,
                label="length of the run" if y == 0 else None)
        n = len(r["stable_ps"])
        for k, (t, collapsed) in enumerate(zip(r["stable_ps"], r["collapsed"])):
            dy = (k - (n - 1) / 2) * 0.5 / max(n, 2)  # replicas side by side within the bar
            ax.plot(t, y + dy, "x" if collapsed else "o", color="C3" if collapsed else "C0",
                    ms=5, ls="none")
    ax.plot([], [], "o", color="C0", ls="none", label="replica intact at the end")
    ax.plot([], [], "x", color="C3", ls="none", label="replica collapsed")
    ax.set_yticks(range(len(names)), names)
    ax.invert_yaxis()
    ax.set_xlabel("time until collapse (ps)")
    ax.set_xlim(0, max(r["max_ps"] for r in runs.values()) * 1.05)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ase-so3 benchmark stability",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--potential", required=True, help="potential file or shipped name")
    p.add_argument("--data", required=True, help="HDF5 data set with test and reference splits")
    p.add_argument("--output", required=True)
    p.add_argument("--replicas", type=int, default=3)
    p.add_argument("--ps", type=float, default=50.0, help="length of each run")
    p.add_argument("--temperature", type=float, default=500.0)
    p.add_argument("--timestep", type=float, default=0.5, help="fs")
    p.add_argument("--friction", type=float, default=0.01, help="1/fs")
    p.add_argument("--bond-tolerance", type=float, default=0.5, help="Å")
    p.add_argument("--reference-split", default="train")
    p.add_argument("--checkpoint-ps", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="float64", choices=["float32", "float64"])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--resume", action="store_true")
    return p


def main(argv=None) -> int:
    import sys
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--report"]:
        if len(argv) < 3:
            raise SystemExit("usage: ase-so3 benchmark stability --report OUT RUN_DIR [RUN_DIR ...]")
        print(write_report(argv[1], argv[2:]).read_text())
        return 0
    args = build_parser().parse_args(argv)
    import torch
    torch.set_num_threads(args.threads)
    r = run(args)
    print(json.dumps({k: r[k] for k in ("stable_ps", "collapsed", "hr_mae", "hr_mae_all",
                                        "steps_per_s_batch")}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
