"""Shared helpers for the optimizer-core tests: a tiny MLP, fixed data, closures, snapshots.

The helpers are exposed as fixtures that return factories, so a test can build as many identical
models (one per optimizer it compares) as it needs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import Tensor, nn

IN_FEATURES, HIDDEN, OUT_FEATURES, BATCH = 5, 8, 3, 16

Closure = Callable[[], Tensor]


def build_mlp(seed: int = 0, dtype: torch.dtype = torch.float64) -> nn.Sequential:
    """A 5-8-3 tanh MLP with a fixed init (smooth, so g_s really differs from g)."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = nn.Sequential(
            nn.Linear(IN_FEATURES, HIDDEN), nn.Tanh(), nn.Linear(HIDDEN, OUT_FEATURES)
        )
    return model.to(dtype)


def build_batch(
    seed: int = 1, n: int = BATCH, dtype: torch.dtype = torch.float64
) -> tuple[Tensor, Tensor]:
    """A deterministic regression batch (x, y), independent of the global RNG."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, IN_FEATURES, generator=gen, dtype=dtype)
    y = torch.randn(n, OUT_FEATURES, generator=gen, dtype=dtype)
    return x, y


def build_closure(
    model: nn.Module,
    opt: torch.optim.Optimizer,
    x: Tensor,
    y: Tensor,
    record: list[Tensor] | None = None,
) -> Closure:
    """torch's closure contract: zero grads, forward, backward, return the loss.

    Every returned loss is appended to ``record`` (when given), so tests can count calls and check
    which call's loss ``step`` hands back.
    """

    def closure() -> Tensor:
        opt.zero_grad()
        loss = nn.functional.mse_loss(model(x), y)
        loss.backward()
        if record is not None:
            record.append(loss)
        return loss

    return closure


def snapshot(model: nn.Module) -> list[Tensor]:
    """Detached copies of every parameter, in ``model.parameters()`` order."""
    return [p.detach().clone() for p in model.parameters()]


def flat(tensors: Any) -> Tensor:
    """Concatenate tensors into one vector (how the tests form global norms and dot products)."""
    return torch.cat([t.reshape(-1) for t in tensors])


def run_training(
    make_opt: Callable[[Any], torch.optim.Optimizer],
    steps: int,
    *,
    seed: int = 0,
    dtype: torch.dtype = torch.float64,
    n_batches: int = 3,
) -> tuple[list[Tensor], torch.optim.Optimizer]:
    """Train a fresh ``build_mlp(seed)`` for ``steps`` steps of ``opt.step(closure)``.

    Step t uses batch ``build_batch(100 + t % n_batches)``. Returns the final weights and the
    optimizer (``make_opt`` receives ``model.parameters()``).
    """
    model = build_mlp(seed, dtype)
    opt = make_opt(model.parameters())
    for t in range(steps):
        x, y = build_batch(100 + t % n_batches, dtype=dtype)
        opt.step(build_closure(model, opt, x, y))
    return snapshot(model), opt


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
