"""Markdown tables of the shipped potentials beside MACE: its published numbers and MACE trained by
``ase-so3 benchmark learning`` with the same budget, machine and thread count.
``python -m ase_so3.pretrained.table``: one row per molecule (the README's); ``--long``: one row
per potential with its training and its errors on a blind test split where its card has them
(``release.publish --add-blind``)."""

from __future__ import annotations

import sys

from ase_so3.pretrained import list_potentials, model_card


def _num(value, fmt: str = ".1f") -> str:
    return "—" if value is None else format(value, fmt)


def _target(target: dict | None) -> str:
    if not target:
        return "—"
    if target["met"]:
        return f"{target['forces_mae_meV_per_A']:.1f}: met"
    minutes = target.get("projected_training_minutes")
    if not minutes:
        need = "no projection (the curve does not fall)"
    else:
        need = (f"~{minutes:.0f} min" if minutes < 120 else f"~{minutes / 60:.0f} h") + \
            " of training projected"
    return f"{target['forces_mae_meV_per_A']:.1f}: not met, {need}"


def markdown(long: bool = False) -> str:
    head = ("| potential | model | parameters | test E MAE (meV) | test F MAE (meV/Å) | "
            "MACE published E / F | MACE same budget E / F |")
    rows = [head + (" target F (meV/Å) | training | blind test E / F |" if long else ""),
            "|---" * (10 if long else 7) + "|"]
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
            blind = c.get("blind_test_errors")
            row += f" {_target(c.get('target'))} | {tr['epochs']:.0f} epochs, " \
                   f"{tr['wall_time_s'] / 60:.0f} min, {tr['hardware']} | " + \
                   (f"{blind['energy_mae_meV']:.1f} / {blind['forces_mae_meV_per_A']:.1f} |"
                    if blind else "— |")
        rows.append(row)
    return "\n".join(rows)


MODELS = (("escn", "eSCN"), ("tfn", "TFN"), ("se3_transformer", "SE(3)-Tr."))


def by_molecule() -> str:
    """One row per molecule: test E / F MAE of each of our shipped models, eSCN's from-scratch
    run (the first stage of a fine-tuned card), MACE's published numbers and MACE trained with
    the same budget as that run (the best of ``mace_same_budget`` over the cards)."""
    cards = [model_card(n) for n in list_potentials()]
    head = ("| molecule | " + " | ".join(f"{label} E / F" for _, label in MODELS)
            + " | eSCN same budget E / F | MACE published E / F | MACE same budget E / F |")
    rows = [head, "|---" * (len(MODELS) + 4) + "|"]
    for mol in sorted({c["molecule"] for c in cards}):
        mine = {c["model"]: c for c in cards if c["molecule"] == mol}
        cells = []
        for model, _ in MODELS:
            t = mine[model]["test_errors"] if model in mine else None
            cells.append(f"{t['energy_mae_meV']:.1f} / {t['forces_mae_meV_per_A']:.1f}"
                         if t else "—")
        # a fine-tuned card keeps its from-scratch stage, the run that MACE's compares with
        escn = mine.get("escn")
        stage = None if escn is None else escn["training"].get("stages", [
            {"test_errors": escn["test_errors"], "wall_time_s": escn["training"]["wall_time_s"]}])[0]
        t = stage["test_errors"] if stage else None
        cells.append(f"{t['energy_mae_meV']:.1f} / {t['forces_mae_meV_per_A']:.1f} "
                     f"({stage['wall_time_s'] / 60:.0f} min)" if t else "—")
        m = next((c["published_mace"] for c in mine.values() if c.get("published_mace")), {})
        same = [c["mace_same_budget"] for c in mine.values() if c.get("mace_same_budget")]
        best = min(same, key=lambda x: x["forces_mae_meV_per_A"]) if same else None
        cells.append(f"{m['energy_mae_meV']} / {m['forces_mae_meV_per_A']}"
                     if m.get("energy_mae_meV") is not None else "—")
        cells.append(f"{best['energy_mae_offset_free_meV']:.1f} / "
                     f"{best['forces_mae_meV_per_A']:.1f} ({best['budget_minutes']:g} min)"
                     if best else "—")
        rows.append(f"| {mol} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


if __name__ == "__main__":
    print(markdown(long=True) if "--long" in sys.argv[1:] else by_molecule())
