"""The ``ase-so3`` command: ``info`` and ``md`` (more subcommands come with training)."""

from __future__ import annotations

import argparse
import sys


def _cmd_info(args) -> int:
    import platform

    import torch

    from ase_so3 import __version__
    from ase_so3.potentials import REGISTRY
    from ase_so3.pretrained import list_potentials, model_card
    print(f"ase_so3 {__version__}  (python {platform.python_version()}, torch {torch.__version__})")
    print(f"CPU threads: {torch.get_num_threads()}")
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            print(f"CUDA device {i}: {torch.cuda.get_device_name(i)}")
    else:
        print("CUDA: not available")
    print("registered models:")
    for name, cls in sorted(REGISTRY.items()):
        print(f"  {name:<16} {cls.__name__} ({cls.__module__})")
    shipped = list_potentials()
    print("shipped potentials:" if shipped else "shipped potentials: none")
    for name in shipped:
        card = model_card(name)
        err = card.get("test_errors", {})
        extra = ""
        if err:
            extra = (f"  test energy MAE {err.get('energy_mae_meV', float('nan')):.2f} meV, "
                     f"force MAE {err.get('forces_mae_meV_per_A', float('nan')):.2f} meV/Å")
        print(f"  {name}{extra}")
    return 0


def _make_calculator(args, atoms):
    from ase_so3.calculator import SO3Calculator
    from ase_so3.potentials import build_potential
    if args.untrained:
        import torch
        torch.manual_seed(args.seed)
        model = build_potential(args.untrained, species=sorted(set(atoms.numbers.tolist())))
        print(f"using an UNTRAINED {args.untrained} model (random weights): for testing only")
        return SO3Calculator(model, device=args.device, dtype=args.dtype)
    return SO3Calculator(args.potential, device=args.device, dtype=args.dtype)


def _cmd_md(args) -> int:
    from ase_so3.md import load_structure, run_md
    atoms = load_structure(args.structure)
    calc = _make_calculator(args, atoms)
    print(f"{len(atoms)} atoms ({atoms.get_chemical_formula()}), {args.ensemble.upper()}, "
          f"{args.steps} steps of {args.timestep} fs at {args.temperature} K")
    res = run_md(atoms, calc, ensemble=args.ensemble, temperature_K=args.temperature,
                 timestep_fs=args.timestep, steps=args.steps, seed=args.seed,
                 friction_per_fs=args.friction, output=args.output, interval=args.interval,
                 traj_format=args.format, progress=not args.quiet)
    print(f"{'interrupted after' if res.interrupted else 'done:'} {res.steps_done} steps in "
          f"{res.seconds:.2f} s ({res.steps_per_second:.1f} steps/s)")
    if res.drift_eV_per_atom_per_ps is not None:
        print(f"NVE energy drift: {res.drift_eV_per_atom_per_ps:.3e} eV/atom/ps; largest "
              f"deviation {res.max_deviation_eV_per_atom:.3e} eV/atom")
    print(f"trajectory: {res.trajectory}\nlog: {res.log}")
    print(f"plot: {res.plot}" if res.plot else "plot: skipped (pip install matplotlib)")
    return 130 if res.interrupted else 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ase-so3", description="SO(3)-equivariant potentials for ASE")
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("info", help="version, devices, registered models, shipped potentials")
    md = sub.add_parser("md", help="molecular dynamics with a shipped or user potential")
    md.add_argument("structure", nargs="?", default="aspirin",
                    help="structure file (any ASE format) or a shipped rMD17 molecule name")
    md.add_argument("--potential", default="escn-rmd17-aspirin",
                    help="potential file or shipped potential name")
    md.add_argument("--untrained", metavar="MODEL", default=None,
                    help="use a freshly initialised model (tfn, se3_transformer, escn) instead")
    md.add_argument("--ensemble", choices=["nve", "nvt"], default="nve")
    md.add_argument("--temperature", type=float, default=300.0, help="K")
    md.add_argument("--timestep", type=float, default=0.5, help="fs")
    md.add_argument("--steps", type=int, default=200)
    md.add_argument("--friction", type=float, default=0.01, help="Langevin friction, 1/fs")
    md.add_argument("--seed", type=int, default=0)
    md.add_argument("--device", default="cpu")
    md.add_argument("--dtype", default="float64", choices=["float32", "float64"])
    md.add_argument("--output", default="md_out", help="output folder")
    md.add_argument("--interval", type=int, default=1, help="write every N steps")
    md.add_argument("--format", choices=["traj", "extxyz"], default="traj")
    md.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    handlers = {"info": _cmd_info, "md": _cmd_md}
    try:
        return handlers[args.command](args)
    except (FileNotFoundError, ValueError, RuntimeError) as exc:
        print(f"ase-so3 {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
