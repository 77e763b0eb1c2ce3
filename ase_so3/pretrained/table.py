"""Markdown table of the shipped potentials beside MACE: its published numbers and MACE trained by
``ase-so3 benchmark learning`` with the same budget, machine and thread count:
``python -m ase_so3.pretrained.table`` (``--long`` adds the training column)."""

from __future__ import annotations

import sys

from ase_so3.pretrained import list_potentials, model_card


def _num(value, fmt: str = ".1f") -> str:
    return "—" if value is None else format(value, fmt)


def markdown(long: bool = False) -> str:
    head = ("| potential | model | parameters | test E MAE (meV) | test F MAE (meV/Å) | "
            "MACE published E / F | MACE same budget E / F |")
    rows = [head + (" training |" if long else ""), "|---" * (8 if long else 7) + "|"]
    for name in list_potentials():
        c = model_card(name)
        t, m, tr = c["test_errors"], c.get("published_mace", {}), c["training"]
        same = c.get("mace_same_budget") or {}
        published = (f"{m['energy_mae_meV']} / {m['forces_mae_meV_per_A']}"
                     if m.get("energy_mae_meV") is not None else "—")
        harness = (f"{_num(same['energy_mae_offset_free_meV'])} / "
                   f"{_num(same['forces_mae_meV_per_A'])}" if same else "—")
        row = (f"| `{name}` | {c['model']} | {c['num_parameters']:,} | "
               f"{t['energy_mae_meV']:.1f} | {t['forces_mae_meV_per_A']:.1f} | {published} | "
               f"{harness} |")
        if long:
            row += (f" {tr['epochs']:.0f} epochs, {tr['wall_time_s'] / 60:.0f} min, "
                    f"{tr['hardware']} |")
        rows.append(row)
    return "\n".join(rows)


if __name__ == "__main__":
    print(markdown(long="--long" in sys.argv[1:]))
