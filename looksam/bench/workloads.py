"""Moved to :mod:`looksam.train.workloads`; this name keeps working for one release.

Workloads are part of the training loop's room now (``looksam.train``), not the measuring
tools'. Importing this module warns once (a module runs once per process) and re-exports every
public name of the new one, so plugins written against the old path still register.
"""

from __future__ import annotations

import sys
import warnings

from looksam.train.workloads import *  # noqa: F403  (the whole public face, by its __all__)
from looksam.train.workloads import __all__ as __all__

#: A package, so that the old submodule paths (``looksam.bench.workloads.custom``…) import too:
#: each is the new module itself, never a second copy that would register its workloads again.
__path__: list[str] = []
for _name, _module in list(sys.modules.items()):
    if _name.startswith("looksam.train.workloads."):
        _short = _name.rsplit(".", 1)[1]
        sys.modules[f"{__name__}.{_short}"] = _module
        globals()[_short] = _module  # what a real package's import would bind

warnings.warn(
    "looksam.bench.workloads moved to looksam.train.workloads; import it from there "
    "(the old path goes in the next release)",
    FutureWarning,
    stacklevel=2,
)
