"""The ``ase-so3`` command: PyTorch's huge-page allocation for large CPU tensors is switched on
before PyTorch loads (``THP_MEM_ALLOC_ENABLE=1``, read once, at its first allocation; see
``ase_so3/allocator.py``), unless ``ASE_SO3_MALLOC=system`` or the variable is already set. The
command is a program and may set its own process's environment; ``import ase_so3`` never does.
This module imports nothing of ase_so3 or PyTorch before that."""

import os
import sys


def main() -> int:
    if os.environ.get("ASE_SO3_MALLOC", "").strip().lower() != "system":
        os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")
    from ase_so3.cli import main as cli_main
    return cli_main()


if __name__ == "__main__":
    sys.exit(main())
