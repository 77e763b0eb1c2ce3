"""``init_from``: start a training run from the weights of an existing potential (fine-tuning)."""

from __future__ import annotations

import dataclasses


def init_weights(model, source: str) -> dict:
    """Load the weights of the potential ``source`` (a file or a shipped name) into ``model``,
    whose model and config must be the same; return what the new potential records of it."""
    from ase_so3.loading import resolve_potential
    from ase_so3.potentials.serialization import PotentialFileError, read_potential_file
    payload = read_potential_file(resolve_potential(source, "init_from="))
    ours = model.config.to_dict()
    theirs = payload["config"]
    # a file older than an option has that option's default (old files keep loading)
    default = {f.name: f.default for f in dataclasses.fields(model.config)
               if f.default is not dataclasses.MISSING}
    diff = sorted(k for k in set(ours) | set(theirs)
                  if ours.get(k) != theirs.get(k, default.get(k)))
    if payload["model"] != model.name or diff:
        raise PotentialFileError(
            f"init_from={source!r} holds a '{payload['model']}' model that differs from the one "
            f"to train ('{model.name}'; differing config keys: {diff}). Fine-tuning starts from "
            "the same architecture: copy its model_config (species, cutoff, avg_num_neighbors "
            "included) into the training config")
    model.load_state_dict(payload["state_dict"], strict=True)
    meta = payload.get("metadata", {})
    keep = ("ase_so3_version", "training_data", "epochs", "best_val_forces_mae_meV_per_A",
            "training_time_s", "init_from")
    return {"source": str(source), "checksum": payload.get("checksum"),
            **{k: meta[k] for k in keep if k in meta},
            **({"train_config": meta["train_config"]} if "train_config" in meta else {})}
