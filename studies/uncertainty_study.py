"""How well the feature-distance uncertainty (:mod:`ase_so3.uncertainty`) ranks and calibrates
errors: each potential is calibrated on its training and validation split and assessed on all
``test_01`` structures; optionally on DFT-labelled structures away from the data (rattled test
structures and frames of 500 K MD with the potential), labelled with
:class:`ase_so3.labelling.PySCFCalculator` (PBE/def2-SVP, rMD17's level of theory).

    python -m studies.uncertainty_study --data ethanol=ethanol.h5 aspirin=aspirin.h5 \\
        --potentials escn-rmd17-ethanol escn-rmd17-aspirin --out docs/uncertainty \\
        --dft ethanol --dft-count 10

Writes ``results.json``, ``table.md``, ``calibration.png`` (predicted against observed force RMSE
in bins of the prediction) and, with ``--into-package``, the calibrated files over the shipped
ones. Without ``--potentials`` it rebuilds the table and plot from ``results.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from ase_so3.io_utils import atomic_path
from ase_so3.uncertainty import calibrate_potential


def _molecule(name: str) -> str:
    return name.rsplit("-", 1)[-1]


def dft_check(potential: Path, data: Path, count: int, amplitudes, md_steps: int, seed: int = 0):
    """Predicted against DFT-observed force RMSE per structure on rattled test structures and
    on frames of a 500 K Langevin run with the potential."""
    from scipy.stats import spearmanr

    from ase_so3 import SO3Calculator
    from ase_so3.md import make_dynamics, maxwell_boltzmann
    from ase_so3.labelling import PySCFCalculator
    from ase_so3.training.hdf5 import HDF5Dataset
    ds = HDF5Dataset(data)
    test = ds.split("test")
    base = [ds[int(i)].to_atoms() for i in test[:count]]
    ds.close()
    rng = np.random.default_rng(seed)
    groups = {}
    for amp in amplitudes:
        frames = []
        for a in base:
            b = a.copy()
            b.positions += rng.normal(scale=amp, size=b.positions.shape)
            frames.append(b)
        groups[f"rattled {amp} Å"] = frames
    md = base[0].copy()
    md.calc = SO3Calculator(potential)
    maxwell_boltzmann(md, 500.0, rng)
    dyn = make_dynamics(md, "nvt", 0.5, 500.0, 0.01, rng)
    frames = []
    for _ in range(count):
        dyn.run(md_steps)
        frame = md.copy()
        frame.set_constraint()
        frames.append(frame)
    groups[f"500 K MD, every {md_steps * 0.5:g} fs"] = frames
    calc = SO3Calculator(potential)
    rows = []
    for group, frames in groups.items():
        for atoms in frames:
            pred = calc.calculate_many([atoms])[0]
            atoms.calc = PySCFCalculator(grid_level=3)
            err = pred["forces"] - atoms.get_forces()
            rows.append({"group": group,
                         "predicted_meV_per_A": 1e3 * float(np.sqrt((pred["forces_std"] ** 2).mean())),
                         "observed_meV_per_A": 1e3 * float(np.sqrt((err ** 2).sum(1).mean()))})
    p = [r["predicted_meV_per_A"] for r in rows]
    o = [r["observed_meV_per_A"] for r in rows]
    summary = {}
    for group in groups:
        sel = [r for r in rows if r["group"] == group]
        summary[group] = {k: float(np.sqrt(np.mean([r[k] ** 2 for r in sel])))
                          for k in ("predicted_meV_per_A", "observed_meV_per_A")}
    return {"structures": len(rows), "spearman_structure_forces": float(spearmanr(p, o)[0]),
            "groups": summary, "rows": rows}


def foreign(potential: str, data: Path, count: int) -> dict:
    """A potential on the first ``count`` test structures of another molecule (same elements):
    its predicted force RMSE against the observed one (rMD17 labels), next to what it predicts
    on its own molecule's test structures."""
    from ase_so3 import SO3Calculator
    from ase_so3.training.hdf5 import HDF5Dataset
    ds = HDF5Dataset(data)
    structs = [ds[int(i)] for i in ds.split("test")[:count]]
    ds.close()
    pred = SO3Calculator(potential).calculate_many([s.to_atoms() for s in structs])
    std = np.concatenate([p["forces_std"] for p in pred])
    err = np.concatenate([p["forces"] - s.forces for p, s in zip(pred, structs)])
    return {"structures": len(structs),
            "forces_rmse_predicted_meV_per_A": 1e3 * float(np.sqrt((std ** 2).mean())),
            "forces_rmse_observed_meV_per_A": 1e3 * float(np.sqrt((err ** 2).sum(1).mean()))}


def committee(names: list[str], data: Path) -> dict:
    """A committee of the given potentials (different architectures trained on the same data)
    against the feature distance of the first one: Spearman correlation of each estimate with
    the first potential's per-structure force RMSE on test_01. The committee's estimate is the
    members' force spread (root-mean-square over atoms of the deviation from their mean)."""
    from scipy.stats import spearmanr

    from ase_so3.loading import load_potential
    from ase_so3.training.data import GraphSet
    from ase_so3.training.hdf5 import HDF5Dataset
    from ase_so3.uncertainty import FeatureUncertainty, collect
    models = [load_potential(n) for n in names]
    ds = HDF5Dataset(data)
    test = GraphSet(ds, ds.split("test"), max(m.cutoff for m in models))
    runs = [collect(m, test) for m in models]
    ds.close()
    batch = runs[0]["batch"].numpy()
    counts = np.bincount(batch)
    d = np.stack([r["dforce"].numpy() for r in runs])  # [M, N, 3]: prediction - reference
    spread = np.sqrt(np.bincount(batch, ((d - d.mean(0)) ** 2).sum(-1).mean(0)) / counts)
    actual = np.sqrt(np.bincount(batch, (d[0] ** 2).sum(-1)) / counts)
    cal = FeatureUncertainty.of(models[0])
    u = cal.atom_u(runs[0]["features"], runs[0]["numbers"]).numpy()
    feature = np.sqrt(np.bincount(batch, u) / counts)
    return {"members": names, "structures": len(counts),
            "spearman_committee": float(spearmanr(spread, actual)[0]),
            "spearman_feature_distance": float(spearmanr(feature, actual)[0])}


def plot(results: dict, path: Path) -> None:
    from matplotlib.figure import Figure
    fig = Figure(figsize=(5.5, 5))
    ax = fig.subplots()
    top = 0.0
    for name, r in results.items():
        bins = r["test"]["forces_bins"]
        p = [b["predicted_meV_per_A"] for b in bins]
        o = [b["observed_meV_per_A"] for b in bins]
        ax.plot(p, o, "o-", label=f"{name} (ρ = {r['test']['spearman_structure_forces']:.2f})")
        top = max(top, *p, *o)
        dft = r.get("dft")
        if dft:
            ax.scatter([x["predicted_meV_per_A"] for x in dft["rows"]],
                       [x["observed_meV_per_A"] for x in dft["rows"]], s=10, marker="x",
                       label=f"{name}, DFT-labelled off-data structures")
            top = max(top, *[x["observed_meV_per_A"] for x in dft["rows"]])
    ax.plot([0, top], [0, top], "k--", lw=0.8)
    ax.set_xlabel("predicted force RMSE (meV/Å)")
    ax.set_ylabel("observed force RMSE (meV/Å)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_title("test_01 atoms in 10 bins of the prediction")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def table(results: dict) -> str:
    """The markdown table of the assessment on test_01, one row per potential."""
    rows = ["| potential | reg | Spearman, structures | Spearman, atoms | force RMSE predicted / "
            "observed (meV/Å) | top tenth of atoms: predicted / observed | Spearman, energy | "
            "energy RMSE predicted / observed (meV) |", "|---" * 8 + "|"]
    for name, r in results.items():
        t = r["test"]
        top = t["forces_bins"][-1]
        rows.append(f"| {name} | {r['reg']:.0e} | {t['spearman_structure_forces']:.2f} | "
                    f"{t['spearman_atom_forces']:.2f} | {t['forces_rmse_predicted_meV_per_A']:.1f} / "
                    f"{t['forces_rmse_observed_meV_per_A']:.1f} | {top['predicted_meV_per_A']:.1f} / "
                    f"{top['observed_meV_per_A']:.1f} | {t['spearman_structure_energy']:.2f} | "
                    f"{t['energy_rmse_predicted_meV']:.2f} / {t['energy_rmse_observed_meV']:.2f} |")
    return "\n".join(rows) + "\n"


def report(results: dict, out: Path) -> None:
    results = {k: v for k, v in results.items() if k not in ("committees", "foreign")}
    if not results:
        return
    shown = {k: v for k, v in results.items() if _molecule(k) in ("ethanol", "aspirin")}
    plot(shown, out / "calibration.png")
    with atomic_path(out / "table.md") as tmp:
        Path(tmp).write_text(table(results))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", nargs="*", default=[], metavar="MOLECULE=H5")
    ap.add_argument("--potentials", nargs="*", default=[])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--dft", nargs="*", default=[], metavar="MOLECULE",
                    help="also DFT-label off-data structures of these molecules' eSCN potential")
    ap.add_argument("--dft-count", type=int, default=10)
    ap.add_argument("--amplitudes", type=float, nargs="+", default=[0.02, 0.05, 0.1],
                    help="standard deviations (Å) of the Gaussian rattle of test structures")
    ap.add_argument("--md-steps", type=int, default=200, help="MD steps between labelled frames")
    ap.add_argument("--foreign", nargs="*", default=[], metavar="POTENTIAL=MOLECULE",
                    help="a potential on another molecule's test structures (out of domain)")
    ap.add_argument("--foreign-count", type=int, default=100)
    ap.add_argument("--committee", nargs="*", default=[], metavar="MOLECULE",
                    help="also compare with a committee of the shipped eSCN, TFN and "
                         "SE(3)-Transformer potentials of these molecules")
    ap.add_argument("--into-package", action="store_true",
                    help="write the calibrated potentials over the shipped files")
    args = ap.parse_args(argv)
    from ase_so3.pretrained import potential_path
    data = dict(item.split("=", 1) for item in args.data)
    args.out.mkdir(parents=True, exist_ok=True)
    results_path = args.out / "results.json"
    results = json.loads(results_path.read_text()) if results_path.is_file() else {}
    for name in args.potentials:
        mol = _molecule(name)
        target = potential_path(name) if args.into_package else args.out / f"{name}.pt"
        found = calibrate_potential(name, data[mol], target, test_split="test")
        results[name] = {**found, "file": str(target)}
        t = found["test"]
        print(f"{name}: Spearman (structures) {t['spearman_structure_forces']:.3f}, atoms "
              f"{t['spearman_atom_forces']:.3f}; force RMSE predicted "
              f"{t['forces_rmse_predicted_meV_per_A']:.2f} observed "
              f"{t['forces_rmse_observed_meV_per_A']:.2f} meV/Å", flush=True)
        if mol in args.dft and name.startswith("escn"):
            results[name]["dft"] = dft_check(target, data[mol], args.dft_count, args.amplitudes,
                                             args.md_steps)
            print(json.dumps(results[name]["dft"]["groups"], indent=1), flush=True)
        with atomic_path(results_path) as tmp:
            Path(tmp).write_text(json.dumps(results, indent=1))
    for item in args.foreign:
        name, mol = item.split("=", 1)
        results.setdefault("foreign", {})[f"{name} on {mol}"] = found = foreign(
            name, data[mol], args.foreign_count)
        print(f"{name} on {mol}: force RMSE predicted "
              f"{found['forces_rmse_predicted_meV_per_A']:.1f}, observed "
              f"{found['forces_rmse_observed_meV_per_A']:.1f} meV/Å", flush=True)
        with atomic_path(results_path) as tmp:
            Path(tmp).write_text(json.dumps(results, indent=1))
    for mol in args.committee:
        names = [f"{m}-rmd17-{mol}" for m in ("escn", "tfn", "se3_transformer")]
        results.setdefault("committees", {})[mol] = found = committee(names, data[mol])
        print(f"{mol}: Spearman committee {found['spearman_committee']:.3f}, feature distance "
              f"{found['spearman_feature_distance']:.3f}", flush=True)
        with atomic_path(results_path) as tmp:
            Path(tmp).write_text(json.dumps(results, indent=1))
    if results:
        report(results, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
