"""MACE (``mace-torch``, the ``mace`` extra) as the harness's reference: training with MACE's own
``mace_run_train`` on our splits exported to extxyz, under a wall-clock budget, and loading the
result as a ``MACECalculator``.

The budget is enforced from outside: MACE trains with a large epoch limit and is interrupted when
the budget is spent; a second ``mace_run_train --restart_latest`` call with the epoch limit set to
the last checkpointed epoch trains no further and only writes the final ``.model`` (MACE's own
evaluation and export code, with its EMA weights).
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

# Settings for the equal-budget runs: MACE's defaults except a smaller width so that a CPU budget
# of tens of minutes gives it a fair number of epochs (MACE's rMD17 paper models use 256 channels).
DEFAULT_SETTINGS = {
    "model": "MACE", "num_channels": 64, "max_L": 1, "correlation": 3, "num_interactions": 2,
    "r_max": 5.0, "batch_size": 5, "valid_batch_size": 10, "lr": 0.01, "energy_weight": 1.0,
    "forces_weight": 100.0, "ema": True, "ema_decay": 0.99, "amsgrad": True,
    "scheduler_patience": 5, "default_dtype": "float32", "E0s": "average",
}


class MACENotAvailable(RuntimeError):
    pass


def mace_available() -> bool:
    return importlib.util.find_spec("mace") is not None


def require_mace() -> None:
    if not mace_available():
        raise MACENotAvailable(
            "the benchmark compares against MACE, which is not installed; install it with "
            "`pip install -e '.[mace]'` (mace-torch pins e3nn 0.4.4, which ase_so3 supports), or "
            "leave MACE out with --no-mace")


def export_splits(h5_path, folder: Path, limits: dict[str, int | None] | None = None) -> dict:
    """Write ``train.xyz``, ``val.xyz``, ``test.xyz`` (REF_energy / REF_forces, eV and eV/Å),
    each molecule moved to the origin (:func:`centred`)."""
    from ase.io import read, write

    from ase_so3.benchmark.models import centred
    from ase_so3.io_utils import atomic_path
    from ase_so3.training.convert import hdf5_to_extxyz
    folder.mkdir(parents=True, exist_ok=True)
    counts = {}
    for split in ("train", "val", "test"):
        path = folder / f"{split}.xyz"
        hdf5_to_extxyz(h5_path, path, split=split)
        images = read(path, index=":")[:(limits or {}).get(split)]
        with atomic_path(path) as tmp:
            write(tmp, [centred(a) for a in images], format="extxyz")
        counts[split] = len(images)
    return counts


def _args(settings: dict) -> list[str]:
    out = []
    for key, value in settings.items():
        if value is True:
            out.append(f"--{key}")
        elif value is not False and value is not None:
            out.append(f"--{key}={value}")
    return out


def _mace_command() -> list[str]:
    exe = shutil.which("mace_run_train")
    if exe is None:
        exe_dir = Path(sys.executable).parent / "mace_run_train"
        if not exe_dir.exists():
            raise MACENotAvailable("mace_run_train not found next to this Python")
        exe = str(exe_dir)
    return [exe]


def checkpoint_epochs(checkpoints: Path) -> dict[int, Path]:
    """MACE's checkpoint files in a folder by epoch, in epoch order."""
    found = {int(m.group(1)): p for p in checkpoints.glob("*_epoch-*.pt")
             if (m := re.search(r"_epoch-(\d+)\.pt$", p.name))}
    return dict(sorted(found.items()))


def _last_epoch(checkpoints: Path) -> int | None:
    epochs = checkpoint_epochs(checkpoints)
    return max(epochs) if epochs else None


def mace_base_command(data_dir: Path, work_dir: Path, seed: int, settings: dict) -> list[str]:
    """``mace_run_train`` with our splits and ``settings`` (no epoch limit)."""
    return _mace_command() + [
        "--name=mace", f"--work_dir={work_dir}", f"--train_file={data_dir / 'train.xyz'}",
        f"--valid_file={data_dir / 'val.xyz'}", "--energy_key=REF_energy",
        "--forces_key=REF_forces", "--device=cpu", f"--seed={seed}", "--eval_interval=1",
        "--keep_checkpoints", "--save_cpu", *_args(settings)]


def _env(threads: int) -> dict:
    return {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}


def export_epoch(base: list[str], epoch: int, log_path: Path, threads: int = 1) -> None:
    """Write ``mace.model`` from the checkpoint of ``epoch`` (the newest in the command's
    ``checkpoints/``) with MACE's own code: a restart with the epoch limit at that epoch trains
    no further, then evaluates and exports (EMA weights, as MACE saves its checkpoints)."""
    with open(log_path, "a") as logf:
        subprocess.run(base + [f"--max_num_epochs={epoch}", "--restart_latest"], stdout=logf,
                       stderr=subprocess.STDOUT, env=_env(threads), check=True)


def train_mace(data_dir: Path, work_dir: Path, budget_minutes: float, seed: int = 0,
               threads: int = 1, settings: dict | None = None, max_epochs: int = 100000,
               log=print) -> dict:
    """Train MACE on ``data_dir/{train,val}.xyz`` for at most ``budget_minutes`` (wall clock) or
    ``max_epochs``; returns the model path, epochs, seconds and the command line."""
    require_mace()
    work_dir.mkdir(parents=True, exist_ok=True)
    settings = {**DEFAULT_SETTINGS, **(settings or {})}
    base = mace_base_command(data_dir, work_dir, seed, settings)
    env = _env(threads)
    command = base + [f"--max_num_epochs={max_epochs}"]
    log_path = work_dir / "mace_train.log"
    start = time.perf_counter()
    with open(log_path, "a") as logf:
        proc = subprocess.Popen(command, stdout=logf, stderr=subprocess.STDOUT, env=env)
        interrupted = False
        while proc.poll() is None:
            if time.perf_counter() - start > budget_minutes * 60:
                proc.send_signal(signal.SIGINT)
                interrupted = True
                try:
                    proc.wait(timeout=120)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
                break
            time.sleep(1.0)
    seconds = time.perf_counter() - start
    if not interrupted and proc.returncode != 0:
        raise RuntimeError(f"mace_run_train failed (exit {proc.returncode}); see {log_path}")
    epoch = _last_epoch(work_dir / "checkpoints")
    if epoch is None:
        raise RuntimeError(f"MACE saved no checkpoint within {budget_minutes} min; see {log_path}")
    model = work_dir / "mace.model"
    if interrupted or not model.is_file():
        log(f"MACE stopped by the budget after {seconds:.0f} s; exporting epoch {epoch}")
        export_epoch(base, epoch, log_path, threads)
    if not model.is_file():
        raise RuntimeError(f"MACE wrote no model file; see {log_path}")
    return {"model": str(model), "epochs": epoch + 1, "train_seconds": seconds,
            "structures_per_s": _throughput(log_path, data_dir / "train.xyz"),
            "command": " ".join(command), "settings": settings, "log": str(log_path),
            "base_command": base}


def _throughput(log_path: Path, train_file: Path) -> float | None:
    """Median training structures/s from the time between MACE's per-epoch log lines (each
    interval also holds its validation pass)."""
    from datetime import datetime

    import numpy as np
    stamps = []
    for line in log_path.read_text(errors="replace").splitlines():
        m = re.match(r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+) INFO: (Initial|Epoch \d+):", line)
        if m:
            stamps.append(datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S.%f").timestamp())
    if len(stamps) < 2:
        return None
    n = sum(1 for line in train_file.read_text().splitlines() if line.startswith("Properties="))
    return float(n / np.median(np.diff(stamps)))


def mace_calculator(model_path, device: str = "cpu", dtype: str = "float64", **options):
    """A ``MACECalculator`` for a model file written by :func:`train_mace`; ``options`` go to
    ``MACECalculator`` as they are (e.g. ``compile_mode="default"``)."""
    import os
    require_mace()
    before = os.environ.get("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD")
    try:
        # mace-torch switches weights-only loading off for the whole process when imported (its
        # model files are pickled modules); keep that to MACE's own load, not the process
        from mace.calculators import MACECalculator
        os.environ["TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"] = "1"
        return MACECalculator(model_paths=str(model_path), device=device, default_dtype=dtype,
                              **options)
    finally:
        if before is None:
            os.environ.pop("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", None)
        else:
            os.environ["TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"] = before


def mace_num_parameters(calc) -> int:
    return sum(p.numel() for p in calc.models[0].parameters())
