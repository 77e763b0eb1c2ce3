"""MACE (``mace-torch``, the ``mace`` extra) as the harness's reference: training with MACE's own
``mace_run_train`` on our splits exported to extxyz, under a wall-clock budget, and loading the
result as a ``MACECalculator``.

The budget is enforced from outside: MACE trains with a large epoch limit and is stopped when the
budget is spent. What it ships is the newest checkpoint of an epoch that MACE's log shows finished
within the budget (:func:`training_curve`): a second ``mace_run_train --restart_latest`` call with
the epoch limit set to that epoch trains no further and only writes the final ``.model`` (MACE's
own evaluation and export code, with its EMA weights). An interrupted run resumes from its last
checkpoint with the budget it has left (:func:`train_mace` with ``resume=True``).
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

from ase_so3.errors import ASESO3Error, UnavailableError

# Settings for the equal-budget runs: MACE's defaults except a smaller width so that a CPU budget
# of tens of minutes gives it a fair number of epochs (MACE's rMD17 paper models use 256 channels).
DEFAULT_SETTINGS = {
    "model": "MACE", "num_channels": 64, "max_L": 1, "correlation": 3, "num_interactions": 2,
    "r_max": 5.0, "batch_size": 5, "valid_batch_size": 10, "lr": 0.01, "energy_weight": 1.0,
    "forces_weight": 100.0, "ema": True, "ema_decay": 0.99, "amsgrad": True,
    "scheduler_patience": 5, "default_dtype": "float32", "E0s": "average",
}


class MACENotAvailable(UnavailableError):
    """mace-torch is not installed."""


class TrainingFailedError(ASESO3Error, RuntimeError):
    """MACE's own training ended without a model; its log says why."""


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


_STAMPED = re.compile(r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+) INFO: (.*)")
# an epoch's validation line; the force MAE only where MACE's error table reports it
_ERRORS = re.compile(r"(Initial|Epoch (\d+)):(?:.*\bMAE_F=\s*([\d.]+) meV / A)?")


def _epochs(log_path: Path) -> list[dict]:
    """MACE's validation lines of the epochs that count, in training order: ``{"label": MACE's
    epoch number, "index": 0-based epoch of the whole training, "elapsed_s", "mae"}``.

    Each ``mace_run_train`` process in the log is a segment, timed from its first line (MACE's
    settings banner, after Python's imports) to each epoch's validation line. MACE restarts from
    its newest checkpoint, of epoch label k, and trains label k again: a segment whose first
    epoch is labelled k continues the clock at the time of the previous label k and replaces what
    was logged after it (that work died with its process); a restart that trains no epoch (an
    export) adds nothing."""
    rows: list[dict] = []
    seg_start, seen_initial, first, offset, shift = None, False, True, 0.0, 0
    for line in Path(log_path).read_text(errors="replace").splitlines():
        m = _STAMPED.match(line)
        if not m:
            continue
        stamp = datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S.%f").timestamp()
        errors = _ERRORS.match(m.group(2))
        initial = errors is not None and errors.group(1) == "Initial"
        if seg_start is None or (seen_initial and ("VERIFYING SETTINGS" in line or initial)):
            seg_start, seen_initial, first = stamp, False, True
        seen_initial = seen_initial or initial
        if errors is None or initial:
            continue
        label = int(errors.group(2))
        if first:  # where this segment's training starts from
            first = False
            base = [i for i, r in enumerate(rows) if r["label"] == label]
            if base:  # resumed from the checkpoint of `label`
                rows = rows[:base[-1] + 1]
                offset, shift = rows[-1]["elapsed_s"], rows[-1]["index"] + 1 - label
            else:  # a fresh start (or a checkpoint whose epoch the log lacks)
                rows = [r for r in rows if r["label"] < label]
                offset, shift = (rows[-1]["elapsed_s"] if rows else 0.0), 0
        mae = float(errors.group(3)) if errors.group(3) else None
        rows.append({"label": label, "index": label + shift,
                     "elapsed_s": offset + stamp - seg_start, "mae": mae})
    return rows


def training_curve(log_path: Path) -> list[dict]:
    """Per epoch that counts (:func:`_epochs`), ``{"epoch": 1-based, "elapsed_s": seconds of
    training to the end of that epoch, "val_forces_mae_meV_per_A"}`` (None where MACE's error
    table has no force MAE)."""
    return [{"epoch": r["index"] + 1, "elapsed_s": r["elapsed_s"],
             "val_forces_mae_meV_per_A": r["mae"]} for r in _epochs(log_path)]


def checkpoint_times(log_path: Path) -> dict[int, dict]:
    """For each epoch label, the epoch whose checkpoint carries that label now (MACE's restart
    overwrites label k's checkpoint: its first epoch always saves)."""
    return {r["label"]: r for r in _epochs(log_path)}


def _intact(path: Path) -> bool:
    """A checkpoint that was written to the end (torch files are zip archives)."""
    import zipfile
    try:
        with zipfile.ZipFile(path) as z:
            return z.testzip() is None
    except (zipfile.BadZipFile, OSError):
        return False


def keep_within_budget(work_dir: Path, budget_s: float) -> int | None:
    """The epoch label of the newest intact checkpoint of an epoch that finished within
    ``budget_s`` seconds of training. It and older ones go to ``checkpoints/``, newer ones to
    ``checkpoints_past_budget/`` (kept, not shipped), so that ``--restart_latest`` finds the chosen
    one. ``None`` when there is none."""
    times = checkpoint_times(work_dir / "mace_train.log")
    found = {**checkpoint_epochs(work_dir / "checkpoints_past_budget"),
             **checkpoint_epochs(work_dir / "checkpoints")}
    ok = [e for e, p in sorted(found.items())
          if e in times and times[e]["elapsed_s"] <= budget_s and _intact(p)]
    chosen = ok[-1] if ok else None
    for epoch, path in found.items():
        folder = "checkpoints" if chosen is not None and epoch <= chosen else \
            "checkpoints_past_budget"
        if path.parent.name != folder:
            (work_dir / folder).mkdir(exist_ok=True)
            path.rename(work_dir / folder / path.name)
    return chosen


def _run_for(command: list[str], seconds: float, log_path: Path, threads: int) -> tuple[bool, int]:
    """Run ``command`` for at most ``seconds``; (stopped by the limit, exit status)."""
    with open(log_path, "a") as logf:
        proc = subprocess.Popen(command, stdout=logf, stderr=subprocess.STDOUT,
                                env=_env(threads))
        start = time.perf_counter()
        while proc.poll() is None:
            if time.perf_counter() - start > seconds:
                # SIGTERM, not SIGINT: a job started in the background of a shell ignores SIGINT
                proc.terminate()
                try:
                    proc.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
                return True, proc.returncode
            time.sleep(1.0)
    return False, proc.returncode


def train_mace(data_dir: Path, work_dir: Path, budget_minutes: float, seed: int = 0,
               threads: int = 1, settings: dict | None = None, max_epochs: int = 100000,
               resume: bool = False, log=print) -> dict:
    """Train MACE on ``data_dir/{train,val}.xyz`` for at most ``budget_minutes`` of training or
    ``max_epochs``; returns the model path, epochs, seconds and the command line.

    With ``resume`` and checkpoints in ``work_dir``, training continues from the newest one with
    MACE's ``--restart_latest`` for the time the log shows is left (none when an epoch past the
    budget is logged already). MACE's restart restores the optimizer and learning-rate schedule but
    starts its EMA from the saved (EMA) weights and its data order from the seed, so a resumed
    run is close to, not identical with, an uninterrupted one; the result says after how many
    epochs it resumed."""
    require_mace()
    work_dir.mkdir(parents=True, exist_ok=True)
    settings = {**DEFAULT_SETTINGS, **(settings or {})}
    base = mace_base_command(data_dir, work_dir, seed, settings)
    command = base + [f"--max_num_epochs={max_epochs}"]
    log_path = work_dir / "mace_train.log"
    budget_s = budget_minutes * 60
    found = checkpoint_epochs(work_dir / "checkpoints") if resume else {}
    resumed_after, spent = None, 0.0
    if found:
        times = checkpoint_times(log_path)
        newest = times.get(max(found), {"index": max(found), "elapsed_s": 0.0})
        resumed_after, spent = newest["index"] + 1, newest["elapsed_s"]
        if any(r["elapsed_s"] > budget_s for r in times.values()):
            spent = budget_s  # the budget ran out before the run was interrupted
        command = command + ["--restart_latest"]
    stopped, seconds, status = False, 0.0, 0
    if spent < budget_s:
        if resumed_after is not None:
            log(f"MACE resumes after {resumed_after} epochs with {budget_s - spent:.0f} s left")
        start = time.perf_counter()
        stopped, status = _run_for(command, budget_s - spent, log_path, threads)
        seconds = time.perf_counter() - start
    if not stopped and status != 0:
        raise TrainingFailedError(f"mace_run_train failed (exit {status}); see {log_path}")
    before = checkpoint_epochs(work_dir / "checkpoints")
    epoch = keep_within_budget(work_dir, budget_s)
    if epoch is None:
        raise TrainingFailedError(f"MACE saved no checkpoint within {budget_minutes} min; see {log_path}")
    model = work_dir / "mace.model"
    if stopped or resumed_after is not None or max(before) != epoch or not model.is_file():
        log(f"MACE: {spent + seconds:.0f} s of training; exporting epoch {epoch}, the newest "
            f"checkpoint within the budget")
        model.unlink(missing_ok=True)
        export_epoch(base, epoch, log_path, threads)
    if not model.is_file():
        raise TrainingFailedError(f"MACE wrote no model file; see {log_path}")
    return {"model": str(model), "epochs": checkpoint_times(log_path)[epoch]["index"] + 1,
            "train_seconds": min(budget_s, spent + seconds),
            "structures_per_s": _throughput(log_path, data_dir / "train.xyz"),
            "command": " ".join(command), "settings": settings, "log": str(log_path),
            "base_command": base, "resumed_after_epochs": resumed_after}


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
