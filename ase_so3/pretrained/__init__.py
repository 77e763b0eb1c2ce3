"""Pretrained potentials shipped inside the package: ``<name>.pt`` with a model card
``<name>.json`` beside it (data, split, hyperparameters, command, measured test errors)."""

from __future__ import annotations

import json
from pathlib import Path

from ase_so3.errors import UnknownNameError

HERE = Path(__file__).resolve().parent


def list_potentials() -> list[str]:
    """Names of the shipped potentials, e.g. ``["escn-rmd17-aspirin", ...]``."""
    return sorted(p.stem for p in HERE.glob("*.pt"))


def potential_path(name: str) -> Path:
    path = HERE / f"{name}.pt"
    if not path.is_file():
        raise UnknownNameError(f"no shipped potential {name!r}; shipped: "
                               f"{', '.join(list_potentials())}")
    return path


def model_card(name: str) -> dict:
    """The model card of a shipped potential (an empty dict if it has none)."""
    card = HERE / f"{name}.json"
    return json.loads(card.read_text()) if card.is_file() else {}
