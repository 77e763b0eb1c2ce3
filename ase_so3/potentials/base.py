"""The base class of every potential, its frozen config, and the energy pipeline around a model.

A potential maps a batch (:mod:`ase_so3.graph`) to per-atom and per-structure energies (eV). It
never computes forces: :mod:`ase_so3.potentials.forces` differentiates its energy. The per-atom
energy is ``scale * model(x) + shift + atomic_energies[element]``; the scale, shift and per-element
reference energies are buffers, set by training, saved with the weights.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from ase.data import atomic_numbers, chemical_symbols
from torch import nn

from ase_so3 import keys as K
from ase_so3.errors import ConfigError, UnknownElementError
from ase_so3.graph import edge_vectors, num_graphs
from ase_so3.scatter import scatter_sum
from ase_so3.tracing import static_shapes_required


def normalize_species(species) -> tuple[int, ...]:
    """Symbols or atomic numbers -> sorted tuple of unique atomic numbers."""
    out = set()
    for s in species:
        if isinstance(s, str):
            if s not in atomic_numbers:
                raise ConfigError(f"unknown chemical symbol {s!r}")
            out.add(atomic_numbers[s])
        else:
            z = int(s)
            if not 1 <= z < len(chemical_symbols):
                raise ConfigError(f"atomic number {z} out of range")
            out.add(z)
    if not out:
        raise ConfigError("a potential needs at least one element in `species`")
    return tuple(sorted(out))


@dataclass(frozen=True)
class PotentialConfig:
    """Hyperparameters shared by every model. Subclasses add their own fields."""

    species: tuple[int, ...] = (1, 6, 7, 8)
    cutoff: float = 5.0  # Å
    lmax: int = 2
    channels: int = 32
    num_layers: int = 3
    num_radial: int = 8
    radial_hidden: int = 64
    readout_hidden: int = 32
    envelope_p: int = 6
    avg_num_neighbors: float = 12.0  # messages are summed and divided by this
    # options of every model (defaults: the models as first released, so old files load as
    # they were); see each model's docstring for where they act
    edge_species: bool = False  # radial networks also see the species of both atoms
    gate: bool = False  # gated nonlinearity instead of the norm nonlinearity in the node update
    ffn_hidden: int = 0  # width of a gated feed-forward block after each layer; 0: none
    norm: bool = False  # RMS norm over degrees before each block and the readout (pre-norm)

    def __post_init__(self):
        object.__setattr__(self, "species", normalize_species(self.species))
        object.__setattr__(self, "cutoff", float(self.cutoff))
        object.__setattr__(self, "avg_num_neighbors", float(self.avg_num_neighbors))
        if self.cutoff <= 0:
            raise ConfigError("cutoff must be positive (Å)")
        for name in ("lmax", "channels", "num_layers", "num_radial", "radial_hidden"):
            if int(getattr(self, name)) != getattr(self, name) or getattr(self, name) < 0:
                raise ConfigError(f"{name} must be a non-negative integer")
        if self.channels < 1 or self.num_layers < 1 or self.num_radial < 1:
            raise ConfigError("channels, num_layers and num_radial must be >= 1")
        if int(self.ffn_hidden) != self.ffn_hidden or self.ffn_hidden < 0:
            raise ConfigError("ffn_hidden must be a non-negative integer (0: no feed-forward block)")

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["species"] = list(self.species)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]):
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ConfigError(f"unknown {cls.__name__} fields: {sorted(unknown)}")
        return cls(**d)


class Potential(nn.Module):
    """Base class: species handling, energy assembly and the save format."""

    name: ClassVar[str] = ""
    uses_edge_frame: ClassVar[bool] = False  # rotates features into edge frames (so3.cpu_kernels)
    config_class: ClassVar[type] = PotentialConfig

    def __init__(self, config=None, **kwargs):
        super().__init__()
        if config is None:
            config = self.config_class(**kwargs)
        elif isinstance(config, dict):
            config = self.config_class.from_dict({**config, **kwargs})
        elif kwargs:
            config = dataclasses.replace(config, **kwargs)
        if not isinstance(config, self.config_class):
            raise TypeError(f"{type(self).__name__} needs a {self.config_class.__name__}")
        self.config = config
        z = torch.full((len(chemical_symbols),), -1, dtype=torch.long)
        z[list(config.species)] = torch.arange(len(config.species), dtype=torch.long)
        self.register_buffer("z_to_index", z)
        n = len(config.species)
        self.register_buffer("atomic_energies", torch.zeros(n, dtype=torch.float64))
        self.register_buffer("scale", torch.ones((), dtype=torch.float64))
        self.register_buffer("shift", torch.zeros((), dtype=torch.float64))

    # -- species -----------------------------------------------------------------------------
    @property
    def species(self) -> tuple[int, ...]:
        return self.config.species

    @property
    def cutoff(self) -> float:
        return self.config.cutoff

    @property
    def receptive_hops(self) -> int:
        """Neighbour-list hops an atom's energy depends on: one per message-passing layer."""
        return self.config.num_layers

    def check_species(self, numbers) -> None:
        """Raise :class:`UnknownElementError` if ``numbers`` has elements this potential lacks."""
        unknown = sorted({int(z) for z in numbers} - set(self.species))
        if unknown:
            names = ", ".join(f"{chemical_symbols[z]} (Z={z})" for z in unknown)
            known = ", ".join(chemical_symbols[z] for z in self.species)
            raise UnknownElementError(
                f"this potential was trained on {known} only and cannot evaluate {names}; "
                "use a potential trained on these elements or remove those atoms")

    def species_index(self, numbers: torch.Tensor) -> torch.Tensor:
        idx = self.z_to_index[numbers]
        if not static_shapes_required(idx) and bool((idx < 0).any()):  # capture: checked before
            self.check_species(numbers.tolist())
        return idx

    # -- energy ------------------------------------------------------------------------------
    def node_energies(self, graph: dict, species: torch.Tensor,
                      vectors: torch.Tensor) -> torch.Tensor:
        """``[N]`` unscaled per-atom model outputs; implemented by each model."""
        raise NotImplementedError

    def forward(self, graph: dict, eager: bool = False) -> dict[str, torch.Tensor]:
        """``eager``: the model body as written, also after :meth:`compile`."""
        species = self.species_index(graph[K.NUMBERS])
        vectors = edge_vectors(graph)
        out = (self.node_energies if eager else self._node_energy_fn)(graph, species, vectors)
        node_energy = self.scale * out + self.shift + self.atomic_energies[species]
        energy = scatter_sum(node_energy, graph[K.BATCH], num_graphs(graph))
        return {K.ENERGY: energy, K.NODE_ENERGY: node_energy}

    @property
    def _node_energy_fn(self):
        return self.__dict__.get("_compiled_node_energies") or self.node_energies

    def compile(self, mode: str | None = None) -> "Potential":
        """Run the model body (:meth:`node_energies`) through ``torch.compile`` with dynamic
        shapes from now on; species lookup, energy assembly and autograd stay eager."""
        self.__dict__["_compiled_node_energies"] = torch.compile(self.node_energies, dynamic=True,
                                                                 mode=mode)
        return self

    def _finish_init(self) -> None:
        """Called at the end of subclass constructors: all parameters and buffers in float64."""
        self.to(torch.float64)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def save(self, path, metadata: dict | None = None) -> None:
        """Write config + weights + metadata to one file (loads with weights-only torch.load)."""
        from ase_so3.potentials.serialization import save_potential
        save_potential(self, path, metadata=metadata)
