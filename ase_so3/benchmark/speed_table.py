"""Side-by-side speed through ASE of several calculators on several structures: energy+forces
latency, MD throughput and peak memory, each measurement in its own worker process
(:func:`ase_so3.benchmark.speed.run_worker`), printed as a markdown table with ratios to one
reference model.

    python -m ase_so3.benchmark.speed_table --device cuda \\
        --model escn ours escn-rmd17-aspirin \\
        --model escn-cudagraphs ours escn-rmd17-aspirin cuda_graphs=true \\
        --model mace mace runs/benchmark/runs/aspirin/mace/mace.model \\
        --system aspirin --system aspirin:4 --reference mace --json speed.json

``--model NAME KIND PATH [KEY=VALUE ...]``: KIND is ``ours`` (a potential file or shipped name)
or ``mace`` (a MACE model file); each KEY=VALUE is a calculator keyword argument, VALUE read as
JSON where it parses (``compile=true``, ``max_atoms_per_chunk=3000``) and as a string otherwise.
``--system NAME[:COPIES]``: a molecule alone, or a periodic box of COPIES³ randomly rotated copies.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def parse_model(words: list[str]) -> tuple[str, dict]:
    if len(words) < 3:
        raise argparse.ArgumentTypeError(
            f"--model needs NAME KIND PATH [KEY=VALUE ...], got {' '.join(words)!r}")
    name, kind, path, *pairs = words
    if kind not in ("ours", "mace"):
        raise argparse.ArgumentTypeError(f"model kind must be 'ours' or 'mace', not {kind!r}")
    options = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise argparse.ArgumentTypeError(f"calculator option {pair!r} is not KEY=VALUE")
        try:
            options[key] = json.loads(value)
        except json.JSONDecodeError:
            options[key] = value
    spec = {"kind": kind, "path": path}
    if options:
        spec["options"] = options
    return name, spec


def parse_system(text: str) -> dict:
    name, _, copies = text.partition(":")
    if not copies:
        return {"molecule": name}
    if not copies.isdigit() or int(copies) < 1:
        raise argparse.ArgumentTypeError(f"copies per side in {text!r} must be a positive integer")
    return {"molecule": name, "copies": int(copies)}


def system_label(system: dict) -> str:
    return system["molecule"] + (f" box {system['copies']}³" if system.get("copies") else "")


def table(rows: list[dict], reference: str | None) -> str:
    head = ["system", "atoms", "model", "ms / call", "first call ms", "atom·steps/s",
            "peak RSS MB", "CUDA peak MB"]
    if reference:
        head.append(f"ms / {reference} ms")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    ref_ms = {r["system"]: r["result"].get("latency_ms") for r in rows if r["model"] == reference}
    for r in rows:
        res = r["result"]
        if "error" in res:
            lines.append(f"| {r['system']} | | {r['model']} | error: {res['error'][:120]} |")
            continue
        cells = [r["system"], str(res["atoms"]), r["model"], f"{res['latency_ms']:.2f}",
                 f"{res['first_call_ms']:.0f}", f"{res['atom_steps_per_s']:.0f}",
                 f"{res['peak_increase_mb']:.0f}",
                 f"{res['cuda_peak_mb']:.0f}" if "cuda_peak_mb" in res else "-"]
        if reference:
            ref = ref_ms.get(r["system"])
            cells.append(f"{res['latency_ms'] / ref:.2f}" if ref else "-")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", nargs="+", action="append", required=True,
                   metavar="NAME KIND PATH [KEY=VALUE]")
    p.add_argument("--system", action="append", required=True, type=parse_system)
    p.add_argument("--reference", help="model name the ratio column divides by")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seconds", type=float, default=2.0, help="time each measurement this long")
    p.add_argument("--timeout", type=float, default=900, help="seconds per worker")
    p.add_argument("--json", type=Path, help="write all results here")
    args = p.parse_args(argv)
    try:
        models = dict(parse_model(words) for words in args.model)
    except argparse.ArgumentTypeError as err:
        p.error(str(err))
    if args.reference and args.reference not in models:
        p.error(f"--reference {args.reference!r} is not one of the models: {', '.join(models)}")

    from ase_so3.benchmark.speed import run_worker
    from ase_so3.io_utils import atomic_path
    rows = []
    for system in args.system:
        for name, spec in models.items():
            res = run_worker(spec, system, threads=args.threads, dtype=args.dtype,
                             device=args.device, min_seconds=args.seconds, timeout=args.timeout)
            rows.append({"system": system_label(system), "model": name, "spec": spec,
                         "device": args.device, "dtype": args.dtype, "result": res})
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
            if args.json:
                with atomic_path(args.json) as tmp:
                    tmp.write_text(json.dumps(rows, indent=1))
    print(table(rows, args.reference))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
