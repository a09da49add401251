"""The SAM family as drop-in ``torch.optim.Optimizer`` wrappers, plus the registry and helpers."""

from __future__ import annotations

from looksam.optim import _builtins  # noqa: F401  (registers the built-in entries)
from looksam.optim._base import SharpnessAwareOptimizer
from looksam.optim._contract import FORWARD_ONLY_PASS, BatchClosure, LossTermMethod
from looksam.optim._one_pass import OnePassOptimizer
from looksam.optim._registry import (
    DEFAULT_BASE,
    DEFAULT_OPTIMIZER,
    LINEUPS,
    HyperParameter,
    OptimizerInfo,
    base_optimizers,
    create_optimizer,
    every_k_passes,
    fixed_passes,
    full_sam,
    get_optimizer_info,
    gradient_colours,
    integer_hyperparameters,
    list_optimizers,
    option_help,
    parse_hyperparameters,
    register_optimizer,
    resolve_base,
    resolve_hyperparameters,
    sensitivity_axes,
    shared_hyperparameter,
)
from looksam.optim.aesam import AESAM, AELookSAM
from looksam.optim.bn import frozen_bn_stats
from looksam.optim.esam import ESAM
from looksam.optim.grst import GRST
from looksam.optim.gsam import GSAM
from looksam.optim.ksam import KSAM
from looksam.optim.late_phase import LatePhaseSAM
from looksam.optim.layer_looksam import LayerLookSAM
from looksam.optim.looksam import LookSAM
from looksam.optim.msam import MSAM
from looksam.optim.rwp import RWP
from looksam.optim.saf import MESA, SAF
from looksam.optim.sam import SAM
from looksam.optim.samk import SAMk

__all__ = [
    "AESAM",
    "DEFAULT_BASE",
    "DEFAULT_OPTIMIZER",
    "ESAM",
    "FORWARD_ONLY_PASS",
    "GRST",
    "GSAM",
    "KSAM",
    "LINEUPS",
    "MESA",
    "MSAM",
    "RWP",
    "SAF",
    "SAM",
    "AELookSAM",
    "BatchClosure",
    "HyperParameter",
    "LatePhaseSAM",
    "LayerLookSAM",
    "LookSAM",
    "LossTermMethod",
    "OnePassOptimizer",
    "OptimizerInfo",
    "SAMk",
    "SharpnessAwareOptimizer",
    "base_optimizers",
    "create_optimizer",
    "every_k_passes",
    "fixed_passes",
    "frozen_bn_stats",
    "full_sam",
    "get_optimizer_info",
    "gradient_colours",
    "integer_hyperparameters",
    "list_optimizers",
    "option_help",
    "parse_hyperparameters",
    "register_optimizer",
    "resolve_base",
    "resolve_hyperparameters",
    "sensitivity_axes",
    "shared_hyperparameter",
]
