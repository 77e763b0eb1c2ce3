"""The command-line reference of the docs site: the ``--help`` of ``ase-so3`` and of each of its
subcommands and benchmarks, as markdown (filled into ``docs/reference/cli.md`` at build time)."""

from __future__ import annotations

import argparse
import contextlib
import io

BENCHMARKS = {
    "run": "ase_so3.benchmark.harness", "learning": "ase_so3.benchmark.learning",
    "pareto": "ase_so3.benchmark.pareto", "stability": "ase_so3.benchmark.stability_study",
    "scaling": "ase_so3.benchmark.scaling", "training-speed": "ase_so3.benchmark.training_speed",
}


def _help_of_main(module: str) -> str:
    import importlib
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.suppress(SystemExit):
        importlib.import_module(module).main(["--help"])
    return out.getvalue()


def subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def reference_markdown() -> str:
    from ase_so3.cli import build_parser
    parser = build_parser()
    parts = ["## ase-so3", "", "```text", parser.format_help().rstrip(), "```", ""]
    for name, sub in subcommands(parser).items():
        parts += [f"## ase-so3 {name}", "", "```text", sub.format_help().rstrip(), "```", ""]
    for name, module in BENCHMARKS.items():
        parts += [f"## ase-so3 benchmark {name}", "", "```text",
                  _help_of_main(module).rstrip(), "```", ""]
    parts += ["## ase-so3 benchmark report", "",
              "`ase-so3 benchmark report [FOLDER]` rebuilds `report.md` of a `benchmark run` "
              "folder (default `benchmark_out`) from its `results.json`.", ""]
    return "\n".join(parts)
