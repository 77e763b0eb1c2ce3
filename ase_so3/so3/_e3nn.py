"""Import e3nn's ``o3`` safely on every supported e3nn version (0.4.4 and newer).

e3nn 0.4.4 unpickles its own constant tables (which contain ``slice`` objects) with
``torch.load`` at import time. Under torch's weights-only default that fails unless ``slice`` is
allow-listed. We allow-list it *only while importing e3nn*, never for the whole process.
"""

from __future__ import annotations

import torch


def _import_o3():
    safe_globals = getattr(torch.serialization, "safe_globals", None)
    if safe_globals is None:  # torch < 2.4: weights-only was not the default
        from e3nn import o3
    else:
        with safe_globals([slice]):
            from e3nn import o3
    return o3


o3 = _import_o3()

__all__ = ["o3"]
