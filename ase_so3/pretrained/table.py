"""Markdown table of the shipped potentials beside the published MACE numbers:
``python -m ase_so3.pretrained.table``."""

from __future__ import annotations

from ase_so3.pretrained import list_potentials, model_card


def markdown() -> str:
    rows = ["| potential | model | parameters | test energy MAE (meV) | test force MAE (meV/Å) | "
            "MACE energy / force MAE | training |", "|---|---|---|---|---|---|---|"]
    for name in list_potentials():
        c = model_card(name)
        t, m, tr = c["test_errors"], c.get("published_mace", {}), c["training"]
        mace = (f"{m['energy_mae_meV']} / {m['forces_mae_meV_per_A']}"
                if m.get("energy_mae_meV") is not None else "—")
        rows.append(f"| `{name}` | {c['model']} | {c['num_parameters']:,} | "
                    f"{t['energy_mae_meV']:.1f} | {t['forces_mae_meV_per_A']:.1f} | {mace} | "
                    f"{tr['epochs']} epochs, {tr['wall_time_s'] / 60:.0f} min, {tr['hardware']} |")
    return "\n".join(rows)


if __name__ == "__main__":
    print(markdown())
