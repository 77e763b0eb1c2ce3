"""Speed at matched accuracy: the energy+forces latency through ASE of every model that
``ase-so3 benchmark learning`` trained, next to its test errors, and the Pareto front of force
error against latency, one table and one plot per molecule.

    ase-so3 benchmark pareto --results docs/learning/results.json --output docs/learning \\
        [--model-file ethanol:escn=runs/escn-rmd17-ethanol-60min/potential.pt ...] \\
        [--threads 1] [--device cpu] [--seconds 3]

Each model is timed on its own molecule in a fresh worker process
(:func:`ase_so3.benchmark.speed.run_worker`), float32, after a warm-up call; the budgets of one
model (15 and 60 minutes) share the architecture and so the latency. ``--model-file`` points a
model at a file when the one ``results.json`` names is not on this machine (latency depends on the
architecture only, so a file of the same architecture and elements gives the same time; the table
says which file was timed). Writes ``pareto.json``, ``pareto.md`` and ``pareto_<molecule>.png``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ase_so3.io_utils import atomic_path


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the points (latency, error) that no other point beats on both, by latency."""
    order = sorted(range(len(points)), key=lambda i: (points[i][0], points[i][1]))
    front, best = [], float("inf")
    for i in order:
        if points[i][1] < best:
            front.append(i)
            best = points[i][1]
    return front


def collect_rows(results: dict, timings: dict) -> list[dict]:
    """One row per (molecule, model, budget) with test errors, joined with the model's timing."""
    rows = []
    for molecule, models in results.get("molecules", {}).items():
        for name, entry in models.items():
            timing = timings.get(molecule, {}).get(name)
            for budget, test in sorted((entry.get("test") or {}).items(), key=lambda kv: float(kv[0])):
                row = {"molecule": molecule, "model": name, "kind": entry.get("kind"),
                       "budget_min": float(budget), "parameters": test.get("parameters"),
                       "forces_mae_meV_per_A": test["forces_mae_meV_per_A"],
                       "energy_mae_offset_free_meV": test.get("energy_mae_offset_free_meV"),
                       "epochs": entry.get("epochs") if float(budget) == max(
                           float(b) for b in entry["test"]) else None}
                if timing:
                    row.update({k: timing.get(k) for k in ("latency_ms", "md_steps_per_s",
                                                           "timed_file", "error")})
                rows.append(row)
    return rows


def _num(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def markdown(rows: list[dict]) -> str:
    out = []
    for molecule in dict.fromkeys(r["molecule"] for r in rows):
        mine = [r for r in rows if r["molecule"] == molecule]
        out += [f"### {molecule}", "",
                "| model | budget (min) | parameters | test F MAE (meV/Å) | test E MAE, offset-free "
                "(meV) | ms / energy+forces call | MD steps/s | F MAE / best MACE's | latency / "
                "that MACE's |", "|---|---|---|---|---|---|---|---|---|"]
        for budget in sorted({r["budget_min"] for r in mine}):
            at = [r for r in mine if r["budget_min"] == budget]
            maces = [r for r in at if r["kind"] == "mace"]
            ref = min(maces, key=lambda r: r["forces_mae_meV_per_A"]) if maces else None
            for r in sorted(at, key=lambda r: r["forces_mae_meV_per_A"]):
                lat = r.get("latency_ms")
                ratio_f = (f"{r['forces_mae_meV_per_A'] / ref['forces_mae_meV_per_A']:.2f}"
                           if ref else "-")
                ratio_t = (f"{lat / ref['latency_ms']:.2f}" if ref and lat and ref.get("latency_ms")
                           else "-")
                cells = [r["model"], f"{budget:g}", str(r["parameters"] or "-"),
                         _num(r["forces_mae_meV_per_A"], ".2f"),
                         _num(r.get("energy_mae_offset_free_meV"), ".2f"), _num(lat, ".2f"),
                         _num(r.get("md_steps_per_s"), ".1f"), ratio_f, ratio_t]
                out.append("| " + " | ".join(cells) + " |")
        timed = {r["model"]: r.get("timed_file") or r.get("error") for r in mine}
        out += ["", "Timed files: " + "; ".join(f"{k}: `{v}`" for k, v in timed.items()), ""]
    return "\n".join(out)


def _nice_ticks(lo: float, hi: float) -> list[float]:
    """1-1.5-2-3-5-7 steps per decade covering [lo, hi], thinned to at most 8 labels."""
    import math
    ticks = [m * 10.0 ** e for e in range(math.floor(math.log10(lo)) - 1,
                                          math.ceil(math.log10(hi)) + 1)
             for m in (1, 1.5, 2, 3, 5, 7)]
    inside = [t for t in ticks if lo / 1.15 <= t <= hi * 1.15]
    step = max(1, math.ceil(len(inside) / 8))
    return inside[::step] or [lo, hi]


def plot(rows: list[dict], molecule: str, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    mine = [r for r in rows if r["molecule"] == molecule and r.get("latency_ms")]
    if not mine:
        return
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    markers = {15.0: "o", 60.0: "s"}
    for r in mine:
        colour = "tab:red" if r["kind"] == "mace" else "tab:blue"
        ax.scatter(r["latency_ms"], r["forces_mae_meV_per_A"], color=colour,
                   marker=markers.get(r["budget_min"], "^"))
        ax.annotate(f"{r['model']} {r['budget_min']:g} min", (r["latency_ms"],
                    r["forces_mae_meV_per_A"]), fontsize=7, xytext=(4, 3),
                    textcoords="offset points")
    pts = [(r["latency_ms"], r["forces_mae_meV_per_A"]) for r in mine]
    front = pareto_front(pts)
    # ringed, so that a front of one point shows too
    ax.plot([pts[i][0] for i in front], [pts[i][1] for i in front], color="grey", lw=1,
            ls="--", marker="o", ms=13, mfc="none", label="Pareto front (ringed)")
    from matplotlib.ticker import NullFormatter
    ax.set_xscale("log")
    ax.set_yscale("log")
    for axis, values in ((ax.xaxis, [p[0] for p in pts]), (ax.yaxis, [p[1] for p in pts])):
        ticks = _nice_ticks(min(values), max(values))  # plain numbers, none crowded
        axis.set_ticks(ticks)
        axis.set_ticklabels([f"{t:g}" for t in ticks])
        axis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("energy+forces latency through ASE (ms, 1 CPU thread)")
    ax.set_ylabel("test force MAE (meV/Å)")
    ax.set_title(f"{molecule}: blue ase_so3, red MACE; circles 15 min, squares 60 min")
    ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=130, format="png")
    plt.close(fig)


def _commit() -> str | None:
    import subprocess
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                              cwd=Path(__file__).parent, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--results", type=Path, required=True, help="results.json of the learning benchmark")
    p.add_argument("--output", type=Path, required=True)
    p.add_argument("--model-file", action="append", default=[], metavar="MOLECULE:NAME=PATH")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="cpu")
    p.add_argument("--seconds", type=float, default=3.0)
    args = p.parse_args(argv)
    from ase_so3.benchmark.harness import environment
    from ase_so3.benchmark.speed import run_worker
    results = json.loads(args.results.read_text())
    overrides = {}
    for item in args.model_file:
        key, sep, path = item.partition("=")
        molecule, sep2, name = key.partition(":")
        if not (sep and sep2):
            p.error(f"--model-file {item!r}: use MOLECULE:NAME=PATH")
        overrides[(molecule, name)] = path
    timings: dict = {}
    for molecule, models in results.get("molecules", {}).items():
        for name, entry in models.items():
            path = overrides.get((molecule, name), entry.get("path"))
            if not path or not Path(path).is_file():
                timings.setdefault(molecule, {})[name] = {"error": f"no file {path}"}
                continue
            res = run_worker({"kind": entry["kind"], "path": str(path)}, {"molecule": molecule},
                             threads=args.threads, dtype="float32", device=args.device,
                             min_seconds=args.seconds)
            res["timed_file"] = str(path)
            timings.setdefault(molecule, {})[name] = res
            print(f"{molecule} {name}: {res.get('latency_ms', res.get('error'))}", flush=True)
    rows = collect_rows(results, timings)
    args.output.mkdir(parents=True, exist_ok=True)
    env = environment(threads=args.threads)
    env["commit"] = _commit()
    with atomic_path(args.output / "pareto.json") as tmp:
        tmp.write_text(json.dumps({"environment": env, "device": args.device, "rows": rows},
                                  indent=1))
    text = markdown(rows)
    with atomic_path(args.output / "pareto.md") as tmp:
        tmp.write_text(text + "\n")
    for molecule in results.get("molecules", {}):
        plot(rows, molecule, args.output / f"pareto_{molecule}.png")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
