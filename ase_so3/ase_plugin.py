"""Entry point for ASE's plugin system (group ``ase.plugins``).

ASE's plugin collection (``ase._4.plugins.plugins`` in ASE >= 3.25) discovers ase_so3's
calculator through this module's ``__ase_plugins__``. On older ASE versions the set is empty and
``SO3Calculator`` is still importable from ``ase_so3``.
"""

from __future__ import annotations

__ase_plugins__: set = set()

try:  # ASE's v4 plugin API is experimental; stay importable without it
    from ase._4.plugins.plugin import CalculatorPlugin
except ImportError:  # pragma: no cover - older ASE
    CalculatorPlugin = None

if CalculatorPlugin is not None:
    __ase_plugins__ = {
        CalculatorPlugin(
            "so3",
            implementation="ase_so3.calculator.SO3Calculator",
            citation="ase_so3: SO(3)-equivariant potentials (TFN, SE(3)-Transformer, eSCN) for ASE",
        )
    }
