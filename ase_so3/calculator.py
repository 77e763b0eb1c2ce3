"""``SO3Calculator``: any ase_so3 potential as an ASE calculator.

    from ase_so3 import SO3Calculator
    atoms.calc = SO3Calculator("escn-rmd17-aspirin")             # a shipped potential
    atoms.calc = SO3Calculator("model.pt", device="cuda", dtype="float32")
    atoms.calc = SO3Calculator(TFN(species=["H", "C", "O"]))     # a model object (copied)

Results are in eV, Å, eV/Å and eV/Å^3 (stress in Voigt order xx, yy, zz, yz, xz, xy, for 3-D
periodic cells only). Forces and stress come from autograd of the energy.
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import torch
from ase.calculators.calculator import Calculator, all_changes
from ase.stress import full_3x3_to_voigt_6_stress

from ase_so3.errors import ConfigError, UnavailableError
from ase_so3.graph import atoms_to_graph
from ase_so3.loading import load_potential
from ase_so3.neighbors import VerletNeighborList
from ase_so3.potentials.base import Potential
from ase_so3.potentials.forces import energy_forces_stress, split_by_structure
from ase_so3.uncertainty import ENERGY_STD, FORCES_STD, FeatureUncertainty, readout_features

_DTYPES = {"float32": torch.float32, "float64": torch.float64,
           torch.float32: torch.float32, torch.float64: torch.float64}


def parse_dtype(dtype) -> torch.dtype:
    try:
        return _DTYPES[dtype]
    except (KeyError, TypeError):
        raise ConfigError(f"dtype must be 'float32' or 'float64', got {dtype!r}") from None


def parse_device(device) -> torch.device:
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UnavailableError(f"device {str(device)!r} was requested but CUDA is not available "
                               "(torch.cuda.is_available() is False); use device='cpu'")
    return device


class SO3Calculator(Calculator):
    """ASE calculator for ase_so3 potentials.

    Parameters
    ----------
    potential: a :class:`~ase_so3.potentials.Potential`, a path to a file written by
        ``Potential.save``, or the name of a shipped potential (:func:`ase_so3.list_potentials`).
        A model object is copied, so calculators with different dtypes can share one.
    device: ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
    dtype: ``"float64"`` (default) or ``"float32"``; per calculator, torch's global default
        dtype is never changed.
    min_distance: warn (:class:`ase_so3.errors.CloseAtomsWarning`) when two atoms are closer than
        this (Å); ``None`` disables the check. Atoms at the same position always raise.
    skin: Verlet skin (Å) of the neighbour list kept between calls: it is rebuilt only when an
        atom moved more than ``skin / 2`` or the cell changed; ``0`` rebuilds every call.
    max_atoms_per_chunk: bound memory on large structures: evaluate them in spatial chunks of at
        most this many atoms, each with its halo of neighbours (:mod:`ase_so3.potentials.chunked`;
        same results to round-off). Peak memory then follows the chunk size, not the structure
        size. ``None`` (default) evaluates every structure in one pass.
    compile: ``True`` runs the potential through ``torch.compile`` (dynamic shapes, so MD steps
        with changing neighbour counts do not recompile); a string is passed as the compile
        ``mode`` (for CUDA graphs use ``cuda_graphs=True``: inductor's ``"reduce-overhead"``
        crashed in the backward with torch 2.11 on an H100). Forces and stress still come
        from autograd of the compiled energy and equal the eager ones to round-off (tested). The
        first call pays the compilation (tens of seconds to minutes on CPU).
    cuda_graphs: on a CUDA device, capture the whole energy+forces(+stress) step as a CUDA graph
        and replay it (:mod:`ase_so3.cuda_graphs`): for small structures, where launching kernels
        one by one costs more than running them. Same results as without (tested); a new capture
        when the atom count changes or the edge count outgrows the padded capacity.
    uncertainty: ``"auto"`` (default) adds ``energy_std`` (eV) and ``forces_std`` (eV/Å, one per
        atom: the calibrated root-mean-square error of that atom's force vector) to the results
        when the potential carries a calibration (:mod:`ase_so3.uncertainty`; ``ase-so3
        calibrate``); ``True`` requires one, ``False`` never computes them.
    """

    implemented_properties = ["energy", "free_energy", "energies", "forces", "stress"]

    def __init__(self, potential, device="cpu", dtype="float64", min_distance: float | None = 0.5,
                 skin: float = 0.5, max_atoms_per_chunk: int | None = None,
                 compile: bool | str = False, cuda_graphs: bool = False,
                 uncertainty: bool | str = "auto", **kwargs):
        super().__init__(**kwargs)
        if isinstance(potential, (str, Path)):
            model = load_potential(potential)
        elif isinstance(potential, Potential):
            model = copy.deepcopy(potential)
        else:
            raise TypeError("potential must be a Potential, a file path or a shipped potential "
                            f"name, not {type(potential).__name__}")
        self.device = parse_device(device)
        self.dtype = parse_dtype(dtype)
        self.min_distance = min_distance
        self.potential = model.to(device=self.device, dtype=self.dtype).eval()
        for p in self.potential.parameters():
            p.requires_grad_(False)
        self.neighbors = VerletNeighborList(self.potential.cutoff, skin)
        if max_atoms_per_chunk is not None and max_atoms_per_chunk < 1:
            raise ConfigError("max_atoms_per_chunk must be a positive number of atoms (or None)")
        self.max_atoms_per_chunk = max_atoms_per_chunk
        if compile:
            self.potential.compile(compile if isinstance(compile, str) else None)
        self.graph_step = None
        if cuda_graphs:
            if self.device.type != "cuda":
                raise ConfigError(f"cuda_graphs=True needs a CUDA device, not {str(self.device)!r}")
            if compile:
                raise ConfigError("use compile or cuda_graphs, not both: capturing a compiled "
                                  "model is untested (cuda_graphs alone was the faster on GPU)")
            from ase_so3.cuda_graphs import CUDAGraphStep
            self.graph_step = CUDAGraphStep(self.potential)
        self.uncertainty = _uncertainty(model, uncertainty)
        if self.uncertainty is not None:
            self.implemented_properties = [*self.implemented_properties, ENERGY_STD, FORCES_STD]
        # ASE's convention: the options in self.parameters, so todict() and trajectories record
        # how the forces were computed
        self.parameters.update(
            potential=_describe(potential, model), device=str(self.device),
            dtype=str(self.dtype).replace("torch.", ""), min_distance=min_distance, skin=skin,
            max_atoms_per_chunk=max_atoms_per_chunk, compile=compile, cuda_graphs=cuda_graphs,
            uncertainty=uncertainty)

    def set(self, **kwargs):
        """ASE's ``set``; the options of the constructor are fixed (make a new calculator)."""
        fixed = sorted(k for k in kwargs if k in _OPTIONS and kwargs[k] != self.parameters.get(k))
        if fixed:
            raise ConfigError(f"{', '.join(fixed)} of an SO3Calculator cannot change after it is "
                              "made; create a new SO3Calculator with the new value")
        return super().set(**kwargs)

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        if "stress" in properties and not np.all((atoms if atoms is not None else self.atoms).pbc):
            from ase.calculators.calculator import PropertyNotImplementedError
            pbc = (atoms if atoms is not None else self.atoms).pbc.tolist()
            raise PropertyNotImplementedError(
                f"stress needs a cell periodic in all three directions; this structure has "
                f"pbc={pbc}. Molecules and slabs have energies and forces only")
        super().calculate(atoms, properties, system_changes)
        atoms = self.atoms
        self.potential.check_species(atoms.numbers)
        if self.max_atoms_per_chunk is not None and len(atoms) > self.max_atoms_per_chunk:
            self._calculate_chunked(atoms)
            return
        graph = atoms_to_graph(atoms, self.potential.cutoff, dtype=self.dtype, device=self.device,
                               min_distance=self.min_distance, pair_list=self.neighbors)
        periodic = bool(np.all(atoms.pbc))
        with torch.enable_grad():
            out = self._evaluate(graph, periodic)
        self.results = _ase_results(split_by_structure(out, graph)[0], periodic)

    def _evaluate(self, graph: dict, stress: bool) -> dict:
        """Energy, forces (and stress) of one batch, with the uncertainty when calibrated."""
        plain = self.graph_step is None and "_compiled_node_energies" not in self.potential.__dict__
        if self.uncertainty is None or not plain:
            if self.graph_step is not None:
                out = self.graph_step(graph, stress=stress)
            else:
                out = energy_forces_stress(self.potential, graph, forces=True, stress=stress)
            if self.uncertainty is None:
                return out
            with torch.no_grad(), readout_features(self.potential) as holder:
                self.potential(graph, eager=True)  # compiled or captured: an eager pass's features
        else:
            with readout_features(self.potential) as holder:
                out = energy_forces_stress(self.potential, graph, forces=True, stress=stress)
        return {**out, **self.uncertainty.evaluate(holder["features"], graph)}

    def _calculate_chunked(self, atoms) -> None:
        from ase_so3.graph import structure_arrays
        from ase_so3.potentials.chunked import energy_forces_stress_chunked
        pos, numbers, cell, pbc, centre, neigh, shifts = structure_arrays(
            atoms, self.potential.cutoff, self.min_distance, self.neighbors)
        periodic = bool(np.all(pbc))
        r = energy_forces_stress_chunked(self.potential, pos, numbers, cell, (centre, neigh, shifts),
                                         self.max_atoms_per_chunk, periodic, self.dtype, self.device,
                                         uncertainty=self.uncertainty)
        self.results = _ase_results(r, periodic)

    def calculate_many(self, images, batch_size: int = 32) -> list[dict]:
        """Energies, per-atom energies, forces (and stress for 3-D periodic structures) of many
        structures, ``batch_size`` structures per model pass. Returns one dict per structure with
        the same keys and units as ``calc.results``; the calculator's own cache is untouched."""
        out: list[dict] = []
        for start in range(0, len(images), batch_size):
            chunk = list(images[start:start + batch_size])
            for a in chunk:
                self.potential.check_species(a.numbers)
            graph = atoms_to_graph(chunk, self.potential.cutoff, dtype=self.dtype,
                                   device=self.device, min_distance=self.min_distance)
            periodic = [bool(np.all(a.pbc)) for a in chunk]
            with torch.enable_grad():
                res = self._evaluate(graph, any(periodic))
            out.extend(_ase_results(r, p) for r, p in zip(split_by_structure(res, graph), periodic))
        return out


_OPTIONS = ("potential", "device", "dtype", "min_distance", "skin", "max_atoms_per_chunk",
            "compile", "cuda_graphs", "uncertainty")


def _describe(spec, model) -> str | dict:
    """The ``potential`` parameter: the shipped name or file path as given, or for a model
    object its model name and config."""
    if isinstance(spec, (str, Path)):
        return str(spec)
    return {"model": model.name, "config": model.config.to_dict()}


def _ase_results(r: dict, periodic: bool) -> dict:
    """One structure's results in ASE's keys: free_energy added, stress in Voigt order for 3-D
    periodic structures only."""
    out = {"energy": r["energy"], "free_energy": r["energy"], "energies": r["energies"],
           "forces": r["forces"]}
    if periodic:
        out["stress"] = full_3x3_to_voigt_6_stress(r["stress"])
    for key in (ENERGY_STD, FORCES_STD):
        if key in r:
            out[key] = r[key]
    return out


def _uncertainty(model, option) -> FeatureUncertainty | None:
    if option not in ("auto", True, False):
        raise ConfigError(f"uncertainty must be 'auto', True or False, got {option!r}")
    cal = FeatureUncertainty.of(model) if option else None
    if option is True and cal is None:
        raise ConfigError("uncertainty=True, but this potential carries no uncertainty "
                          "calibration; add one with `ase-so3 calibrate POTENTIAL DATA.h5 -o "
                          "OUT.pt` (or use uncertainty='auto')")
    return cal
