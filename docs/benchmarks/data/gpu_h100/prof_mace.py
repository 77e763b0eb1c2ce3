"""Where MACE's time goes on a periodic box through ASE on CUDA (profile of 2 calls after warm-up)."""
import sys, time
import numpy as np, torch
from ase_so3.benchmark.models import make_calculator
from ase_so3.benchmark.systems import molecular_box
atoms = molecular_box("ethanol", 5)
atoms.calc = make_calculator({"kind": "mace", "path": ".gpu/mace_ethanol.model"}, device="cuda", dtype="float32")
rng = np.random.default_rng(0)
for i in range(4):
    atoms.positions += rng.normal(0, 1e-3, atoms.positions.shape); t = time.perf_counter(); atoms.get_forces(); torch.cuda.synchronize(); print("call", i, round((time.perf_counter() - t) * 1e3, 1), "ms")
atoms.positions += 0.0
atoms.positions[0] += 1e-3; t = time.perf_counter(); atoms.get_forces(); torch.cuda.synchronize(); print("same graph", round((time.perf_counter() - t) * 1e3, 1), "ms")
from torch.profiler import profile, ProfilerActivity
with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
    for _ in range(2):
        atoms.positions += rng.normal(0, 1e-3, atoms.positions.shape); atoms.get_forces()
print(prof.key_averages().table(sort_by="cpu_time_total", row_limit=18, max_name_column_width=60))
