"""ase_so3: SO(3)-equivariant machine-learned interatomic potentials for ASE.

Units everywhere: eV, Å, eV/Å, eV/Å^3.
"""

__version__ = "0.2.1"

from ase_so3.calculator import SO3Calculator  # noqa: E402
from ase_so3.loading import load_potential  # noqa: E402
from ase_so3.pretrained import list_potentials  # noqa: E402


def _register_with_ase() -> None:
    """``ase.calculators.calculator.get_calculator_class("so3")`` (ASE's classic lookup) finds
    the calculator once ase_so3 is imported."""
    from ase.calculators import calculator as ase_calculator
    register = getattr(ase_calculator, "register_calculator_class", None)
    if register is not None and "so3" not in ase_calculator.external_calculators:
        register("so3", SO3Calculator)


_register_with_ase()

__all__ = ["SO3Calculator", "load_potential", "list_potentials", "__version__"]
