"""The ``ase-so3`` command: ``info``, ``md``, ``convert``, ``train``, ``evaluate``, ``check``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ase_so3.allocator import configure_from_environment
from ase_so3.errors import ASESO3Error


def _cmd_info(args) -> int:
    import platform

    import torch

    from ase_so3 import __version__
    from ase_so3.potentials import REGISTRY
    from ase_so3.pretrained import list_potentials, model_card
    print(f"ase_so3 {__version__}  (python {platform.python_version()}, torch {torch.__version__})")
    print(f"CPU threads: {torch.get_num_threads()}")
    print(f"allocator: {configure_from_environment()}")
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
            extra = (f"  ({card.get('model')}, {card.get('num_parameters')} parameters) test "
                     f"energy MAE {err.get('energy_mae_meV', float('nan')):.2f} meV, "
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
        model_or_name = model
    else:
        model_or_name = args.potential
    return SO3Calculator(model_or_name, device=args.device, dtype=args.dtype,
                         cuda_graphs=args.cuda_graphs)


def _cmd_md(args) -> int:
    from ase_so3.md import load_structure, run_md
    atoms = load_structure(args.structure)
    calc = _make_calculator(args, atoms)
    print(f"{len(atoms)} atoms ({atoms.get_chemical_formula()}), {args.ensemble.upper()}, "
          f"{args.steps} steps of {args.timestep} fs at {args.temperature} K")
    res = run_md(atoms, calc, ensemble=args.ensemble, temperature_K=args.temperature,
                 timestep_fs=args.timestep, steps=args.steps, seed=args.seed,
                 friction_per_fs=args.friction, output=args.output, interval=args.interval,
                 traj_format=args.format, progress=not args.quiet,
                 uncertainty_threshold=args.uncertainty_threshold, on_uncertain=args.on_uncertain)
    print(f"{'interrupted after' if res.interrupted else 'done:'} {res.steps_done} steps in "
          f"{res.seconds:.2f} s ({res.steps_per_second:.1f} steps/s)")
    if res.drift_eV_per_atom_per_ps is not None:
        print(f"NVE energy drift: {res.drift_eV_per_atom_per_ps:.3e} eV/atom/ps; largest "
              f"deviation {res.max_deviation_eV_per_atom:.3e} eV/atom")
    if args.uncertainty_threshold is not None:
        print(f"{res.uncertain_frames} frames with a force uncertainty over "
              f"{args.uncertainty_threshold} eV/Å" + (" (stopped at the first)" if
                                                      res.stopped_uncertain else "") +
              (f": {Path(args.output) / 'uncertain.extxyz'}" if res.uncertain_frames else ""))
    print(f"trajectory: {res.trajectory}\nlog: {res.log}")
    print(f"plot: {res.plot}" if res.plot else "plot: skipped (pip install matplotlib)")
    return 130 if res.interrupted else 0


def _cmd_convert(args) -> int:
    from ase_so3.training.convert import convert_to_hdf5, hdf5_to_extxyz
    inputs = [str(p) for p in args.inputs]
    if len(inputs) == 1 and inputs[0].endswith(".h5"):
        n = hdf5_to_extxyz(inputs[0], args.output, split=args.split)
        print(f"wrote {n} structures to {args.output}")
        return 0
    sizes = convert_to_hdf5(inputs, args.output, n_train=args.train, n_val=args.val,
                            n_test=args.test, seed=args.seed, energy_unit=args.energy_unit,
                            energy_key=args.energy_key, forces_key=args.forces_key)
    print(f"wrote {args.output}: splits " + ", ".join(f"{k} {v}" for k, v in sizes.items()))
    return 0


def _cmd_train(args) -> int:
    from ase_so3.training.config import TrainConfig
    from ase_so3.training.trainer import Trainer
    overrides = list(args.overrides)
    config = args.config
    if config is not None and "=" in config and not Path(config).is_file():
        overrides.insert(0, config)  # no config file, only key=value overrides
        config = None
    if args.data:
        overrides.append(f"data={args.data}")
    if args.output:
        overrides.append(f"output={args.output}")
    cfg = TrainConfig.load(config, overrides)
    import os
    result = Trainer(cfg).fit(resume=args.resume, resume_from=args.resume_from)
    if int(os.environ.get("RANK", "0")) != 0:
        return 0  # under torchrun only rank 0 reports
    print(f"stopped ({result['stop_reason']}) after {result['epochs']} epochs, "
          f"{result['elapsed_s']:.0f} s; best validation force MAE "
          f"{result['best_val_forces_mae_meV_per_A']:.2f} meV/Å; potential: "
          f"{cfg.output}/potential.pt")
    return 0


def _cmd_evaluate(args) -> int:
    from ase_so3.training.evaluate import evaluate_potential
    m = evaluate_potential(args.potential, args.data, split=args.split, device=args.device,
                           dtype=args.dtype, limit=args.limit, output=args.output)
    print(f"{args.split}: {m['num_structures']} structures")
    print(f"energy MAE {m['energy_mae_meV']:.2f} meV ({m['energy_mae_meV_per_atom']:.3f} meV/atom), "
          f"RMSE {m['energy_rmse_meV']:.2f} meV")
    print(f"forces MAE {m['forces_mae_meV_per_A']:.2f} meV/Å, RMSE {m['forces_rmse_meV_per_A']:.2f} meV/Å")
    if args.output:
        print(f"per-structure errors: {args.output}/errors.csv; parity plot: {m.get('parity_plot')}")
    return 0


def _cmd_calibrate(args) -> int:
    from ase_so3.calculator import parse_dtype
    from ase_so3.uncertainty import calibrate_potential
    r = calibrate_potential(args.potential, args.data, args.output, train_split=args.train_split,
                            val_split=args.val_split, test_split=args.test_split,
                            dtype=parse_dtype(args.dtype), device=args.device)
    print(f"fitted on {r['train_structures']} {args.train_split} and {r['val_structures']} "
          f"{args.val_split} structures: force scale {r['forces_scale'] * 1e3:.3f} meV/Å, "
          f"regularisation {r['reg']:.0e}")
    t = r.get("test")
    if t:
        print(f"{args.test_split} ({t['structures']} structures): Spearman of predicted and "
              f"actual per-structure force RMSE {t['spearman_structure_forces']:.3f}; force RMSE "
              f"predicted {t['forces_rmse_predicted_meV_per_A']:.2f}, observed "
              f"{t['forces_rmse_observed_meV_per_A']:.2f} meV/Å")
    print(f"potential with uncertainty: {args.output} (SO3Calculator results energy_std, "
          "forces_std)")
    return 0


def _cmd_label(args) -> int:
    import json

    from ase_so3.labelling import sample_and_label
    r = sample_and_label(args.structure, args.output, labeller=args.labeller,
                         options=json.loads(args.labeller_options), count=args.count,
                         rattle=args.rattle, every=args.every, val=args.val, test=args.test,
                         seed=args.seed)
    print(f"wrote {args.output}: train {r['train']}, val {r['val']}, test {r['test']}; labelled "
          f"with {r['level_of_theory']}")
    return 0


def _cmd_active_learn(args) -> int:
    import json

    from ase_so3.active import ActiveLearning, ActiveLearningConfig
    options = {k: v for k, v in vars(args).items() if k in ActiveLearningConfig.__dataclass_fields__}
    options["labeller_options"] = json.loads(args.labeller_options)
    progress = ActiveLearning(ActiveLearningConfig(**options)).run()
    last = progress["rounds"][-1]
    print(f"{len(progress['rounds'])} rounds; potential: {last['potential']}; data: "
          f"{Path(args.output) / 'data.h5'} ({last['total_structures']} structures); "
          f"progress: {Path(args.output) / 'progress.json'}")
    return 0


def _cmd_check(args) -> int:
    from ase_so3.loading import load_potential
    from ase_so3.md import load_structure
    from ase_so3.selfcheck import format_table, run_checks
    model = load_potential(args.potential)
    structures = {s: load_structure(s) for s in args.structures} if args.structures else None
    rows = run_checks(model, structures, nve_steps=args.nve_steps)
    print(format_table(rows))
    return 0 if all(r.passed for r in rows) else 1


def _cmd_ipi_client(args) -> int:
    from ase_so3.engines.ipi import run_cli
    return run_cli(args)


def _cmd_benchmark(args) -> int:
    if args.which == "scaling":
        from ase_so3.benchmark.scaling import main as scaling_main
        return scaling_main(args.rest)
    if args.which == "run":
        from ase_so3.benchmark.harness import main as harness_main
        return harness_main(args.rest)
    if args.which == "learning":
        from ase_so3.benchmark.learning import main as learning_main
        return learning_main(args.rest)
    if args.which == "stability":
        from ase_so3.benchmark.stability_study import main as stability_main
        return stability_main(args.rest)
    if args.which == "pareto":
        from ase_so3.benchmark.pareto import main as pareto_main
        return pareto_main(args.rest)
    if args.which == "training-speed":
        from ase_so3.benchmark.training_speed import main as training_speed_main
        return training_speed_main(args.rest)
    if args.which == "report":
        from ase_so3.benchmark.report import write_report
        print(write_report(args.rest[0] if args.rest else "benchmark_out"))
        return 0
    raise ValueError(f"unknown benchmark {args.which!r}")


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
    md.add_argument("--cuda-graphs", action="store_true",
                    help="with --device cuda: replay each step as a captured CUDA graph (small "
                         "molecules: a step is then one launch instead of hundreds)")
    md.add_argument("--output", default="md_out", help="output folder")
    md.add_argument("--interval", type=int, default=1, help="write every N steps")
    md.add_argument("--format", choices=["traj", "extxyz"], default="traj")
    md.add_argument("--quiet", action="store_true", help="no progress bar")
    md.add_argument("--uncertainty-threshold", type=float, default=None, metavar="EV_PER_A",
                    help="frames whose largest forces_std exceeds this are saved to "
                         "uncertain.extxyz (needs a calibrated potential)")
    md.add_argument("--on-uncertain", choices=["save", "stop"], default="save",
                    help="at a frame over the threshold: save it and go on, or stop there")
    cv = sub.add_parser("convert", help="npz / extxyz / ASE db -> HDF5, or HDF5 -> extxyz")
    cv.add_argument("inputs", nargs="+", help="input files (one .h5 to export to extxyz)")
    cv.add_argument("-o", "--output", required=True)
    cv.add_argument("--train", type=int, default=None, help="training structures")
    cv.add_argument("--val", type=int, default=50, help="validation structures")
    cv.add_argument("--test", type=int, default=None, help="test structures")
    cv.add_argument("--seed", type=int, default=0)
    cv.add_argument("--split", default=None, help="with an .h5 input: export only this split")
    cv.add_argument("--energy-unit", default="eV", help="unit of non-npz inputs (eV, kcal/mol, ...)")
    cv.add_argument("--energy-key", default="REF_energy")
    cv.add_argument("--forces-key", default="REF_forces")
    tr = sub.add_parser("train", help="train a potential from a YAML config")
    tr.add_argument("config", nargs="?", default=None, help="YAML training config")
    tr.add_argument("overrides", nargs="*", help="key=value overrides (model_config.lmax=3)")
    tr.add_argument("--data", default=None)
    tr.add_argument("--output", default=None)
    tr.add_argument("--resume", action="store_true", help="continue from checkpoint_last.pt")
    tr.add_argument("--resume-from", metavar="CHECKPOINT", default=None,
                    help="continue from this checkpoint (e.g. OUTPUT/checkpoint_best.pt when "
                         "checkpoint_last.pt is damaged)")
    ev = sub.add_parser("evaluate", help="errors of a potential on a data-set split")
    ev.add_argument("potential")
    ev.add_argument("data")
    ev.add_argument("--split", default="test")
    ev.add_argument("--limit", type=int, default=None, help="first N structures of the split")
    ev.add_argument("--output", default=None, help="folder for errors.csv and parity.png")
    ev.add_argument("--device", default="cpu")
    ev.add_argument("--dtype", default="float64", choices=["float32", "float64"])
    ca = sub.add_parser("calibrate", help="fit a potential's uncertainty (energy_std, "
                        "forces_std) on a data set and write the potential with it")
    ca.add_argument("potential", help="potential file or shipped potential name")
    ca.add_argument("data", help="HDF5 data set with the training and validation splits")
    ca.add_argument("-o", "--output", required=True, help="potential file to write")
    ca.add_argument("--train-split", default="train")
    ca.add_argument("--val-split", default="val")
    ca.add_argument("--test-split", default=None, help="also report how well it ranks the "
                    "errors of this split")
    ca.add_argument("--device", default="cpu")
    ca.add_argument("--dtype", default="float64", choices=["float32", "float64"])
    lb = sub.add_parser("label", help="a labelled HDF5 data set from a structure (rattled "
                        "copies) or a trajectory (its frames), with DFT or any ASE calculator")
    lb.add_argument("structure", help="structure or trajectory file, or a shipped molecule name")
    lb.add_argument("-o", "--output", required=True, help="HDF5 data set to write")
    lb.add_argument("--count", type=int, default=20, help="rattled copies (with --rattle > 0)")
    lb.add_argument("--rattle", type=float, default=0.05,
                    help="standard deviation of the Gaussian displacements (Å); 0: label the "
                         "file's frames as they are")
    lb.add_argument("--every", type=int, default=1, help="with --rattle 0: every N-th frame")
    lb.add_argument("--val", type=int, default=0, help="validation structures")
    lb.add_argument("--test", type=int, default=0, help="test structures")
    lb.add_argument("--labeller", default="pyscf",
                    help="pyscf (PBE/def2-SVP), emt, or package.module:Class")
    lb.add_argument("--labeller-options", default="{}", help="JSON keyword arguments")
    lb.add_argument("--seed", type=int, default=0)
    al = sub.add_parser("active-learn", help="MD, label the most uncertain frames, append, "
                        "fine-tune; repeat (resumes in the same --output)")
    al.add_argument("--potential", required=True, help="calibrated potential file or shipped name")
    al.add_argument("--data", required=True, help="HDF5 data set with train and val splits")
    al.add_argument("--structure", required=True, help="MD start: file or shipped molecule")
    al.add_argument("--output", default="active")
    from ase_so3.active import ActiveLearningConfig as C
    for name, text in (("rounds", "rounds of MD, labelling and fine-tuning"),
                       ("temperature_K", "MD temperature (K)"), ("timestep_fs", "MD time step"),
                       ("md_steps", "MD steps per round"),
                       ("sample_every", "MD steps between candidate frames"),
                       ("per_round", "labels per round"),
                       ("min_separation", "MD steps between two frames chosen in a round"),
                       ("val_every", "every N-th label goes to the validation split"),
                       ("max_forces_std", "eV/Å: a round's MD stops past this uncertainty"),
                       ("labeller", "pyscf (PBE/def2-SVP), emt, or package.module:Class of an "
                                    "ASE calculator"),
                       ("finetune_epochs", "epochs of each fine-tuning run"),
                       ("finetune_lr", "peak learning rate of the fine-tuning runs"),
                       ("seed", "MD velocities and noise, fine-tuning batch order")):
        default = C.__dataclass_fields__[name].default
        al.add_argument("--" + name.replace("_K", "").replace("_", "-"), dest=name,
                        type=type(default), default=default, help=f"{text} (default {default})")
    al.add_argument("--selection", choices=["uncertainty", "random"], default="uncertainty",
                    help="which candidates to label: the most uncertain (default) or random "
                         "ones (a baseline)")
    al.add_argument("--labeller-options", default="{}", help="JSON keyword arguments of the "
                    "labeller, e.g. '{\"grid_level\": 3}'")
    al.add_argument("--train-overrides", nargs="*", default=[], metavar="KEY=VALUE",
                    help="options of the fine-tuning runs (ase-so3 train's keys)")
    ck = sub.add_parser("check", help="physics self-check of a potential (exit 1 on failure)")
    ck.add_argument("potential", help="potential file or shipped potential name")
    ck.add_argument("structures", nargs="*", help="structure files (default: built-in set)")
    ck.add_argument("--nve-steps", type=int, default=200)
    from ase_so3.engines.ipi import add_parser as add_ipi_parser
    add_ipi_parser(sub)
    bm = sub.add_parser("benchmark", help="benchmarks: run (ours vs MACE: accuracy, speed, "
                        "stability), learning (ours vs MACE at equal training budget), pareto "
                        "(latency at matched accuracy), stability (MD stability of one potential, "
                        "batched replicas), report (rebuild a report), scaling (eSCN vs TFN cost "
                        "vs lmax), training-speed (structures/s of training steps, ours vs MACE)")
    bm.add_argument("which", choices=["run", "learning", "pareto", "stability", "report",
                                      "scaling", "training-speed"])
    bm.add_argument("rest", nargs=argparse.REMAINDER, help="options of the benchmark (--help)")
    return p


def main(argv=None) -> int:
    configure_from_environment()  # huge pages; ASE_SO3_MALLOC=keep|system (allocator.py)
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:
        if args.command == "train" and all("=" in e and not e.startswith("-") for e in extra):
            args.overrides = list(args.overrides) + extra  # key=value after --options
        else:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
    handlers = {"info": _cmd_info, "md": _cmd_md, "convert": _cmd_convert, "train": _cmd_train,
                "evaluate": _cmd_evaluate, "check": _cmd_check,
                "calibrate": _cmd_calibrate, "active-learn": _cmd_active_learn,
                "label": _cmd_label, "benchmark": _cmd_benchmark,
                "ipi-client": _cmd_ipi_client}
    try:
        return handlers[args.command](args)
    except (ASESO3Error, FileNotFoundError) as exc:  # what the user can fix, said in a line;
        print(f"ase-so3 {args.command}: error: {exc}", file=sys.stderr)  # anything else is a
        return 2  # bug and keeps its traceback


if __name__ == "__main__":
    sys.exit(main())
