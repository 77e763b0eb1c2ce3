"""Speed through ASE: energy+forces latency, MD throughput and peak memory of one calculator on one
structure, each measurement in a fresh worker process (so its peak resident memory is its own).

    python -m ase_so3.benchmark.speed '<model spec json>' '<system spec json>' [threads] [dtype]
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import sys
import time


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _reset_peak() -> None:
    """Reset the kernel's peak-RSS mark (VmHWM) so the peak counts this measurement only, not
    transient peaks while importing; silently a no-op where not permitted."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def _peak_mb() -> float:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def build_system(system: dict):
    from ase_so3.benchmark.systems import molecular_box, molecule
    if system.get("copies"):
        return molecular_box(system["molecule"], system["copies"])
    return molecule(system["molecule"])


def measure(model: dict, system: dict, threads: int = 1, dtype: str = "float32",
            device: str = "cpu", min_seconds: float = 3.0, single: bool = False,
            min_samples: int = 3) -> dict:
    """Latency, MD throughput and peak memory. At least ``min_samples`` timed calls and MD steps
    (more until ``min_seconds``); ``single``: only one energy+forces call, no MD."""
    import numpy as np
    import torch
    from ase_so3.benchmark.models import make_calculator
    from ase_so3.md import make_dynamics, maxwell_boltzmann
    torch.set_num_threads(threads)
    atoms = build_system(system)
    calc = make_calculator(model, device=device, dtype=dtype)
    atoms.calc = calc
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    rss_before = _rss_mb()
    _reset_peak()
    rng = np.random.default_rng(0)
    start = time.perf_counter()
    atoms.get_forces()  # first call: warm-up (and compilation where it applies)
    sync()
    first = time.perf_counter() - start
    if single:
        peak = _peak_mb()
        return {"atoms": len(atoms), "first_call_ms": first * 1e3, "rss_before_mb": rss_before,
                "peak_rss_mb": peak, "peak_increase_mb": peak - rss_before}
    times = []
    while len(times) < min_samples or (sum(times) < min_seconds and len(times) < 50):
        atoms.positions = atoms.positions + rng.normal(0, 1e-3, size=atoms.positions.shape)
        start = time.perf_counter()
        atoms.get_forces()
        sync()
        times.append(time.perf_counter() - start)
    latency = statistics.median(times)
    maxwell_boltzmann(atoms, 300.0, np.random.default_rng(0))
    dyn = make_dynamics(atoms, "nve", 0.5)
    steps = max(min_samples, min(200, int(min_seconds / max(latency, 1e-6))))
    start = time.perf_counter()
    dyn.run(steps)
    sync()
    md_seconds = time.perf_counter() - start
    peak = _peak_mb()
    result = {"atoms": len(atoms), "latency_ms": latency * 1e3, "first_call_ms": first * 1e3,
              "latency_samples": len(times), "md_steps": steps,
              "md_steps_per_s": steps / md_seconds,
              "atom_steps_per_s": len(atoms) * steps / md_seconds,
              "rss_before_mb": rss_before, "peak_rss_mb": peak,
              "peak_increase_mb": peak - rss_before}
    if device.startswith("cuda"):
        result["cuda_peak_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return result


def run_worker(model: dict, system: dict, threads: int = 1, dtype: str = "float32",
               device: str = "cpu", min_seconds: float = 3.0, timeout: float = 1800,
               single: bool = False, min_samples: int = 3) -> dict:
    """:func:`measure` in a fresh process; failures come back as ``{"error": ...}``."""
    cmd = [sys.executable, "-m", "ase_so3.benchmark.speed", json.dumps(model), json.dumps(system),
           str(threads), dtype, device, str(min_seconds), "single" if single else "repeat", str(min_samples)]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        return {"error": f"exit {proc.returncode}: {' | '.join(tail)}"}
    return json.loads(lines[-1])


if __name__ == "__main__":
    from ase_so3.allocator import configure_from_environment
    configure_from_environment()  # the same for every model measured (allocator.py)
    args = sys.argv[1:]
    print(json.dumps(measure(json.loads(args[0]), json.loads(args[1]),
                             threads=int(args[2]) if len(args) > 2 else 1,
                             dtype=args[3] if len(args) > 3 else "float32",
                             device=args[4] if len(args) > 4 else "cpu",
                             min_seconds=float(args[5]) if len(args) > 5 else 3.0,
                             single=len(args) > 6 and args[6] == "single",
                             min_samples=int(args[7]) if len(args) > 7 else 3)))
