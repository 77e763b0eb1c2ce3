"""The potential file format: one ``torch.save`` dict of plain data, loadable weights-only.

Keys: ``format`` ("ase_so3.potential"), ``format_version``, ``model`` (registry name), ``config``
(dict), ``state_dict``, ``metadata`` (package version, units, training description, ...), and
``checksum`` (sha256 over the tensors and config, so damaged files are detected). No pickled code:
``torch.load(path, weights_only=True)`` reads it.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch

from ase_so3.errors import PotentialFileError, describe_exception
from ase_so3.io_utils import atomic_path

FORMAT = "ase_so3.potential"
FORMAT_VERSION = 1
UNITS = {"energy": "eV", "length": "Å", "forces": "eV/Å", "stress": "eV/Å^3"}


def _checksum(model: str, config: dict, state: dict) -> str:
    h = hashlib.sha256()
    h.update(model.encode())
    h.update(json.dumps(config, sort_keys=True).encode())
    for k in sorted(state):
        t = state[k].detach().cpu().contiguous()
        h.update(k.encode())
        h.update(str(t.dtype).encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def save_potential(potential, path, metadata: dict | None = None) -> None:
    from ase_so3 import __version__
    state = {k: v.detach().cpu() for k, v in potential.state_dict().items()}
    config = potential.config.to_dict()
    meta = {"ase_so3_version": __version__, "units": dict(UNITS)}
    meta.update(metadata or {})
    payload = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "model": potential.name,
        "config": config,
        "state_dict": state,
        "metadata": meta,
        "checksum": _checksum(potential.name, config, state),
    }
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def update_metadata(path, updates: dict, output=None) -> None:
    """Write the potential file ``path`` again (to ``output``, default in place, atomically) with
    its metadata updated by ``updates``: config, weights (in their stored dtypes) and checksum
    unchanged, byte for byte."""
    payload = read_potential_file(path)
    payload["metadata"] = {**payload.get("metadata", {}), **updates}
    with atomic_path(output if output is not None else path) as tmp:
        torch.save(payload, tmp)


def read_potential_file(path) -> dict:
    """Load and check a potential file; raise :class:`PotentialFileError` with advice if bad."""
    path = Path(path)
    if not path.is_file():
        raise PotentialFileError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise PotentialFileError(
            f"{path} is empty (0 bytes): the file was truncated or never written. Export the "
            "potential again (Potential.save(), or potential.pt of a training run)")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise PotentialFileError(
            f"{path} is not a readable ase_so3 potential ({describe_exception(exc)}). It may be "
            "truncated or damaged, or contain pickled code, which is refused; re-export it with "
            "Potential.save()") from exc
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise PotentialFileError(
            f"{path} is not an ase_so3 potential file (no '{FORMAT}' header). Training "
            "checkpoints are loaded with `ase-so3 train --resume`; export potentials with "
            "Potential.save()")
    version = payload.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        writer = payload.get("metadata", {}).get("ase_so3_version", "unknown")
        raise PotentialFileError(
            f"{path} uses potential format version {version}, written by ase_so3 {writer}; this "
            f"ase_so3 reads versions <= {FORMAT_VERSION}. Upgrade ase_so3 (pip install -U ase_so3)")
    for key in ("model", "config", "state_dict"):
        if key not in payload:
            raise PotentialFileError(f"{path} is damaged: the '{key}' entry is missing")
    expected = payload.get("checksum")
    if expected is not None and expected != _checksum(payload["model"], payload["config"],
                                                      payload["state_dict"]):
        raise PotentialFileError(f"{path} is damaged: its checksum does not match its content")
    return payload


def load_potential_file(path):
    from ase_so3.potentials.registry import REGISTRY, get_model_class
    payload = read_potential_file(path)
    try:
        cls = get_model_class(payload["model"])
    except ValueError:
        raise PotentialFileError(
            f"{path} holds a '{payload['model']}' model, which this ase_so3 does not know "
            f"(known: {sorted(REGISTRY)}); upgrade ase_so3") from None
    try:
        model = cls(payload["config"])
        model.load_state_dict(payload["state_dict"], strict=True)
    except (RuntimeError, ValueError, TypeError) as exc:
        raise PotentialFileError(
            f"{path}: the weights do not fit a '{payload['model']}' model with the stored "
            f"config ({str(exc).splitlines()[0][:200]})") from exc
    model.metadata = dict(payload.get("metadata", {}))
    model.eval()
    return model
