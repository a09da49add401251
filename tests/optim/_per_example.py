"""What the ESAM and K-SAM reference tests share: a labelled float64 batch per step, the
BatchClosure contract over the conftest MLP, that MLP's per-example losses written out, and a
plain-sort choice of the largest scores (the reference's, independent of ``largest``)."""

from __future__ import annotations

import math
from typing import Any

import torch
from _models import OUT_FEATURES, build_batch, build_mlp, make_base
from torch import Tensor, nn
from torch.testing import assert_close

from looksam.optim import SAM
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


#: (fraction, n, the ⌊fraction·n + ½⌋ ≥ 1 examples a subset pass gets): the rounding boundaries.
SUBSET_SIZES = [
    (0.25, 10, 3),  # 2.5 + ½ = 3 exactly: the boundary rounds up
    (0.24, 10, 2),  # 2.4 + ½ = 2.9
    (0.26, 10, 3),
    (0.5, 16, 8),
    (0.5, 15, 8),  # 7.5 + ½ = 8
    (1.0, 7, 7),
    (0.05, 10, 1),  # 0.5 + ½ = 1
    (0.04, 10, 1),  # 0.4 + ½ < 1: at least one
    (1e-9, 1000, 1),
    (1e-9, 1, 1),
]


def assert_steps_like_sam(
    build: Any, base_name: str, rho: float, whole_call: int, steps: int
) -> None:
    """``build(base)`` with every example in every pass takes SAM's step: call ``whole_call``
    of each step runs the whole batch, and loss and weights match SAM's to 1e-12 (the passes
    run the batch in topk's order, so a mean's summation order may differ: not bit for bit)."""
    model, sam_model = build_mlp(), build_mlp()
    opt = build(make_base(base_name, model.parameters()))
    sam = SAM(make_base(base_name, sam_model.parameters()), rho=rho)
    for t in range(steps):
        x, y = labelled_batch(t)
        calls: Calls = []
        loss = opt.step(batch_closure(model, opt, x, y, calls))

        def closure(x: Tensor = x, y: Tensor = y) -> Tensor:
            sam.zero_grad()
            sam_loss = nn.functional.cross_entropy(sam_model(x), y)
            sam_loss.backward()
            return sam_loss.detach()

        sam_loss = sam.step(closure)
        subset = calls[whole_call][0]
        assert subset is not None
        assert sorted(subset.tolist()) == list(range(N))
        assert_close(loss, sam_loss, **TOL)
        assert_close(list(model.parameters()), list(sam_model.parameters()), **TOL)
