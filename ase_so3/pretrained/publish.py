"""Ship a trained potential: copy it into the package with a model card measured here.

    python -m ase_so3.pretrained.publish escn-rmd17-aspirin --run runs/escn-rmd17-aspirin \\
        --data runs/rmd17_aspirin_01.h5 --molecule aspirin --hardware "2-core x86-64 CPU, 1 thread" \\
        --command "ase-so3 train configs/escn-rmd17-aspirin.yaml"

The card holds the data and split, hyperparameters, parameter count, training time and hardware,
the exact command, and the test errors measured on the whole test split and on its first 100
structures (what the test suite re-measures).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

from ase_so3.pretrained import HERE

# Batatia et al., "MACE: Higher Order Equivariant Message Passing Neural Networks for Fast and
# Accurate Force Fields", NeurIPS 2022 (arXiv:2206.07697), Table 1: rMD17, 950 training structures.
MACE_RMD17 = {"aspirin": (2.2, 6.6), "azobenzene": (1.2, 3.0), "benzene": (0.4, 0.3),
              "ethanol": (0.4, 2.1), "malonaldehyde": (0.8, 4.1), "naphthalene": (0.5, 1.6),
              "paracetamol": (1.3, 4.8), "salicylic": (0.9, 3.1), "toluene": (0.5, 1.5),
              "uracil": (0.5, 2.1)}
MACE_CITATION = ("I. Batatia, D. P. Kovács, G. N. C. Simm, C. Ortner, G. Csányi, MACE: Higher Order "
                 "Equivariant Message Passing Neural Networks for Fast and Accurate Force Fields, "
                 "NeurIPS 2022, arXiv:2206.07697, Table 1")


def publish(name: str, run: Path, data: Path, molecule: str, command: str, hardware: str) -> dict:
    from ase_so3.loading import load_potential
    from ase_so3.training.evaluate import evaluate_potential
    from ase_so3.training.hdf5 import HDF5Dataset
    potential = run / "potential.pt"
    model = load_potential(potential)
    full = evaluate_potential(model, data, split="test")
    first100 = evaluate_potential(model, data, split="test", limit=100)
    history = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    ds = HDF5Dataset(data)
    provenance = ds.provenance
    ds.close()
    meta = model.metadata
    e, f = MACE_RMD17.get(molecule, (None, None))
    card = {
        "name": name, "model": model.name, "molecule": molecule,
        "config": model.config.to_dict(), "num_parameters": model.num_parameters(),
        "data": {"dataset": "revised MD17 (Christensen & von Lilienfeld 2020), PBE/def2-SVP, "
                            "CC0-1.0", "split": "01", "provenance": provenance,
                 "train": "950 structures drawn from rmd17_%s_train_01.npz (seed 0)" % molecule,
                 "val": "the other 50 structures of rmd17_%s_train_01.npz" % molecule,
                 "test": "rmd17_%s_test_01.npz (1000 structures)" % molecule},
        "hyperparameters": meta.get("train_config", {}),
        "training": {"epochs": len(history), "wall_time_s": history[-1]["elapsed_s"],
                     "hardware": hardware,
                     "best_val_forces_mae_meV_per_A": meta.get("best_val_forces_mae_meV_per_A")},
        "command": command,
        "test_errors": {k: v for k, v in full.items() if k != "num_structures"},
        "test_errors_first100": {k: v for k, v in first100.items() if k != "num_structures"},
        "published_mace": {"energy_mae_meV": e, "forces_mae_meV_per_A": f,
                           "source": MACE_CITATION},
    }
    shutil.copyfile(potential, HERE / f"{name}.pt")
    (HERE / f"{name}.json").write_text(json.dumps(card, indent=2, ensure_ascii=False) + "\n")
    return card


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description="copy a trained potential into the package with a card")
    p.add_argument("name")
    p.add_argument("--run", type=Path, required=True, help="training output folder")
    p.add_argument("--data", type=Path, required=True, help="HDF5 data set with a test split")
    p.add_argument("--molecule", required=True)
    p.add_argument("--command", required=True, help="the exact training command")
    p.add_argument("--hardware", required=True)
    a = p.parse_args(argv)
    card = publish(a.name, a.run, a.data, a.molecule, a.command, a.hardware)
    t = card["test_errors"]
    print(f"{a.name}: test energy MAE {t['energy_mae_meV']:.2f} meV, force MAE "
          f"{t['forces_mae_meV_per_A']:.2f} meV/Å ({card['num_parameters']} parameters)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
