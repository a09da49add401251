"""One public face: every SAM-family class is exported, and its defaults are its registry's."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from typing import Any

import pytest
import torch

import looksam
import looksam.optim
from looksam.optim import (
    LossTermMethod,
    SharpnessAwareOptimizer,
    create_optimizer,
    list_optimizers,
)

#: Constructor arguments that are not hyperparameters (what it wraps, the run's length, how its
#: scalars are kept, the DDP hook).
NOT_HYPERPARAMETERS = {
    *("self", "base", "total_steps", "scalars", "sync_gv"),
    *("seed", "schedule", "vector_scale"),  # how, not how much: not searched
}


def _public_optimizer_classes() -> dict[str, type]:
    """Every public SharpnessAwareOptimizer or LossTermMethod subclass under looksam/optim."""
    found: dict[str, type] = {}
    for module_info in pkgutil.iter_modules(looksam.optim.__path__):
        module = importlib.import_module(f"looksam.optim.{module_info.name}")
        for name, value in vars(module).items():
            if (
                inspect.isclass(value)
                and issubclass(value, SharpnessAwareOptimizer | LossTermMethod)
                and value.__module__ == module.__name__
                and not name.startswith("_")
            ):
                found[name] = value
    return found


def test_every_public_optimizer_class_is_exported_from_looksam_and_looksam_optim() -> None:
    classes = _public_optimizer_classes()
    assert {"SAM", "LookSAM", "MSAM", "GSAM", "AESAM", "AELookSAM", "LatePhaseSAM"} <= set(classes)
    for name, cls in classes.items():
        for package in (looksam, looksam.optim):
            assert getattr(package, name, None) is cls, f"{package.__name__}.{name}"
            assert name in package.__all__, f"{package.__name__}.__all__ lacks {name}"


def _built(name: str) -> torch.optim.Optimizer:
    param = torch.nn.Parameter(torch.zeros(2))
    base = "adamw" if name == "msam" else None  # MSAM needs a momentum: AdamW has one
    opt = create_optimizer(name, [param], base=base, total_steps=100)
    assert isinstance(opt, SharpnessAwareOptimizer | LossTermMethod)
    return opt


@pytest.mark.parametrize("name", [i.name for i in list_optimizers() if i.wraps_base])
def test_constructor_defaults_are_the_registry_defaults(name: str) -> None:
    """A class used directly (``LookSAM(base)``) behaves as ``create_optimizer(name)`` does."""
    opt = _built(name)
    registry = {hp.name: hp.default for hp in looksam.get_optimizer_info(name).hyperparameters}
    signature = inspect.signature(type(opt).__init__)
    compared: dict[str, Any] = {}
    for arg, parameter in signature.parameters.items():
        if arg in NOT_HYPERPARAMETERS or parameter.default is inspect.Parameter.empty:
            continue
        assert arg in registry, f"{type(opt).__name__}({arg}=…) has no registry entry"
        assert parameter.default == registry[arg], (
            f"{type(opt).__name__}: {arg}={parameter.default!r} in the class, "
            f"{registry[arg]!r} in the registry"
        )
        compared[arg] = parameter.default
    assert compared  # every SAM-family class has at least rho
