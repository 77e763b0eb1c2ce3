"""``load_potential(name_or_path)``: a potential file, or the name of a shipped potential."""

from __future__ import annotations

from pathlib import Path

from ase_so3.errors import PotentialFileError


def load_potential(name_or_path):
    """Load a potential from a file written by ``Potential.save`` or by the name of a shipped one
    (see :func:`ase_so3.list_potentials`). Returns the model in float64 on the CPU, in eval mode."""
    from ase_so3.potentials.serialization import load_potential_file
    from ase_so3.pretrained import list_potentials, potential_path
    path = Path(name_or_path)
    if path.is_file():
        return load_potential_file(path)
    name = str(name_or_path)
    if name in list_potentials():
        model = load_potential_file(potential_path(name))
        model.metadata.setdefault("pretrained_name", name)
        return model
    shipped = ", ".join(list_potentials()) or "none"
    raise PotentialFileError(
        f"{name_or_path!r} is neither a potential file nor the name of a shipped potential "
        f"(shipped: {shipped})")
