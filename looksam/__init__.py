"""looksam-bench: what Sharpness-Aware Minimization costs and buys, measured.

The optimizers are importable from the top level so a training loop needs one import::

    from looksam import LookSAM
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from looksam.optim import (
    AESAM,
    ESAM,
    GRST,
    GSAM,
    KSAM,
    MESA,
    MSAM,
    RWP,
    SAF,
    SAM,
    AELookSAM,
    BatchClosure,
    LatePhaseSAM,
    LayerLookSAM,
    LookSAM,
    LossTermMethod,
    OnePassOptimizer,
    SAMk,
    SharpnessAwareOptimizer,
    create_optimizer,
    frozen_bn_stats,
    get_optimizer_info,
    list_optimizers,
    register_optimizer,
)

try:
    __version__ = version("looksam-bench")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"

__all__ = [
    "AESAM",
    "ESAM",
    "GRST",
    "GSAM",
    "KSAM",
    "MESA",
    "MSAM",
    "RWP",
    "SAF",
    "SAM",
    "AELookSAM",
    "BatchClosure",
    "LatePhaseSAM",
    "LayerLookSAM",
    "LookSAM",
    "LossTermMethod",
    "OnePassOptimizer",
    "SAMk",
    "SharpnessAwareOptimizer",
    "__version__",
    "create_optimizer",
    "frozen_bn_stats",
    "get_optimizer_info",
    "list_optimizers",
    "register_optimizer",
]
