"""Small structures shipped with the package (one frame per rMD17 molecule)."""

from __future__ import annotations

from pathlib import Path

from ase_so3.errors import UnknownNameError

HERE = Path(__file__).resolve().parent


def named_structures() -> list[str]:
    return sorted(p.stem for p in HERE.glob("*.xyz"))


def load_named_structure(name: str):
    """``load_named_structure("aspirin")`` -> ``ase.Atoms`` (no cell, no PBC)."""
    from ase.io import read
    path = HERE / f"{name}.xyz"
    if not path.is_file():
        raise UnknownNameError(f"no shipped structure {name!r}; available: {', '.join(named_structures())}")
    return read(path)
