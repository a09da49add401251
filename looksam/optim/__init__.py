"""The SAM family as drop-in ``torch.optim.Optimizer`` wrappers, plus the registry and helpers."""

from __future__ import annotations

from looksam.optim._base import SharpnessAwareOptimizer
from looksam.optim._registry import (
    BASE_OPTIMIZERS,
    HyperParameter,
    OptimizerInfo,
    create_optimizer,
    get_optimizer_info,
    list_optimizers,
)
from looksam.optim.bn import frozen_bn_stats
from looksam.optim.layer_looksam import LayerLookSAM
from looksam.optim.looksam import LookSAM
from looksam.optim.sam import SAM
from looksam.optim.samk import SAMk

__all__ = [
    "BASE_OPTIMIZERS",
    "SAM",
    "HyperParameter",
    "LayerLookSAM",
    "LookSAM",
    "OptimizerInfo",
    "SAMk",
    "SharpnessAwareOptimizer",
    "create_optimizer",
    "frozen_bn_stats",
    "get_optimizer_info",
    "list_optimizers",
]
