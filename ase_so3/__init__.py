"""ase_so3: SO(3)-equivariant machine-learned interatomic potentials for ASE.

Units everywhere: eV, Å, eV/Å, eV/Å^3.
"""

__version__ = "0.1.0"

from ase_so3.allocator import use_huge_pages  # noqa: E402

use_huge_pages()  # before PyTorch's first allocation; ASE_SO3_MALLOC=system: off (allocator.py)

from ase_so3.calculator import SO3Calculator  # noqa: E402
from ase_so3.loading import load_potential  # noqa: E402
from ase_so3.pretrained import list_potentials  # noqa: E402

__all__ = ["SO3Calculator", "load_potential", "list_potentials", "__version__"]
