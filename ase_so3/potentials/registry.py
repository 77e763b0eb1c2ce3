"""Model names -> classes. Every model registers itself with :func:`register`."""

from __future__ import annotations

from ase_so3.errors import ConfigError

REGISTRY: dict[str, type] = {}


def register(cls):
    if not cls.name:
        raise ValueError(f"{cls.__name__} has no registry name")
    REGISTRY[cls.name] = cls
    return cls


def get_model_class(name: str):
    import ase_so3.potentials  # noqa: F401  (registers the built-in models)
    try:
        return REGISTRY[name]
    except KeyError:
        raise ConfigError(f"unknown model {name!r}; registered models: {sorted(REGISTRY)}") from None


def build_potential(name: str, **config):
    """``build_potential("tfn", species=["H", "C", "O"], lmax=2)``."""
    return get_model_class(name)(**config)
