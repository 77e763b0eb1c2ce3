"""torch-sim (``pip install torch-sim-atomistic``) model interface for ase_so3 potentials: many
systems integrated at once, each call one batched model pass over all of them.

    import torch_sim as ts
    from ase_so3.engines.torchsim import SO3TorchSimModel
    model = SO3TorchSimModel("escn-rmd17-aspirin", device="cpu", dtype=torch.float64)
    state = ts.io.atoms_to_state([atoms] * 64, device=model.device, dtype=model.dtype)
    final = ts.integrate(system=state, model=model, integrator=ts.Integrator.nvt_langevin,
                         n_steps=1000, timestep=0.0005, temperature=500)

Energies (eV, per system), forces (eV/Å, per atom) and, for cells periodic in all three
directions, stress (eV/Å³, ASE's sign convention, per system; zeros for molecules and slabs,
where it is not defined) come from autograd of the energy, exactly as in
:class:`~ase_so3.SO3Calculator`. Neighbour lists are built on the CPU for each call. A potential
with an uncertainty calibration (:mod:`ase_so3.uncertainty`) also returns ``energy_std`` (eV, per
system) and ``forces_std`` (eV/Å, per atom) in the same pass.
"""

from __future__ import annotations

import numpy as np
import torch
from torch_sim.models.interface import ModelInterface

from ase_so3 import keys as K
from ase_so3.graph import collate_arrays, system_arrays
from ase_so3.potentials.forces import energy_forces_stress


class SO3TorchSimModel(ModelInterface):
    """An ase_so3 potential (file, shipped name or :class:`~ase_so3.potentials.base.Potential`)
    as a torch-sim model."""

    def __init__(self, potential, device: str | torch.device = "cpu",
                 dtype: torch.dtype = torch.float64, compute_stress: bool = True,
                 min_distance: float | None = 0.5):
        super().__init__()
        import copy

        from ase_so3.loading import load_potential
        from ase_so3.potentials.base import Potential
        model = (copy.deepcopy(potential) if isinstance(potential, Potential)
                 else load_potential(potential))
        self._device = torch.device(device)
        self._dtype = dtype
        self._compute_forces = True
        self._compute_stress = compute_stress
        self._memory_scales_with = "n_atoms_x_density"
        self.min_distance = min_distance
        self.potential = model.to(device=self._device, dtype=dtype).eval()
        for p in self.potential.parameters():
            p.requires_grad_(False)
        from ase_so3.uncertainty import FeatureUncertainty
        self.uncertainty = FeatureUncertainty.of(model)

    def _systems(self, state) -> tuple[list[tuple], bool]:
        """Each system's validated arrays and neighbour list, read from the state's tensors
        (no ``ase.Atoms`` per call), and whether the cells are periodic in all directions."""
        pos = state.positions.detach().cpu().numpy().astype(np.float64)
        numbers = state.atomic_numbers.detach().cpu().numpy()
        cells = state.row_vector_cell.detach().cpu().numpy().astype(np.float64)
        systems = state.system_idx.detach().cpu().numpy()
        pbc = np.broadcast_to(np.asarray(state.pbc.detach().cpu() if torch.is_tensor(state.pbc)
                                         else state.pbc, dtype=bool), (3,))
        if np.any(np.diff(systems) < 0):  # torch-sim keeps each system's atoms together
            raise ValueError("the state's atoms are not grouped by system (system_idx decreases)")
        starts = np.searchsorted(systems, np.arange(cells.shape[0] + 1))
        parts = [system_arrays(pos[lo:hi], numbers[lo:hi], cells[s], pbc,
                               self.potential.cutoff, self.min_distance)
                 for s, (lo, hi) in enumerate(zip(starts[:-1], starts[1:]))]
        return parts, bool(pbc.all())

    def forward(self, state, **kwargs) -> dict[str, torch.Tensor]:
        if isinstance(state, dict):
            import torch_sim as ts
            state = ts.SimState(**state, masses=torch.ones_like(state["positions"][:, 0]))
        parts, periodic = self._systems(state)
        self.potential.check_species(np.unique(np.concatenate([p[1] for p in parts])))
        graph = collate_arrays(parts, dtype=self._dtype, device=self._device)
        stress = self._compute_stress and periodic
        from contextlib import nullcontext

        from ase_so3.uncertainty import readout_features
        capture = readout_features(self.potential) if self.uncertainty else nullcontext({})
        with torch.enable_grad(), capture as holder:
            res = energy_forces_stress(self.potential, graph, forces=True, stress=stress)
        out = {"energy": res[K.ENERGY].detach(), "forces": res[K.FORCES].detach()}
        if self.uncertainty is not None:
            out.update(self.uncertainty.evaluate(holder["features"], graph))
        if self._compute_stress:
            out["stress"] = (res[K.STRESS].detach() if stress else
                             torch.zeros((len(parts), 3, 3), dtype=self._dtype,
                                         device=self._device))
        return out
