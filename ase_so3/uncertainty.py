"""Calibrated uncertainty for any potential, from how unlike the training data each atom is.

Every model ends in the same readout: an atom's energy is a linear map of its last hidden
features ``f_i`` (the input of the readout's last layer). For each element, the training atoms'
features give a second-moment matrix ``C = mean(f f^T)`` (with a constant feature for the bias);
an atom's distance from the training data is ``u_i = f_i^T (C + reg I)^-1 f_i``, the squared
Mahalanobis norm of its feature, as in the local prediction rigidity of Chong et al. (J. Chem.
Theory Comput. 19, 2023) and the last-layer estimates of Bigi et al. (Mach. Learn.: Sci. Technol.
5, 2024). Two scales fitted on validation structures turn it into errors:

- ``forces_std[i] = a_F * sqrt(u_i)``: the root-mean-square error of atom ``i``'s force vector
  (eV/Å); ``a_F^2 = mean(|dF_i|^2 / u_i)`` over the validation atoms, the maximum-likelihood
  scale of a Gaussian error model.
- ``energy_std = a_E * sqrt(sum_i u_i)`` (eV), ``a_E^2 = mean(dE^2 / sum_i u_i)``.

``reg`` (relative to the mean eigenvalue of ``C``) is chosen from a grid by the Gaussian negative
log-likelihood of the validation force errors. No retraining, no extra backward pass: the cost is
a forward hook and a ``[N, d] @ [d, d]`` product per evaluation. The calibration is stored in the
potential file's metadata (``metadata["uncertainty"]``), plain numbers, weights-only loadable.
How well it ranks and calibrates errors: docs/uncertainty.md.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field

import numpy as np
import torch

from ase_so3 import keys as K
from ase_so3.errors import ConfigError
from ase_so3.graph import num_graphs
from ase_so3.scatter import scatter_sum

METHOD = "last-layer feature distance"
REG_GRID = (1e-14, 1e-13, 1e-12, 1e-11, 1e-10, 1e-9, 1e-8, 1e-7, 1e-6)
ENERGY_STD, FORCES_STD = K.ENERGY_STD, K.FORCES_STD


@contextlib.contextmanager
def readout_features(model):
    """Within the block, ``holder["features"]`` is the input of ``model``'s last readout layer
    (``[N, d]``, one row per atom) of the latest forward pass."""
    holder: dict = {}
    try:
        layer = model.readout.mlp[-1]
    except (AttributeError, IndexError, TypeError):
        raise ConfigError(f"{type(model).__name__} has no readout MLP (model.readout.mlp): the "
                          "feature-distance uncertainty needs one") from None
    handle = layer.register_forward_pre_hook(lambda _, args: holder.__setitem__("features", args[0]))
    try:
        yield holder
    finally:
        handle.remove()


@dataclass(frozen=True)
class FeatureUncertainty:
    """A fitted calibration: per atomic number the matrix ``L`` with ``(C + reg I)^-1 = L L^T``
    (eigenvectors of ``C`` over the square roots of the regularised eigenvalues),
    and the force and energy scales."""

    factors: dict  # atomic number -> float64 array [d + 1, d + 1]
    forces_scale: float  # a_F (eV/Å)
    energy_scale: float  # a_E (eV)
    reg: float
    info: dict  # what it was fitted on and how it did there
    _tensors: dict = field(default_factory=dict, repr=False, compare=False)  # device -> factors

    # -- evaluation ------------------------------------------------------------------------
    def atom_u(self, features: torch.Tensor, numbers: torch.Tensor) -> torch.Tensor:
        """``u_i`` for each atom (float64, on the features' device)."""
        f = features.detach().to(torch.float64)
        f = torch.cat([f, torch.ones_like(f[:, :1])], dim=1)
        u = torch.empty(len(f), dtype=torch.float64, device=f.device)
        missing = sorted({int(z) for z in numbers.tolist()} - set(self.factors))
        if missing:
            raise ConfigError(f"the uncertainty calibration has no atoms of Z={missing}")
        if f.device not in self._tensors:
            self._tensors[f.device] = {z: torch.as_tensor(m, dtype=torch.float64, device=f.device)
                                       for z, m in self.factors.items()}
        for z, L in self._tensors[f.device].items():
            mask = numbers == z
            if bool(mask.any()):
                u[mask] = ((f[mask] @ L) ** 2).sum(dim=1)
        return u

    def evaluate(self, features: torch.Tensor, graph: dict) -> dict[str, torch.Tensor]:
        """``energy_std`` ``[G]`` (eV) and ``forces_std`` ``[N]`` (eV/Å), float64."""
        u = self.atom_u(features, graph[K.NUMBERS])
        return self.stds(u, graph[K.BATCH], num_graphs(graph))

    def stds(self, u: torch.Tensor, batch: torch.Tensor, n_graphs: int) -> dict[str, torch.Tensor]:
        """``energy_std`` per structure and ``forces_std`` per atom from the atoms' ``u``."""
        total = scatter_sum(u, batch, n_graphs)
        return {ENERGY_STD: self.energy_scale * total.sqrt(), FORCES_STD: self.forces_scale * u.sqrt()}

    # -- storage ---------------------------------------------------------------------------
    def to_dict(self) -> dict:
        return {"method": METHOD, "version": 1, "reg": self.reg,
                "forces_scale": self.forces_scale, "energy_scale": self.energy_scale,
                "factors": {str(z): np.asarray(m).tolist() for z, m in self.factors.items()},
                "info": self.info}

    @classmethod
    def from_dict(cls, d: dict) -> "FeatureUncertainty":
        if d.get("method") != METHOD or d.get("version") != 1:
            raise ConfigError(f"unknown uncertainty calibration {d.get('method')!r} version "
                              f"{d.get('version')!r}; this ase_so3 reads {METHOD!r} version 1")
        return cls({int(z): np.asarray(m, dtype=np.float64) for z, m in d["factors"].items()},
                   float(d["forces_scale"]), float(d["energy_scale"]), float(d["reg"]),
                   dict(d.get("info", {})))

    @classmethod
    def of(cls, model) -> "FeatureUncertainty | None":
        """The calibration stored with a loaded potential, or None."""
        d = getattr(model, "metadata", {}).get("uncertainty")
        return cls.from_dict(d) if d else None


def collect(model, graph_set, batch_size: int = 32, dtype=torch.float64, device="cpu") -> dict:
    """Features, atomic numbers, structure index, force errors (eV/Å) and energy errors (eV) of
    ``model`` on every structure of a :class:`~ase_so3.training.data.GraphSet`."""
    from ase_so3.training.metrics import predictions
    feats, numbers, batch, dforce, denergy = [], [], [], [], []
    offset = 0
    with readout_features(model) as holder:
        for b, graph, target, out in predictions(model, graph_set, batch_size, dtype, device):
            feats.append(holder["features"].detach().double().cpu())
            numbers.append(graph[K.NUMBERS].cpu())
            batch.append(graph[K.BATCH].cpu() + offset)
            offset += len(b)
            dforce.append((out[K.FORCES] - target[K.FORCES]).detach().double().cpu())
            denergy.append((out[K.ENERGY] - target[K.ENERGY]).detach().double().cpu())
    return {"features": torch.cat(feats), "numbers": torch.cat(numbers),
            "batch": torch.cat(batch), "dforce": torch.cat(dforce), "denergy": torch.cat(denergy)}


def _factors(train: dict, reg: float) -> dict:
    f = torch.cat([train["features"], torch.ones_like(train["features"][:, :1])], dim=1).numpy()
    z = train["numbers"].numpy()
    out = {}
    for s in np.unique(z):
        x = f[z == s]
        lam, vec = np.linalg.eigh(x.T @ x / len(x))
        lam = np.clip(lam, 0.0, None) + reg * lam.mean()
        out[int(s)] = vec / np.sqrt(lam)  # L L^T = (C + reg I)^-1
    return out


def fit(model, train_set, val_set, batch_size: int = 32, dtype=torch.float64,
        device="cpu") -> FeatureUncertainty:
    """Fit the calibration of ``model`` from its training structures (the feature statistics)
    and validation structures (``reg`` and the two scales); both are GraphSets with labels."""
    if len(val_set) < 2:
        raise ConfigError("calibrating the uncertainty needs at least 2 labelled validation "
                          f"structures, got {len(val_set)}")
    model = model.eval()
    train = collect(model, train_set, batch_size, dtype, device)
    val = collect(model, val_set, batch_size, dtype, device)
    err2 = (val["dforce"] ** 2).sum(dim=1)
    best = None
    for reg in REG_GRID:
        cal = FeatureUncertainty(_factors(train, reg), 1.0, 1.0, reg, {})
        u = cal.atom_u(val["features"], val["numbers"]).clamp_min(1e-300)
        a2 = float((err2 / u).mean())
        var = a2 * u / 3  # per force component
        nll = float((0.5 * err2 / var + 1.5 * torch.log(2 * math.pi * var)).mean())
        if best is None or nll < best[0]:
            best = (nll, reg, cal, a2, u)
    nll, reg, cal, a2, u = best
    total = torch.zeros(len(val["denergy"]), dtype=torch.float64).index_add_(0, val["batch"], u)
    e2 = float((val["denergy"] ** 2 / total).mean())
    info = {"train_structures": len(train_set), "val_structures": len(val_set),
            "val_force_nll": nll, "val_atoms": len(u)}
    return FeatureUncertainty(cal.factors, math.sqrt(a2), math.sqrt(e2), reg, info)


def assess(cal: FeatureUncertainty, data: dict, bins: int = 10) -> dict:
    """How ``cal`` ranks and calibrates the errors of collected structures (:func:`collect`):
    Spearman correlations between predicted and actual per-structure force RMSE and per-atom force
    error, predicted against observed RMSE overall and in ``bins`` quantile bins of the
    prediction (meV/Å), and the same for energies (meV)."""
    from scipy.stats import spearmanr
    u = cal.atom_u(data["features"], data["numbers"])
    n_struct = len(data["denergy"])
    pred = cal.stds(u, data["batch"], n_struct)
    f_pred, e_pred = pred[FORCES_STD].numpy(), pred[ENERGY_STD].numpy()
    f_err2 = (data["dforce"] ** 2).sum(dim=1).numpy()
    batch = data["batch"].numpy()
    counts = np.bincount(batch, minlength=n_struct)
    s_pred = np.sqrt(np.bincount(batch, f_pred ** 2, n_struct) / counts)
    s_act = np.sqrt(np.bincount(batch, f_err2, n_struct) / counts)
    e_err = np.abs(data["denergy"].numpy())
    order = np.argsort(f_pred, kind="stable")
    table = []
    for part in np.array_split(order, min(bins, len(order))):
        table.append({"atoms": len(part),
                      "predicted_meV_per_A": float(np.sqrt((f_pred[part] ** 2).mean()) * 1e3),
                      "observed_meV_per_A": float(np.sqrt(f_err2[part].mean()) * 1e3)})
    return {"structures": n_struct, "atoms": len(u),
            "spearman_structure_forces": float(spearmanr(s_pred, s_act)[0]),
            "spearman_atom_forces": float(spearmanr(f_pred, f_err2)[0]),
            "spearman_structure_energy": float(spearmanr(e_pred, e_err)[0]),
            "forces_rmse_predicted_meV_per_A": float(np.sqrt((f_pred ** 2).mean()) * 1e3),
            "forces_rmse_observed_meV_per_A": float(np.sqrt(f_err2.mean()) * 1e3),
            "energy_rmse_predicted_meV": float(np.sqrt((e_pred ** 2).mean()) * 1e3),
            "energy_rmse_observed_meV": float(np.sqrt((e_err ** 2).mean()) * 1e3),
            "forces_bins": table}


def calibrate_file(potential, output, train_set, val_set, batch_size: int = 32,
                   dtype=torch.float64, device="cpu", info: dict | None = None, model=None):
    """Fit the uncertainty of ``potential`` (file or shipped name) on two labelled GraphSets and
    write the file again with the calibration in its metadata to ``output`` (atomically; may be
    the same file; weights and checksum unchanged). Returns the calibration and the model it was
    fitted with (in ``dtype`` on ``device``); ``model``: the potential already loaded."""
    from ase_so3.loading import load_potential, resolve_potential
    from ase_so3.potentials.serialization import update_metadata
    run = (model if model is not None else load_potential(potential)).to(device=device,
                                                                          dtype=dtype)
    cal = fit(run, train_set, val_set, batch_size, dtype, device)
    cal = FeatureUncertainty(cal.factors, cal.forces_scale, cal.energy_scale, cal.reg,
                             {**cal.info, **(info or {})})
    update_metadata(resolve_potential(potential), {"uncertainty": cal.to_dict()}, output)
    return cal, run


def calibrate_potential(potential, data, output, train_split: str = "train",
                        val_split: str = "val", test_split: str | None = None,
                        batch_size: int = 32, dtype=torch.float64, device="cpu") -> dict:
    """:func:`calibrate_file` on the ``train_split`` and ``val_split`` of an HDF5 data set.
    Returns the calibration's summary and, with ``test_split``, :func:`assess` on that split."""
    from ase_so3.training.data import GraphSet
    from ase_so3.training.hdf5 import HDF5Dataset
    from ase_so3.loading import load_potential
    model = load_potential(potential)
    ds = HDF5Dataset(data)
    sets = {}
    for name in [train_split, val_split] + ([test_split] if test_split else []):
        indices = ds.split(name)
        ds.check(indices, name)
        sets[name] = GraphSet(ds, indices, model.cutoff)
    ds.close()
    cal, run = calibrate_file(potential, output, sets[train_split], sets[val_split], batch_size,
                              dtype, device, {"data": str(data), "train_split": train_split,
                                              "val_split": val_split}, model)
    report = {"reg": cal.reg, "forces_scale": cal.forces_scale, "energy_scale": cal.energy_scale,
              **cal.info}
    if test_split:
        report["test"] = assess(cal, collect(run, sets[test_split], batch_size, dtype, device))
    return report
