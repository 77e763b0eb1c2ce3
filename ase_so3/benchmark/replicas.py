"""Many replicas at once: replicas × MD steps per second of torch-sim's batched NVE integrator
with :class:`~ase_so3.engines.torchsim.SO3TorchSimModel` against a loop of ASE ``VelocityVerlet``
runs with :class:`~ase_so3.SO3Calculator`, for 1, 8 and 64 replicas of one molecule.

    python -m ase_so3.benchmark.replicas --potential escn-rmd17-aspirin --molecule aspirin \\
        --replicas 1 8 64 --steps 20 --threads 1 --output docs/benchmarks/replicas.json

Both run velocity Verlet at 0.5 fs from the same structure (momenta at 300 K), float64, after
two warm-up steps; ASE runs its replicas one after another, torch-sim all in one batch.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def time_ase(potential, atoms, replicas: int, steps: int, device: str, dtype: str) -> float:
    import numpy as np

    from ase_so3 import SO3Calculator
    from ase_so3.md import make_dynamics, maxwell_boltzmann
    calc = SO3Calculator(potential, device=device, dtype=dtype)
    total = 0.0
    for r in range(replicas):
        a = atoms.copy()
        a.calc = calc
        maxwell_boltzmann(a, 300.0, np.random.default_rng(r))
        dyn = make_dynamics(a, "nve", 0.5)
        dyn.run(2)  # warm-up
        start = time.perf_counter()
        dyn.run(steps)
        total += time.perf_counter() - start
    return replicas * steps / total


def time_torchsim(potential, atoms, replicas: int, steps: int, device: str, dtype: str) -> float:
    import torch
    import torch_sim as ts
    from torch_sim.integrators import nve
    from torch_sim.units import MetalUnits as U

    from ase_so3.calculator import parse_dtype
    from ase_so3.engines.torchsim import SO3TorchSimModel
    tdtype = parse_dtype(dtype)
    model = SO3TorchSimModel(potential, device=device, dtype=tdtype, compute_stress=False)
    state = ts.io.atoms_to_state([atoms] * replicas, device=model.device, dtype=tdtype)
    init, update = nve(model, dt=torch.tensor(0.5e-3 * U.time, dtype=tdtype, device=model.device),
                       kT=torch.tensor(300 * U.temperature, dtype=tdtype, device=model.device),
                       seed=0)
    state = init(state)
    for _ in range(2):
        state = update(state)
    sync = torch.cuda.synchronize if model.device.type == "cuda" else (lambda: None)
    sync()
    start = time.perf_counter()
    for _ in range(steps):
        state = update(state)
    sync()
    return replicas * steps / (time.perf_counter() - start)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--potential", default="escn-rmd17-aspirin")
    p.add_argument("--molecule", default="aspirin")
    p.add_argument("--replicas", type=int, nargs="+", default=[1, 8, 64])
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="float64", choices=["float32", "float64"])
    p.add_argument("--output", type=Path)
    args = p.parse_args(argv)
    import torch

    from ase_so3.benchmark.harness import environment
    from ase_so3.data import load_named_structure
    from ase_so3.io_utils import atomic_path
    torch.set_num_threads(args.threads)
    atoms = load_named_structure(args.molecule)
    rows = []
    for n in args.replicas:
        ase_rate = time_ase(args.potential, atoms, n, args.steps, args.device, args.dtype)
        ts_rate = time_torchsim(args.potential, atoms, n, args.steps, args.device, args.dtype)
        rows.append({"replicas": n, "ase_replica_steps_per_s": ase_rate,
                     "torchsim_replica_steps_per_s": ts_rate, "speedup": ts_rate / ase_rate})
        print(json.dumps(rows[-1]), flush=True)
    lines = ["| replicas | ASE loop (replica·steps/s) | torch-sim batch (replica·steps/s) | "
             "torch-sim / ASE |", "|---|---|---|---|"]
    lines += [f"| {r['replicas']} | {r['ase_replica_steps_per_s']:.1f} | "
              f"{r['torchsim_replica_steps_per_s']:.1f} | {r['speedup']:.2f} |" for r in rows]
    print("\n".join(lines))
    if args.output:
        env = environment(threads=args.threads)
        import torch_sim
        env["torch_sim"] = getattr(torch_sim, "__version__", "unknown")
        with atomic_path(args.output) as tmp:
            tmp.write_text(json.dumps({"settings": vars(args) | {"output": str(args.output)},
                                       "environment": env, "rows": rows,
                                       "table": "\n".join(lines)}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
