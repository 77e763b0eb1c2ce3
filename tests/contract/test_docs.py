"""The docs site builds with warnings as errors, and its references cover the code: every CLI
subcommand and benchmark, every public class, every training option."""

import dataclasses
import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.skipif(importlib.util.find_spec("mkdocs") is None, reason="needs the docs extra")
def test_docs_site_builds_strict(tmp_path):
    run = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-q", "-d",
                          str(tmp_path / "site")], cwd=ROOT, capture_output=True, text=True,
                         timeout=600)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    api = (tmp_path / "site" / "reference" / "api" / "index.html").read_text()
    assert "SO3Calculator" in api and "calculate_many" in api  # docstrings were rendered
    cli = (tmp_path / "site" / "reference" / "cli" / "index.html").read_text()
    assert "ase-so3 ipi-client" in cli and "--resume-from" in cli


def test_cli_reference_covers_every_subcommand_and_benchmark():
    from ase_so3.cli import build_parser
    from ase_so3.cli_reference import reference_markdown, subcommands
    text = reference_markdown()
    for name in subcommands(build_parser()):
        assert f"## ase-so3 {name}\n" in text
    bench = subcommands(build_parser())["benchmark"]
    choices = next(a.choices for a in bench._actions if a.dest == "which")
    for name in choices:
        assert f"## ase-so3 benchmark {name}\n" in text
        block = text.split(f"## ase-so3 benchmark {name}\n", 1)[1].split("\n## ", 1)[0]
        assert name == "report" or "usage:" in block


def test_api_reference_lists_every_public_class_and_function():
    import ase_so3
    import ase_so3.potentials
    page = (ROOT / "docs" / "reference" / "api.md").read_text()
    listed = set(re.findall(r"^::: ([\w.]+)$", page, flags=re.M))
    short = {name.rsplit(".", 1)[-1] for name in listed}
    public = [n for n in ase_so3.__all__ if n != "__version__"] + [
        n for n in ase_so3.potentials.__all__ if n != "REGISTRY"]
    missing = [n for n in public if n not in short]
    assert not missing, f"not in docs/reference/api.md: {missing}"


def test_training_reference_lists_every_option():
    from ase_so3.training.config import TrainConfig, reference_markdown
    text = reference_markdown()
    for f in dataclasses.fields(TrainConfig):
        assert f"| `{f.name}` |" in text


def test_readme_has_the_two_setup_commands_and_links_that_exist():
    readme = (ROOT / "README.md").read_text()
    quick = readme.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    commands = [line for line in quick.split("```bash", 1)[1].split("```", 1)[0].splitlines()
                if line.strip() and not line.startswith("#")]
    assert commands == ["pip install torch==2.13.0 -e '.[plot]' && ase-so3 md aspirin --steps 300",
                        "pip install torch==2.13.0 -e '.[test]' && python -m pytest"]
    assert (ROOT / ".ci" / "run").read_text().strip().endswith(commands[1])
    for target in re.findall(r"\]\(([^)#]+)\)", readme):
        if not target.startswith("http"):
            assert (ROOT / target).exists(), target
    assert len(readme.splitlines()) < 120  # two screens, not a manual


def test_docs_hold_no_narrative_of_how_they_were_written():
    pattern = re.compile(r"\b(session \d+|this session|last session|previous session)\b", re.I)
    hits = []
    for path in [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]:
        for k, line in enumerate(path.read_text().splitlines(), 1):
            if pattern.search(line):
                hits.append(f"{path.relative_to(ROOT)}:{k}: {line.strip()[:100]}")
    assert not hits, "\n".join(hits)


def test_readme_table_of_shipped_potentials_is_the_one_their_model_cards_give():
    from ase_so3.pretrained.table import by_molecule
    readme = (ROOT / "README.md").read_text()
    assert by_molecule() in readme, "README table is stale: paste `python -m ase_so3.pretrained.table`"
