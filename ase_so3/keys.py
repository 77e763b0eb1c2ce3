"""Field names and conventions used everywhere in ase_so3, written down once.

The batch ("graph") is a plain ``dict[str, torch.Tensor]`` built by :mod:`ase_so3.graph`.
Shapes use ``N`` atoms, ``E`` edges, ``G`` structures (graphs) in the batch.

Edge convention
---------------
``edge_index[0]`` is the *neighbour* (source, sender) ``j`` and ``edge_index[1]`` is the *centre*
atom (target, receiver) ``i``. Messages flow from ``j`` to ``i`` and are summed at ``i``.
The edge vector points from the centre to the neighbour::

    r_ij = pos[j] - pos[i] + unit_shifts @ cell[graph_of_edge]

so an edge is the vector ``x_j - x_i`` of the SE(3)-Transformer paper.

Feature layout
--------------
Every equivariant feature tensor is ``x[node_or_edge, (l, m), channel]`` with the middle axis of
size ``(lmax + 1) ** 2`` ordered ``l = 0, 1, ..., lmax`` and, inside each degree, ``m = -l..l``
(index ``l * l + l + m``). All degrees carry the same number of channels. The real basis, its
``m`` labels and the spherical-harmonic normalisation are e3nn's (``normalization="component"``:
``|Y^l(r)|^2 = 2l + 1``).

Polar axis
----------
e3nn's real spherical harmonics treat **y** as the polar axis: ``Y^l(+y)`` is non-zero only at
``m = 0``. "Rotate the edge onto the z-axis" in the eSCN paper therefore means, here, rotate the
edge onto ``+y`` (:data:`POLAR_AXIS`). Degree-1 features are Cartesian vectors ``(x, y, z)`` in
that order, and the Wigner-D matrix of degree 1 is the rotation matrix itself.

Parity
------
Features have natural parity ``(-1)^l`` (they start from spherical harmonics of edge vectors),
and only tensor-product paths with ``l_in + l_filter + l_out`` even are used, so all models are
invariant under reflections as well as rotations (O(3), not only SO(3)).
"""

from __future__ import annotations

# --- per-atom fields ---------------------------------------------------------------------
POSITIONS = "positions"  # [N, 3] float, Å
NUMBERS = "numbers"  # [N] long, atomic numbers Z
BATCH = "batch"  # [N] long, index of the structure each atom belongs to
# --- per-edge fields ---------------------------------------------------------------------
EDGE_INDEX = "edge_index"  # [2, E] long: row 0 = neighbour j (source), row 1 = centre i (target)
UNIT_SHIFTS = "unit_shifts"  # [E, 3] float with integer values: lattice translations of j
# --- per-structure fields ----------------------------------------------------------------
CELL = "cell"  # [G, 3, 3] float, Å, rows are lattice vectors (ASE convention)
PBC = "pbc"  # [G, 3] bool
PTR = "ptr"  # [G + 1] long, atoms of structure g are ptr[g]:ptr[g+1]
# --- model outputs -----------------------------------------------------------------------
ENERGY = "energy"  # [G] float, eV
NODE_ENERGY = "node_energy"  # [N] float, eV
FORCES = "forces"  # [N, 3] float, eV/Å
STRESS = "stress"  # [G, 3, 3] float, eV/Å^3, (1/V) dE/d(strain)
VIRIAL = "virial"  # [G, 3, 3] float, eV, -dE/d(strain)
ENERGY_STD = "energy_std"  # [G] float64, eV: calibrated uncertainty of the energy
FORCES_STD = "forces_std"  # [N] float64, eV/Å: calibrated RMS error of each atom's force vector

SENDER = 0  # row of EDGE_INDEX holding the neighbour j
RECEIVER = 1  # row of EDGE_INDEX holding the centre atom i

POLAR_AXIS = (0.0, 1.0, 0.0)  # the axis Y^l is symmetric about (e3nn convention: +y)
SH_NORMALIZATION = "component"  # |Y^l(r_hat)|^2 = 2l + 1


def lm_index(l: int, m: int) -> int:
    """Position of component (l, m) on the middle axis of a feature tensor."""
    if not -l <= m <= l:
        raise ValueError(f"m={m} out of range for l={l}")
    return l * l + l + m


def num_lm(lmax: int) -> int:
    """Size of the (l, m) axis for degrees 0..lmax."""
    return (lmax + 1) ** 2
