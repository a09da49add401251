"""ESAM and K-SAM under fp16's GradScaler recipe, as the runner drives them: the closure scales
each backward, ``unscale`` runs before ε is formed from g, ``base_step`` lets the scaler unscale
g_s and skip an overflowed step. The per-example losses the methods rank are never scaled."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
from _models import F32, F32_CLOSE, SCALE, build_mlp, snapshot
from _per_example import batch_closure, labelled_batch
from torch import Tensor, nn
from torch.testing import assert_close

from looksam.optim import ESAM, KSAM, get_optimizer_info

STEPS = 6
METHODS: dict[str, Callable[[torch.optim.Optimizer], Any]] = {
    "esam": lambda base: ESAM(base, rho=0.2, beta=0.5, gamma=0.5, seed=7),
    "ksam": lambda base: KSAM(base, rho=0.2, fraction=0.5),
}


def _scaled_step(
    model: nn.Module,
    opt: Any,
    scaler: torch.amp.GradScaler,
    x: Tensor,
    y: Tensor,
    factor: float = 1.0,
) -> None:
    """The runner's fp16 path with a BatchClosure (``factor`` multiplies the loss)."""

    def closure(subset: Tensor | None = None, *, backward: bool = True) -> Tensor:
        xs, ys = (x, y) if subset is None else (x[subset], y[subset])
        if not backward:
            with torch.no_grad():
                return nn.functional.cross_entropy(model(xs), ys, reduction="none")
        opt.zero_grad()
        losses = factor * nn.functional.cross_entropy(model(xs), ys, reduction="none")
        scaler.scale(losses.mean()).backward()
        return losses.detach()

    opt.step(
        closure, base_step=lambda: scaler.step(opt.base), unscale=lambda: scaler.unscale_(opt)
    )
    scaler.update()


def _batch(t: int) -> tuple[Tensor, Tensor]:
    x, y = labelled_batch(t)
    return x.to(F32), y


@pytest.mark.parametrize("name", METHODS)
def test_scaled_steps_match_unscaled_ones(name: str) -> None:
    """A power-of-two scale changes no ranking and no update: the same weights as without it."""
    assert get_optimizer_info(name).grad_scaler  # the registry lets fp16 runs use it
    scaled_model, plain_model = build_mlp(dtype=F32), build_mlp(dtype=F32)
    make = METHODS[name]
    scaled = make(torch.optim.SGD(scaled_model.parameters(), lr=0.1, momentum=0.9))
    plain = make(torch.optim.SGD(plain_model.parameters(), lr=0.1, momentum=0.9))
    scaler = torch.amp.GradScaler("cpu", init_scale=SCALE)
    for t in range(STEPS):
        x, y = _batch(t)
        _scaled_step(scaled_model, scaled, scaler, x, y)
        plain.step(batch_closure(plain_model, plain, x, y))
    assert scaler.get_scale() == SCALE  # never backed off
    assert scaled.steps_done == plain.steps_done == STEPS
    assert not scaled.in_second_pass
    assert_close(list(scaled_model.parameters()), list(plain_model.parameters()), **F32_CLOSE)


@pytest.mark.parametrize("name", METHODS)
def test_an_overflowed_gradient_skips_the_step_and_restores_w(name: str) -> None:
    """A scale of 3e38 on a loss 1e6 times as large overflows the first backward (cross-entropy's
    gradients are bounded, so the factor is needed): no update, w restored, the scale backs off."""
    model = build_mlp(dtype=F32)
    opt = METHODS[name](torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9))
    scaler = torch.amp.GradScaler("cpu", init_scale=3e38)
    before = snapshot(model)
    x, y = _batch(0)
    _scaled_step(model, opt, scaler, x, y, factor=1e6)
    assert_close(list(model.parameters()), before, rtol=0, atol=0)
    assert len(opt.base.state) == 0  # the base never stepped
    assert not opt.in_second_pass
    assert scaler.get_scale() < 3e38
