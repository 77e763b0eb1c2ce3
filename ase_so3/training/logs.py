"""The per-epoch logs of a training run, ``metrics.csv`` and ``metrics.jsonl``: one row per epoch,
appended while the files end at the previous epoch, rewritten whole (atomically) from the
checkpoint's history otherwise, so a kill at any instant followed by ``--resume`` never leaves a
duplicated or missing row."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

from ase_so3.io_utils import atomic_path


def append_row(out: Path, row: dict, history: list[dict]) -> None:
    path = Path(out) / "metrics.csv"
    header = _header(path) if path.exists() else None
    if (row["epoch"] == 1 or header is None or last_logged_epoch(path) != row["epoch"] - 1
            or set(header) != set(row)):  # a column added since: every row again, one header
        rewrite(out, history)
        return
    with open(path, "a", newline="") as f:
        csv.DictWriter(f, fieldnames=header).writerow(row)
    with open(Path(out) / "metrics.jsonl", "a") as f:
        f.write(json.dumps(row) + "\n")


def rewrite(out: Path, history: list[dict]) -> None:
    """Both files from ``history``, each in one atomic replace. The CSV's columns are every key
    of any row (a run resumed by a newer version may log more), empty where a row lacks one."""
    if not history:
        return
    columns = list(dict.fromkeys(k for row in history for k in row))
    with atomic_path(Path(out) / "metrics.csv") as tmp:
        with open(tmp, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=columns, restval="")
            w.writeheader()
            w.writerows(history)
    with atomic_path(Path(out) / "metrics.jsonl") as tmp:
        tmp.write_text("".join(json.dumps(r) + "\n" for r in history))


def read_csv(path: Path) -> list[dict]:
    """The rows of a ``metrics.csv`` as floats (a column a row has no value in is left out)."""
    with open(path) as f:
        return [{k: float(v) for k, v in r.items() if v != ""} for r in csv.DictReader(f)]


def _header(path: Path) -> list[str] | None:
    try:
        with open(path, newline="") as f:
            return next(csv.reader(f), None)
    except OSError:
        return None


def read_history(out: Path) -> list[dict]:
    """Per-epoch metrics of the run in folder ``out``: ``metrics.jsonl``, else ``metrics.csv``."""
    out = Path(out)
    if (out / "metrics.jsonl").is_file():
        return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return read_csv(out / "metrics.csv")


def last_logged_epoch(path: Path) -> int | None:
    try:
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
        return int(rows[-1]["epoch"]) if rows else 0
    except (OSError, KeyError, ValueError):
        return None


def finite_or_none(obj):
    """JSON has no NaN: non-finite numbers become null."""
    if isinstance(obj, dict):
        return {k: finite_or_none(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite_or_none(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj
