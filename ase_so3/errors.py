"""Exceptions with messages that say what is wrong and what to do."""

from __future__ import annotations


class ASESO3Error(Exception):
    """Base class of every error raised on purpose by ase_so3."""


class InvalidStructureError(ASESO3Error, ValueError):
    """The structure cannot be evaluated (NaN positions, PBC without a cell, coincident atoms)."""


class UnknownElementError(ASESO3Error, ValueError):
    """The structure contains an element the potential was not trained on."""


class PotentialFileError(ASESO3Error, ValueError):
    """A file is not an ase_so3 potential, is damaged, or was written by a newer version."""


def describe_exception(exc: BaseException, limit: int = 200) -> str:
    """``Type: first line of the message`` (or just ``Type`` when the message is empty), for
    error messages that wrap a library's exception."""
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0][:limit]}" if lines else type(exc).__name__


class CloseAtomsWarning(UserWarning):
    """Two atoms are closer than the calculator's ``min_distance``."""
