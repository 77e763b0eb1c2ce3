"""``load_potential(name_or_path)``: a potential file, or the name of a shipped potential."""

from __future__ import annotations

from pathlib import Path

from ase_so3.errors import PotentialFileError


def resolve_potential(name_or_path, what: str = "") -> Path:
    """The file of a potential given as a path or as the name of a shipped potential
    (``what``: how the caller names the argument in the error, e.g. ``"init_from="``)."""
    from ase_so3.pretrained import list_potentials, potential_path
    path = Path(name_or_path)
    if path.is_file():
        return path
    name = str(name_or_path)
    if name in list_potentials():
        return potential_path(name)
    shipped = ", ".join(list_potentials()) or "none"
    raise PotentialFileError(
        f"{what}{name_or_path!r} is neither a potential file nor a shipped potential "
        f"(shipped: {shipped})")


def load_potential(name_or_path):
    """Load a potential from a file written by ``Potential.save`` or by the name of a shipped one
    (see :func:`ase_so3.list_potentials`). Returns the model in float64 on the CPU, in eval mode."""
    from ase_so3.potentials.serialization import load_potential_file
    path = resolve_potential(name_or_path)
    model = load_potential_file(path)
    if not Path(name_or_path).is_file():  # a shipped name
        model.metadata.setdefault("pretrained_name", str(name_or_path))
    return model
