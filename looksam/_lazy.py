"""Lazy public names for subpackages whose modules are heavy to import (Optuna, MLflow, torch).

A subpackage lists ``{name: module}`` and gets a PEP 562 ``__getattr__`` that imports the
module on first use, so ``import looksam.sweeps.spec`` does not load the whole room.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any


def lazy_exports(package: str, names: Mapping[str, str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` importing ``package.names[attr]`` when ``attr`` is first read."""

    def __getattr__(attr: str) -> Any:  # noqa: N807  (PEP 562 names it)
        module = names.get(attr)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {attr!r}")
        return getattr(importlib.import_module(f"{package}.{module}"), attr)

    return __getattr__
