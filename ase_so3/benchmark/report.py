"""The benchmark report: ``report.md`` (tables) and plots (parity, latency against atoms,
stability) written from ``results.json`` alone, so a report can be rebuilt without re-running."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

NAMES = {"tfn": "TFN", "se3_transformer": "SE(3)-Transformer", "escn": "eSCN", "mace": "MACE"}


def _f(x, spec=".2f"):
    return "—" if x is None else format(x, spec)


def _accuracy_table(mol: dict) -> list[str]:
    lines = ["| model | parameters | trained | training structures/s | E MAE (meV) | E RMSE (meV) "
             "| F MAE (meV/Å) | F RMSE (meV/Å) |", "|---|---|---|---|---|---|---|---|"]
    for m, a in mol.get("accuracy", {}).items():
        info = mol["models"][m]
        secs = info.get("train_seconds")
        trained = (f"{secs / 60:.0f} min, {info.get('epochs')} epochs ({info['source']})"
                   if secs else info["source"])
        lines.append(f"| {NAMES.get(m, m)} | {a['parameters']:,} | {trained} | "
                     f"{_f(info.get('structures_per_s'), '.1f')} | "
                     f"{a['energy_mae_meV']:.2f} | {a['energy_rmse_meV']:.2f} | "
                     f"{a['forces_mae_meV_per_A']:.2f} | {a['forces_rmse_meV_per_A']:.2f} |")
    n = next(iter(mol.get("accuracy", {}).values()), {}).get("test_structures")
    return lines + ["", f"Test structures: {n}."] if n else lines


def _atoms(row: dict) -> int | None:
    """Size of a speed-table system: the atom count any model's measurement recorded."""
    return next((r["atoms"] for r in row.values() if "atoms" in r), None)


def _speed_table(mol: dict) -> list[str]:
    speed = mol.get("speed", {})
    if not speed:
        return []
    models = list(speed.get("molecule", next(iter(speed.values()))))
    ref = "mace" if "mace" in models else None
    head = "| system | atoms | " + " | ".join(f"{NAMES.get(m, m)} ms" for m in models)
    head += " | " + " | ".join(f"{NAMES.get(m, m)}/MACE" for m in models if m != ref) if ref else ""
    lines = [head + " |", "|" + "---|" * head.count("|")]
    mem = ["| system | atoms | " + " | ".join(
        f"{NAMES.get(m, m)} atom·steps/s | {NAMES.get(m, m)} peak MB" for m in models) + " |",
        "|---|---|" + "---|---|" * len(models)]
    for name, row in sorted(speed.items(), key=lambda item: _atoms(item[1]) or 0):
        atoms = _atoms(row)
        row = {m: row.get(m, {}) for m in models}  # models not timed on this system: "—"
        cells = [_f(row[m].get("latency_ms"), ".1f") if "error" not in row[m] else "error"
                 for m in models]
        line = f"| {name} | {atoms} | " + " | ".join(cells)
        if ref:
            r0 = row[ref].get("latency_ms")
            line += " | " + " | ".join(
                _f(row[m]["latency_ms"] / r0 if r0 and row[m].get("latency_ms") else None)
                for m in models if m != ref)
        lines.append(line + " |")
        mem.append(f"| {name} | {atoms} | " + " | ".join(
            f"{_f(row[m].get('atom_steps_per_s'), '.0f')} | {_f(row[m].get('peak_increase_mb'), '.0f')}"
            for m in models) + " |")
    return (["Energy+forces latency through the ASE calculator (median of repeated calls; ratio "
             "< 1 means faster than MACE):", ""] + lines +
            ["", "MD throughput (velocity Verlet in ASE) and peak memory above the process's "
             "footprint before the first call:", ""] + mem)


def _stability_table(mol: dict) -> list[str]:
    st = mol.get("stability", {})
    if not st:
        return []
    lines = ["| model | runs | mean stable time (ps) | shortest (ps) | broke | MD steps/s |",
             "|---|---|---|---|---|---|"]
    for m, v in st.items():
        s = v["summary"]
        sps = np.mean([r["steps_per_s"] for r in v["runs"]])
        lines.append(f"| {NAMES.get(m, m)} | {s['runs']} | {s['mean_stable_ps']:.3f} of "
                     f"{s['max_ps']:g} | {s['min_stable_ps']:.3f} | {s['broke_fraction']:.0%} | "
                     f"{sps:.1f} |")
    return lines


def _scaling_table(scaling: dict) -> list[str]:
    lines = [f"One convolution layer (forward + backward), {scaling['edges']} edges, "
             f"{scaling['channels']} channels, {scaling['dtype']}, {scaling['threads']} thread(s), "
             f"allocator: {scaling.get('allocator', 'system default')}:",
             "", "| lmax | TFN ms | eSCN ms | TFN/eSCN |", "|---|---|---|---|"]
    for r in scaling["rows"]:
        t, e = r.get("tfn"), r.get("escn")
        ratio = t["seconds"] / e["seconds"] if t and e else None
        lines.append(f"| {r['lmax']} | {_f(t and t['seconds'] * 1e3, '.1f')} | "
                     f"{_f(e and e['seconds'] * 1e3, '.1f')} | {_f(ratio, '.1f')} |")
    return lines


def _plots(out: Path, data: dict) -> list[str]:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    made = []
    for mol_name, mol in data.get("molecules", {}).items():
        acc = mol.get("accuracy", {})
        if acc:
            from ase_so3.plotting import parity_panel
            fig, axes = plt.subplots(2, len(acc), figsize=(3.6 * len(acc), 7.0), squeeze=False)
            for k, (m, a) in enumerate(acc.items()):
                p = np.load(out / a["parity"])
                parity_panel(axes[0, k], p["e_ref"], p["e_pred"], "energy",
                             title=f"{NAMES.get(m, m)}: energy")
                parity_panel(axes[1, k], p["f_ref"], p["f_pred"], "forces",
                             title=f"{NAMES.get(m, m)}: forces")
            fig.tight_layout()
            made.append(_save(fig, out / f"parity_{mol_name}.png", plt))
        speed = mol.get("speed", {})
        if speed:
            fig, ax = plt.subplots(figsize=(5.5, 4))
            models = list(speed.get("molecule", next(iter(speed.values()))))
            for m in models:
                pts = sorted((r[m]["atoms"], r[m]["latency_ms"]) for r in speed.values()
                             if "latency_ms" in r.get(m, {}))
                if pts:
                    ax.loglog(*zip(*pts), "o-", label=NAMES.get(m, m))
            ax.set_xlabel("atoms")
            ax.set_ylabel("energy+forces latency (ms)")
            ax.set_title(f"{mol_name}: latency through ASE")
            ax.legend()
            fig.tight_layout()
            made.append(_save(fig, out / f"latency_{mol_name}.png", plt))
    stab = {(mn, m): v["summary"] for mn, mol in data.get("molecules", {}).items()
            for m, v in mol.get("stability", {}).items()}
    if stab:
        fig, ax = plt.subplots(figsize=(6, 3.5))
        labels = [f"{mn}\n{NAMES.get(m, m)}" for mn, m in stab]
        ax.bar(range(len(stab)), [s["mean_stable_ps"] for s in stab.values()])
        ax.set_xticks(range(len(stab)), labels, fontsize=7)
        ax.set_ylabel("mean stable time (ps)")
        ax.set_title("NVT stability (time to break, capped at the run length)")
        fig.tight_layout()
        made.append(_save(fig, out / "stability.png", plt))
    return made


def _save(fig, path: Path, plt) -> str:
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path.name


def write_report(out) -> Path:
    out = Path(out)
    data = json.loads((out / "results.json").read_text())
    env, st = data.get("environment", {}), data.get("settings", {})
    plots = _plots(out, data)
    lines = ["# ase_so3 vs MACE benchmark", "",
             f"Command: `{data.get('command', '')}`", "",
             f"Environment: Python {env.get('python')}, torch {env.get('torch')}, e3nn "
             f"{env.get('e3nn')}, ASE {env.get('ase')}, ase_so3 {env.get('ase_so3')}, mace-torch "
             f"{env.get('mace')}; {env.get('processor')}, {env.get('threads')} thread(s), "
             f"device {st.get('device')}" + (f" ({env['cuda']})" if env.get("cuda") else "")
             + (f"; allocator: {env['allocator']}" if env.get("allocator") else "") + ".",
             "", f"Training: each model trained by the harness gets a wall-clock budget (last "
             f"invocation: {st.get('budget_minutes')} min; the time each model really trained is in "
             f"its 'trained' column); ours: {st.get('ours')}. Speed and stability in "
             f"{st.get('speed_dtype')}.",
             ""]
    for mol_name, mol in data.get("molecules", {}).items():
        lines += [f"## {mol_name}", "", "### Accuracy (test split)", ""] + _accuracy_table(mol)
        if mol.get("speed"):
            lines += ["", "### Speed", ""] + _speed_table(mol)
        if mol.get("stability"):
            lines += ["", f"### Stability: Langevin NVT at {st.get('stability_temperature')} K", "",
                      "A run breaks when a bond deviates from its starting length by more than "
                      "0.5 Å or the energy stops being finite (Fu et al., 2022).", ""]
            lines += _stability_table(mol)
        lines.append("")
    if data.get("scaling"):
        lines += ["## Cost against lmax: eSCN vs TFN", ""] + _scaling_table(data["scaling"]) + [""]
    if plots:
        lines += ["## Plots", ""] + [f"![{p}]({p})" for p in plots] + [""]
    path = out / "report.md"
    path.write_text("\n".join(lines))
    return path
