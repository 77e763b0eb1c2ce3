"""The long-run report (docs/accuracy_study.md): the test errors of eSCN potentials trained for
hundreds of epochs, beside the published revised-MD17 errors of MACE, Allegro, NequIP and
2F-DisGNN.

For each ``--run MOLECULE=FOLDER`` (a training output folder, finished or still running) the
study copies the folder's ``potential.pt`` (its best epoch so far), refits the per-atom energy
shift on the training split as the trainer does when a run ends, and evaluates it on the test
split of ``DATA_DIR/MOLECULE.h5`` (``ase-so3 convert`` of ``rmd17_MOLECULE_train_01.npz`` and
``_test_01.npz``, ``--train 950 --val 50``) in float64. The run's ``metrics.csv`` gives its epochs,
training hours and best validation force MAE. Where ``DATA_DIR/MOLECULE-blind.h5`` exists (the
same conversion with ``_test_02.npz``: the same training split, and a test split from another
official split, without its frames that are in ``train_01``), the potential is also evaluated on
that blind test split.

    python -m studies.long_runs --run ethanol=runs/long-ethanol --run aspirin=runs/long-aspirin \\
        --data-dir . --out docs/accuracy_study/long_runs
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

from ase_so3.io_utils import atomic_path

# Published revised-MD17 test errors, (energy MAE meV, force MAE meV/Å), 1000 training structures.
# None where the source gives no number.
PUBLISHED = {
    "MACE": ({"aspirin": (2.2, 6.6), "ethanol": (0.4, 2.1)},
             "Batatia et al., MACE, NeurIPS 2022, arXiv:2206.07697, Table 1"),
    "Allegro": ({"aspirin": (2.3, 7.3), "ethanol": (0.4, 2.1)},
                "Musaelian et al., Allegro, Nat. Commun. 14, 579 (2023), Table 1"),
    "NequIP": ({"aspirin": (2.3, 8.2), "ethanol": (0.4, 2.8)},
               "Batzner et al., NequIP (l = 3), Nat. Commun. 13, 2453 (2022), Table 1"),
    "2F-DisGNN": ({"ethanol": (None, 1.67)},
                  "Li et al., Is Distance Matrix Enough for Geometric Deep Learning?, NeurIPS "
                  "2023, arXiv:2302.05743"),
}


def measure(molecule: str, run: Path, data: Path, work: Path, blind: Path | None = None) -> dict:
    """Test errors of ``run``'s best potential so far, energy shift refitted, and its progress
    (with ``blind``, also on that file's test split)."""
    import torch

    from ase_so3.loading import load_potential
    from ase_so3.training.data import GraphSet
    from ase_so3.training.evaluate import evaluate_potential
    from ase_so3.training.hdf5 import HDF5Dataset
    from ase_so3.training.logs import read_history
    from ase_so3.training.outputs import refit_energy_shift
    work.mkdir(parents=True, exist_ok=True)
    potential = work / f"{molecule}.pt"
    with atomic_path(potential) as tmp:
        shutil.copyfile(run / "potential.pt", tmp)
    model = load_potential(potential)
    ds = HDF5Dataset(data)
    train = GraphSet(ds, ds.split("train"), model.cutoff)
    ds.close()
    refit_energy_shift(potential, train, 32, torch.float64, "cpu")
    test = evaluate_potential(potential, data, "test", dtype="float64")
    blind_test = evaluate_potential(potential, blind, "test", dtype="float64") if blind else None
    history = read_history(run)
    best = min(history, key=lambda r: r["val_forces_mae_meV_per_A"])
    meta = load_potential(potential).metadata
    return {"molecule": molecule, "run": str(run), "epochs_done": len(history),
            "epochs_planned": meta.get("train_config", {}).get("max_epochs"),
            "trainer_hours": history[-1]["elapsed_s"] / 3600,
            "potential_epoch": meta.get("epochs"),
            "best_val_forces_mae_meV_per_A": best["val_forces_mae_meV_per_A"],
            "best_val_epoch": int(best["epoch"]), "lr_now": history[-1]["lr"],
            "num_parameters": sum(p.numel() for p in model.parameters()),
            "test": {k: v for k, v in test.items() if isinstance(v, (int, float))},
            "blind_test": None if blind_test is None else {
                k: v for k, v in blind_test.items() if isinstance(v, (int, float))}}


def comparison(rows: list[dict]) -> list[dict]:
    """Per molecule: ours and each published model, with our force MAE over theirs."""
    out = []
    for r in rows:
        entry = {"molecule": r["molecule"], "ours": (r["test"]["energy_mae_meV"],
                                                     r["test"]["forces_mae_meV_per_A"])}
        published = {name: table.get(r["molecule"]) for name, (table, _) in PUBLISHED.items()}
        entry["published"] = {k: v for k, v in published.items() if v is not None}
        forces = {k: v[1] for k, v in entry["published"].items()}
        entry["ratio_forces"] = {k: entry["ours"][1] / f for k, f in forces.items()}
        best = min(forces, key=forces.get)
        entry["best_published"] = (best, forces[best])
        out.append(entry)
    return out


def markdown(rows: list[dict], table: list[dict]) -> str:
    def num(x, fmt=".2f"):
        return "—" if x is None else format(x, fmt)
    lines = ["| molecule | parameters | epochs (of planned) | trainer hours | best val F MAE "
             "(epoch) | potential from epoch | test E MAE (meV) | test F MAE (meV/Å) | "
             "blind test E / F |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        t, b = r["test"], r.get("blind_test")
        blind = "—" if b is None else (f"{b['energy_mae_meV']:.2f} / "
                                       f"{b['forces_mae_meV_per_A']:.2f} ({b['num_structures']})")
        lines.append(f"| {r['molecule']} | {r['num_parameters']:,} | {r['epochs_done']} "
                     f"({r['epochs_planned']}) | {r['trainer_hours']:.2f} | "
                     f"{r['best_val_forces_mae_meV_per_A']:.2f} ({r['best_val_epoch']}) | "
                     f"{r['potential_epoch']} | {t['energy_mae_meV']:.2f} | "
                     f"{t['forces_mae_meV_per_A']:.2f} | {blind} |")
    names = list(PUBLISHED)
    lines += ["", "| molecule | eSCN here E / F | " + " | ".join(f"{n} E / F" for n in names)
              + " | F / MACE | F / best published |",
              "|---|---|" + "---|" * len(names) + "---|---|"]
    for c in table:
        cells = []
        for n in names:
            v = c["published"].get(n)
            cells.append("—" if v is None else f"{num(v[0], 'g')} / {num(v[1], 'g')}")
        best_name, _ = c["best_published"]
        ratio_mace = c["ratio_forces"].get("MACE")
        lines.append(f"| {c['molecule']} | {c['ours'][0]:.2f} / {c['ours'][1]:.2f} | "
                     + " | ".join(cells) + f" | {num(ratio_mace)}x | "
                     f"{c['ratio_forces'][best_name]:.2f}x ({best_name}) |")
    lines += ["", "Sources (energy MAE meV / force MAE meV/Å on revised MD17, 1000 training "
              "structures):"] + [f"- {n}: {src}" for n, (_, src) in PUBLISHED.items()]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m studies.long_runs", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", action="append", required=True, metavar="MOLECULE=FOLDER")
    p.add_argument("--data-dir", required=True, help="folder with MOLECULE.h5")
    p.add_argument("--out", required=True, help="folder for results.json and results.md")
    args = p.parse_args(argv)
    out = Path(args.out)
    rows = []
    for item in args.run:
        molecule, sep, folder = item.partition("=")
        if not sep or not (Path(folder) / "potential.pt").is_file():
            p.error(f"--run {item!r}: expected MOLECULE=FOLDER with FOLDER/potential.pt")
        blind = Path(args.data_dir) / f"{molecule}-blind.h5"
        rows.append(measure(molecule, Path(folder), Path(args.data_dir) / f"{molecule}.h5",
                            out / "potentials", blind if blind.is_file() else None))
        print(f"{molecule}: test F MAE {rows[-1]['test']['forces_mae_meV_per_A']:.2f} meV/Å",
              file=sys.stderr)
    table = comparison(rows)
    text = markdown(rows, table)
    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(out / "results.json") as tmp:
        tmp.write_text(json.dumps({"runs": rows, "comparison": table}, indent=1))
    with atomic_path(out / "results.md") as tmp:
        tmp.write_text(text)
    shutil.rmtree(out / "potentials")  # the refitted copies: the runs' own files are what ships
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
