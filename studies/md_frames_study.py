"""Where MD goes: a shipped potential's force error on frames of its own 500 K MD, labelled with
DFT (:class:`ase_so3.labelling.PySCFCalculator`, PBE/def2-SVP, rMD17's level of theory), next to
its error on the ``test_01`` structures it was judged by.

The frames come from ``--replicas`` Langevin runs at 500 K under the stability benchmark's rules
(``ase_so3.benchmark.stability.run_stability``: 0.5 fs, friction 0.01/fs, a bond off by 0.5 Å
breaks a run), each started from its own test structure (spread over the test split) and kept
every ``--every-ps`` while intact. Frames and labels are written to ``OUT/<name>.frames.extxyz``
and ``OUT/<name>.labels.extxyz`` as they are made, so the same command resumes (labels are
never computed twice).

    OMP_NUM_THREADS=1 python -m studies.md_frames_study --potential escn-rmd17-ethanol \\
        --data ethanol.h5 --out docs/md_frames
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from ase_so3.io_utils import atomic_path


def frames_of_md(potential, data, replicas: int, max_ps: float, every_ps: float, seed: int):
    from ase_so3 import SO3Calculator
    from ase_so3.benchmark.stability import run_stability
    from ase_so3.training.hdf5 import HDF5Dataset
    ds = HDF5Dataset(data)
    test = ds.split("test")
    starts = [int(test[k]) for k in np.linspace(0, len(test) - 1, replicas).astype(int)]
    images = [ds[i].to_atoms() for i in starts]
    ds.close()
    calc = SO3Calculator(potential, uncertainty=False)
    frames, runs = [], []
    every = int(round(every_ps * 1000 / 0.5))
    for k, atoms in enumerate(images):
        atoms.calc = None
        kept: list = []
        row = run_stability(calc, atoms, 500.0, max_ps, seed=seed + k, frames=kept,
                            frames_every=every)
        for f in kept:
            f.info.update({"start_index": starts[k], "replica": k})
        frames += kept
        runs.append({"start_index": starts[k], **row, "frames": len(kept)})
    return frames, runs


def study(args) -> dict:
    import torch
    from ase.io import read, write

    from ase_so3 import SO3Calculator
    from ase_so3.labelling import PySCFCalculator, label_images
    from ase_so3.training.evaluate import evaluate_potential
    from ase_so3.training.metrics import error_metrics

    torch.set_num_threads(1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    name = Path(args.potential).stem
    frames_path, runs_path = out / f"{name}.frames.extxyz", out / f"{name}.runs.json"
    if not runs_path.is_file():
        frames, runs = frames_of_md(args.potential, args.data, args.replicas, args.max_ps,
                                    args.every_ps, args.seed)
        with atomic_path(frames_path) as tmp:
            write(tmp, frames, format="extxyz")
        with atomic_path(runs_path) as tmp:
            Path(tmp).write_text(json.dumps(runs, indent=1))
    frames = read(frames_path, index=":")[:args.count]
    runs = json.loads(runs_path.read_text())
    calc = PySCFCalculator(grid_level=args.grid_level, threads=1)
    start = time.perf_counter()
    labelled = label_images(frames, calc, out / f"{name}.labels.extxyz")
    seconds = time.perf_counter() - start
    ours = SO3Calculator(args.potential)
    pred = ours.calculate_many(labelled)
    e_ref = [a.get_potential_energy() for a in labelled]
    f_ref = np.concatenate([a.get_forces() for a in labelled])
    md = error_metrics(e_ref, [p["energy"] for p in pred], [len(a) for a in labelled], f_ref,
                       np.concatenate([p["forces"] for p in pred]), offset_free=True)
    if "forces_std" in pred[0]:
        md["forces_rmse_predicted_meV_per_A"] = 1e3 * float(np.sqrt(np.mean(
            np.concatenate([p["forces_std"] for p in pred]) ** 2)))
    test = evaluate_potential(args.potential, args.data, split="test")
    return {"potential": args.potential, "level_of_theory": calc.level_of_theory(),
            "frames": len(labelled), "md_runs": runs, "md_frames": md, "test_01": test,
            "label_seconds_this_run": seconds}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m studies.md_frames_study", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--potential", required=True, help="shipped name or file")
    p.add_argument("--data", required=True, help="the molecule's HDF5 set (test split: test_01)")
    p.add_argument("--out", required=True, help="folder for frames, labels and <name>.json")
    p.add_argument("--replicas", type=int, default=5)
    p.add_argument("--max-ps", type=float, default=2.5, help="length of each run")
    p.add_argument("--every-ps", type=float, default=0.25)
    p.add_argument("--count", type=int, default=50, help="frames to label (the first ones)")
    p.add_argument("--grid-level", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    result = study(args)
    result["date"] = time.strftime("%Y-%m-%d")
    result["command"] = " ".join(["python -m studies.md_frames_study",
                                  *(argv if argv is not None else sys.argv[1:])])
    name = Path(args.potential).stem
    with atomic_path(Path(args.out) / f"{name}.json") as tmp:
        Path(tmp).write_text(json.dumps(result, indent=1))
    m, t = result["md_frames"], result["test_01"]
    print(f"{name}: {result['frames']} DFT-labelled 500 K MD frames: force MAE "
          f"{m['forces_mae_meV_per_A']:.2f} meV/Å (test_01 {t['forces_mae_meV_per_A']:.2f}), "
          f"energy MAE after the mean offset {m['energy_mae_offset_free_meV']:.2f} meV")
    return 0


if __name__ == "__main__":
    sys.exit(main())
