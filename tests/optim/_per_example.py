"""What the ESAM and K-SAM reference tests share: a labelled float64 batch per step, the
BatchClosure contract over the conftest MLP, that MLP's per-example losses written out, and a
plain-sort choice of the largest scores (the reference's, independent of ``largest``)."""

from __future__ import annotations

import math
from typing import Any

import torch
from _models import OUT_FEATURES, build_batch
from torch import Tensor, nn

from looksam.optim._contract import BatchClosure

N = 16  # examples per batch

#: The library against the reference, float64.
TOL: dict[str, Any] = {"rtol": 0.0, "atol": 1e-12}

Calls = list[tuple[Tensor | None, bool]]


def labelled_batch(t: int) -> tuple[Tensor, Tensor]:
    """Step t's batch: N float64 inputs and N class labels, independent of the global RNG."""
    x, _ = build_batch(100 + t, n=N)
    y = torch.randint(OUT_FEATURES, (N,), generator=torch.Generator().manual_seed(200 + t))
    return x, y


def batch_closure(
    model: nn.Module, opt: Any, x: Tensor, y: Tensor, calls: Calls | None = None
) -> BatchClosure:
    """The BatchClosure contract: run ``subset`` as a batch of its own, back-propagate its mean
    loss (after zeroing the gradients) or run forward only, return the detached per-example
    losses. Each call's (subset, backward) is appended to ``calls`` when given."""

    def closure(subset: Tensor | None = None, *, backward: bool = True) -> Tensor:
        if calls is not None:
            calls.append((subset, backward))
        xs, ys = (x, y) if subset is None else (x[subset], y[subset])
        if not backward:
            with torch.no_grad():
                return nn.functional.cross_entropy(model(xs), ys, reduction="none")
        opt.zero_grad()
        losses = nn.functional.cross_entropy(model(xs), ys, reduction="none")
        losses.mean().backward()
        return losses.detach()

    return closure


def mlp_losses(weights: list[Tensor], x: Tensor, y: Tensor) -> Tensor:
    """The conftest MLP written out, ℓ_i = CE(tanh(x W1ᵀ + b1) W2ᵀ + b2, y_i), one per example."""
    w1, b1, w2, b2 = weights
    return nn.functional.cross_entropy(torch.tanh(x @ w1.T + b1) @ w2.T + b2, y, reduction="none")


def top_share(scores: Tensor, share: float) -> Tensor:
    """The ⌊share·n + ½⌋ (≥ 1) largest scores' positions, by a plain descending sort; the choice
    must not hang on rounding (a clear gap below the last one chosen)."""
    n = len(scores)
    count = max(1, math.floor(share * n + 0.5))
    order = torch.sort(scores, descending=True).indices
    if count < n:
        ranked = scores[order]
        assert (ranked[count - 1] - ranked[count]).item() > 1e-9, "a near tie at the boundary"
    return order[:count]
