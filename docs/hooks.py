"""MkDocs hook: fills the generated reference pages at build time, so they cannot go stale.

``<!-- cli-reference -->`` becomes the ``--help`` of every ``ase-so3`` subcommand and benchmark;
``<!-- training-config-reference -->`` becomes the table of training configuration keys;
``<!-- pretrained-table -->`` becomes the table of shipped potentials read from their model cards.
"""

from __future__ import annotations


def on_page_markdown(markdown: str, page, config, files) -> str:
    if "<!-- cli-reference -->" in markdown:
        from ase_so3.cli_reference import reference_markdown
        markdown = markdown.replace("<!-- cli-reference -->", reference_markdown())
    if "<!-- training-config-reference -->" in markdown:
        from ase_so3.training.config import reference_markdown as config_reference
        markdown = markdown.replace("<!-- training-config-reference -->", config_reference())
    if "<!-- pretrained-table -->" in markdown:
        from ase_so3.pretrained.table import markdown as pretrained_table
        markdown = markdown.replace("<!-- pretrained-table -->", pretrained_table(long=True))
    return markdown
