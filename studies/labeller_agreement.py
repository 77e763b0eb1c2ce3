"""How well :class:`ase_so3.labelling.PySCFCalculator` reproduces revised MD17's own labels:
force MAE, the energy offset (mean and spread) and seconds per structure, on the first N
structures of a molecule's ``test_01`` file, for one or more integration grid levels.

    python -m studies.labeller_agreement --npz ../shared/data/md17/rmd17/rmd17_ethanol_test_01.npz \\
        --count 20 --grid-levels 3 5 --out docs/labelling/agreement_ethanol.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from ase import Atoms, units

from ase_so3.io_utils import atomic_path
from ase_so3.labelling import PySCFCalculator


def agreement(npz: Path, count: int, grid_level: int, threads: int = 1) -> dict:
    data = np.load(npz)
    kcal = units.kcal / units.mol
    force_err, offsets, seconds = [], [], []
    for k in range(count):
        atoms = Atoms(numbers=data["nuclear_charges"], positions=data["coords"][k])
        atoms.calc = calc = PySCFCalculator(grid_level=grid_level, threads=threads)
        force_err.append(np.abs(atoms.get_forces() - data["forces"][k] * kcal).mean())
        offsets.append(atoms.get_potential_energy() - data["energies"][k] * kcal)
        seconds.append(calc.results["seconds"])
    offsets = np.array(offsets)
    return {"grid_level": grid_level, "structures": count, "level_of_theory": calc.level_of_theory(),
            "forces_mae_meV_per_A": 1e3 * float(np.mean(force_err)),
            "forces_mae_max_structure_meV_per_A": 1e3 * float(np.max(force_err)),
            "energy_offset_meV": 1e3 * float(offsets.mean()),
            "energy_offset_spread_meV": 1e3 * float(offsets.std()),
            "seconds_per_structure": float(np.mean(seconds))}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m studies.labeller_agreement", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--npz", required=True, help="an rMD17 split file (rmd17_X_test_01.npz)")
    p.add_argument("--count", type=int, default=20)
    p.add_argument("--grid-levels", type=int, nargs="+", default=[3])
    p.add_argument("--out", help="JSON file for the results")
    args = p.parse_args(argv)
    rows = []
    for level in args.grid_levels:
        row = agreement(Path(args.npz), args.count, level)
        rows.append(row)
        print(json.dumps(row), flush=True)
    if args.out:
        with atomic_path(args.out) as tmp:
            tmp.write_text(json.dumps({"npz": Path(args.npz).name, "date": time.strftime("%Y-%m-%d"),
                                       "command": " ".join(["python -m studies.labeller_agreement",
                                                            *(argv or sys.argv[1:])]),
                                       "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
