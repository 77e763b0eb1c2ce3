"""How the harness names and builds calculators: ``{"kind": "ours", "path": ...}`` for an ase_so3
potential (file or shipped name) and ``{"kind": "mace", "path": ...}`` for a MACE model file (``"options"``: extra calculator
keyword arguments, e.g. ``{"max_atoms_per_chunk": 3000}`` or ``{"compile": true}`` for ours,
``{"compile_mode": "default"}`` for MACE), so
that a worker process can rebuild the same calculator from a JSON line."""

from __future__ import annotations


def make_calculator(spec: dict, device: str = "cpu", dtype: str = "float64"):
    if spec["kind"] == "ours":
        from ase_so3.calculator import SO3Calculator
        return SO3Calculator(spec["path"], device=device, dtype=dtype, **spec.get("options", {}))
    if spec["kind"] == "mace":
        from ase_so3.benchmark.mace_backend import mace_calculator
        return mace_calculator(spec["path"], device=device, dtype=dtype, **spec.get("options", {}))
    raise ValueError(f"unknown model kind {spec['kind']!r}")


def num_parameters(calc) -> int:
    if hasattr(calc, "potential"):
        return calc.potential.num_parameters()
    from ase_so3.benchmark.mace_backend import mace_num_parameters
    return mace_num_parameters(calc)


def centred(atoms):
    """A copy of ``atoms``, moved so that the mean of its positions is the origin unless it is
    periodic in any direction (energies and forces do not change under a translation).

    MACE's neighbour list (``mace.data.neighborhood``) boxes a molecule in a cell of side
    5 x r_max x (largest |coordinate| + 1): revised-MD17 benzene, whose centre of mass drifts up
    to 200 Å from the origin, gets a 5000 Å box and minutes of binning per structure."""
    out = atoms.copy()
    if not atoms.pbc.any():
        out.positions = out.positions - out.positions.mean(axis=0)
    return out


def predict(calc, images, batch_size: int = 16) -> list[dict]:
    """Energy (eV) and forces (eV/Å) of each structure: batched for ase_so3, one by one through
    ASE otherwise."""
    if hasattr(calc, "calculate_many"):
        return [{"energy": r["energy"], "forces": r["forces"]}
                for r in calc.calculate_many(images, batch_size=batch_size)]
    out = []
    for atoms in images:
        atoms = centred(atoms)  # MACE's neighbour list is slow far from the origin
        atoms.calc = calc
        out.append({"energy": float(atoms.get_potential_energy()),
                    "forces": atoms.get_forces().copy()})
    return out
