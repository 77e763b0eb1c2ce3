"""Exceptions with messages that say what is wrong and what to do."""

from __future__ import annotations


class ASESO3Error(Exception):
    """Base class of every error raised on purpose by ase_so3."""


class ConfigError(ASESO3Error, ValueError):
    """An option of a model, a training, a calculator or a command has a value that cannot work."""


class DataError(ASESO3Error, ValueError):
    """Structures or a data file that cannot be converted or written as given."""


class UnknownNameError(ASESO3Error, KeyError):
    """No shipped potential, shipped structure, data-set split or model has this name."""

    def __str__(self) -> str:  # the message, not KeyError's quoted repr of it
        return str(self.args[0]) if self.args else ""


class MissingFileError(ASESO3Error, FileNotFoundError):
    """A file named by the user does not exist."""


class UnavailableError(ASESO3Error, RuntimeError):
    """Something the request needs is not on this machine (CUDA, a compiler, an optional
    package)."""


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
