"""Cost of one convolution layer against lmax: TFN tensor product vs eSCN SO(2) convolution.

    python -m ase_so3.benchmark.scaling --edges 100000 --channels 16 --lmax 1 2 3 4 5 6 7 8

For each lmax, one layer's forward pass and its backward from a fixed random upstream gradient
(gradients to the features, the radial weights and the edge vectors) on random edges, including
the geometric part each method needs
(TFN: spherical harmonics up to 2*lmax and the CG filter contraction; eSCN: edge rotation, Wigner-D
blocks, rotation in and out). Peak memory is counted above the process's footprint after imports.
eSCN keeps every order (mmax = lmax), so both compute the same
function (tested in tests/physics/test_escn.py). Each measurement runs in a fresh subprocess so its peak
memory (resident set on CPU, allocator peak on CUDA) is its own. Prints a table with the
eSCN/TFN ratios and the fitted exponents of cost vs lmax (slope of log time on log lmax).

"tfn" is the tensor product with per-edge CG filters; the TFN and SE(3)-Transformer models
evaluate it that way only where a path couples +m to -m, and otherwise in the edge frame
(:meth:`~ase_so3.potentials.convolution.TensorProductConv.in_frame`), as eSCN does.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import time


def _layer(method: str, lmax: int, edges: int, channels: int, device: str, dtype):
    import torch

    from ase_so3.potentials.convolution import TensorProductConv
    from ase_so3.so3 import so2
    from ase_so3.so3.spherical_harmonics import SphericalHarmonics
    from ase_so3.so3.edge_frame import EdgeWignerD
    gen = torch.Generator().manual_seed(0)
    t = dict(dtype=dtype, device=device)
    vec = torch.randn(edges, 3, generator=gen, dtype=dtype).to(device).requires_grad_(True)
    x = torch.randn(edges, (lmax + 1) ** 2, channels, generator=gen, dtype=dtype).to(device)
    x.requires_grad_(True)
    grad_out = torch.randn(x.shape, generator=gen, dtype=dtype).to(device)  # upstream gradient
    if method == "tfn":
        conv = TensorProductConv(lmax, lmax, 2 * lmax).to(**t)
        sh = SphericalHarmonics(2 * lmax).to(**t)
        w = torch.randn(edges, conv.num_paths, channels, generator=gen, dtype=dtype).to(device)
        w.requires_grad_(True)

        def step():
            conv(x, conv.filters(sh(vec)), w).backward(grad_out)
    else:
        wigner = EdgeWignerD(lmax).to(**t)
        sizes = [lmax - m + 1 for m in range(lmax + 1)]
        weights = [torch.randn(n * channels, n * channels, generator=gen, dtype=dtype).to(device)
                   .requires_grad_(True) for n in sizes]
        scale = [torch.randn(edges, n * channels, generator=gen, dtype=dtype).to(device)
                 .requires_grad_(True) for n in sizes]

        def step():
            flat = wigner.flat(vec)
            frame = so2.edge_frame(wigner.split(flat), lmax, lmax, flat=flat)
            y = so2.so2_linear(so2.rotate_to_edge_frame(x, frame), weights, lmax, lmax,
                               input_scale=scale)
            so2.rotate_from_edge_frame(y, frame).backward(grad_out)
    return step


def worker(method: str, lmax: int, edges: int, channels: int, device: str, repeats: int,
           dtype_name: str) -> dict:
    import resource

    import torch

    from ase_so3.calculator import parse_dtype
    dtype = parse_dtype(dtype_name)
    baseline_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # after imports
    step = _layer(method, lmax, edges, channels, device, dtype)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    step()  # warm-up
    sync()
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        sync()
        times.append(time.perf_counter() - start)
    if device.startswith("cuda"):
        peak_mb = torch.cuda.max_memory_allocated() / 2 ** 20
    else:
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - baseline_mb
    return {"method": method, "lmax": lmax, "seconds": min(times), "peak_mb": peak_mb}


def _run_one(args, method: str, lmax: int) -> dict | None:
    cmd = [sys.executable, "-m", "ase_so3.benchmark.scaling", "--worker", method, str(lmax),
           "--edges", str(args.edges), "--channels", str(args.channels), "--device", args.device,
           "--repeats", str(args.repeats), "--dtype", args.dtype, "--kernels", args.kernels]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout)
    except subprocess.TimeoutExpired:
        return None
    if res.returncode != 0:
        print(res.stderr[-2000:], file=sys.stderr)
        return None
    return json.loads(res.stdout.strip().splitlines()[-1])


def fit_exponent(lmaxes, seconds) -> float:
    """Least-squares slope of log(seconds) against log(lmax)."""
    pts = [(math.log(l), math.log(s)) for l, s in zip(lmaxes, seconds) if s and l > 0]
    if len(pts) < 2:
        return float("nan")
    mx = sum(p[0] for p in pts) / len(pts)
    my = sum(p[1] for p in pts) / len(pts)
    return sum((p[0] - mx) * (p[1] - my) for p in pts) / sum((p[0] - mx) ** 2 for p in pts)


def run(args) -> dict:
    rows = []
    tfn_alive = True
    for lmax in args.lmax:
        tfn = _run_one(args, "tfn", lmax) if tfn_alive else None
        if tfn is None or tfn["seconds"] > args.max_seconds:
            tfn_alive = False  # larger lmax would only take longer
        escn = _run_one(args, "escn", lmax)
        rows.append({"lmax": lmax, "tfn": tfn, "escn": escn})
        _print_row(rows[-1])
    fit_from = [r for r in rows if r["lmax"] >= args.fit_from]
    exps = {}
    for method in ("tfn", "escn"):
        pts = [(r["lmax"], r[method]["seconds"]) for r in fit_from if r[method]]
        exps[method] = fit_exponent([p[0] for p in pts], [p[1] for p in pts])
    return {"edges": args.edges, "channels": args.channels, "device": args.device,
            "dtype": args.dtype, "threads": _threads(), "rows": rows, "exponents": exps,
            "fit_from_lmax": args.fit_from}


def _threads() -> int:
    import torch
    return torch.get_num_threads()


def _fmt(x, spec):
    return format(x, spec) if x is not None else "—"


def _print_row(r):
    t, e = r["tfn"], r["escn"]
    ratio = t["seconds"] / e["seconds"] if t and e else None
    print(f"| {r['lmax']} | {_fmt(t and t['seconds'] * 1e3, '.1f')} | "
          f"{_fmt(e and e['seconds'] * 1e3, '.1f')} | {_fmt(ratio, '.1f')} | "
          f"{_fmt(t and t['peak_mb'], '.0f')} | {_fmt(e and e['peak_mb'], '.0f')} |", flush=True)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--lmax", type=int, nargs="+", default=list(range(1, 9)))
    p.add_argument("--edges", type=int, default=100_000)
    p.add_argument("--channels", type=int, default=16)
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads per measurement")
    p.add_argument("--timeout", type=float, default=900.0, help="seconds per measurement")
    p.add_argument("--max-seconds", type=float, default=60.0,
                   help="stop measuring TFN at larger lmax once one step takes longer")
    p.add_argument("--fit-from", type=int, default=2, help="fit exponents on lmax >= this")
    p.add_argument("--kernels", default="torch", choices=["torch", "cpp"],
                   help="eSCN edge frame (Wigner blocks, rotations): torch ops, or the fused CPU "
                        "kernels (cpp, so3/cpu_kernels.py); TFN has no such kernels")
    p.add_argument("--json", default=None, help="write all numbers here")
    p.add_argument("--worker", nargs=2, metavar=("METHOD", "LMAX"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    from ase_so3.allocator import configure_from_environment
    allocator = configure_from_environment()  # both methods alike (allocator.py)
    if args.threads:
        import torch
        torch.set_num_threads(args.threads)
    if args.worker:
        from ase_so3.so3 import cpu_kernels
        cpu_kernels.set_backend(args.kernels)
        print(json.dumps(worker(args.worker[0], int(args.worker[1]), args.edges, args.channels,
                                args.device, args.repeats, args.dtype)))
        return 0
    print(f"one convolution layer, forward + backward: {args.edges} edges, {args.channels} "
          f"channels, {args.dtype}, {args.device}, {_threads()} threads, allocator: "
          f"{allocator}, eSCN edge-frame kernels: {args.kernels}\n")
    print("| lmax | TFN ms | eSCN ms | TFN/eSCN | TFN peak MB | eSCN peak MB |")
    print("|---|---|---|---|---|---|")
    result = run(args)
    result["allocator"] = allocator
    result["kernels"] = args.kernels
    e = result["exponents"]
    print(f"\nfitted cost ~ lmax^k for lmax >= {args.fit_from}: TFN k = {e['tfn']:.2f}, "
          f"eSCN k = {e['escn']:.2f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
