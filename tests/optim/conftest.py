"""The optimizer-core tests' fixtures: a tiny MLP, fixed data, closures, snapshots.

The fixtures return the factories of ``_models`` (where the shared scaffolding lives), so a test
can build as many identical models (one per optimizer it compares) as it needs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
from _models import (
    Closure,
    build_batch,
    build_closure,
    build_mlp,
    flat,
    run_training,
    snapshot,
)
from torch import Tensor, nn

from looksam.optim._base import SharpnessAwareOptimizer


@pytest.fixture
def train() -> Callable[..., tuple[list[Tensor], torch.optim.Optimizer]]:
    return run_training


@pytest.fixture
def make_mlp() -> Callable[..., nn.Sequential]:
    return build_mlp


@pytest.fixture
def make_batch() -> Callable[..., tuple[Tensor, Tensor]]:
    return build_batch


@pytest.fixture
def make_closure() -> Callable[..., Closure]:
    return build_closure


@pytest.fixture
def snapshot_of() -> Callable[[nn.Module], list[Tensor]]:
    return snapshot


@pytest.fixture
def flatten() -> Callable[[Any], Tensor]:
    return flat


@pytest.fixture(params=["host", "device"])
def scalar_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run the test once per scalar path: every SAM-family wrapper it builds uses that ``scalars``.

    "host" (Python floats) is what ``"auto"`` picks on the CPU; "device" (0-dim tensors, no host
    read) is the path CUDA takes, run here on the CPU. Modules opt in with
    ``pytestmark = pytest.mark.usefixtures("scalar_path")``.
    """
    mode: str = request.param
    original = SharpnessAwareOptimizer.__init__

    def init(self: SharpnessAwareOptimizer, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        self.scalars = mode

    monkeypatch.setattr(SharpnessAwareOptimizer, "__init__", init)
    return mode
