"""``python -m ase_so3 ...``: the ``ase-so3`` command where its entry point is not installed."""

import sys

from ase_so3.cli import main

sys.exit(main())
