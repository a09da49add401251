"""A look step whose second pass leaves no gradient fails loudly, with w restored.

A framework that runs the closure's backward once per step (the issue saw it under PyTorch
Lightning's automatic optimization) hands the optimizer a second call that computes nothing.
Before, SAM then stepped with no gradient (the weights did not move but the counter did) and
LookSAM failed deep inside a foreach kernel.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import Tensor, nn

from looksam.optim import create_optimizer, list_optimizers

#: Every test here runs on both scalar paths (conftest's ``scalar_path``).
pytestmark = pytest.mark.usefixtures("scalar_path")

#: Every built-in optimizer whose first step takes a second pass on a fixed schedule.
LOOKING = [
    i.name
    for i in list_optimizers()
    if i.wraps_base and i.drop_in and i.fixed_schedule and i.pass_range()[1] > 1
]


def _caching_closure(model: nn.Module, opt: Any, x: Tensor, y: Tensor) -> Callable[[], Tensor]:
    """Backward on the first call only; later calls hand back the cached loss."""
    cache: list[Tensor] = []

    def closure() -> Tensor:
        if not cache:
            opt.zero_grad()
            loss = nn.functional.mse_loss(model(x), y)
            loss.backward()
            cache.append(loss.detach())
        return cache[0]

    return closure


@pytest.mark.parametrize("name", LOOKING)
def test_a_second_pass_without_gradient_raises_and_restores_w(
    name: str, make_mlp: Callable[..., nn.Sequential], make_batch: Callable[..., Any]
) -> None:
    model = make_mlp()
    opt: Any = create_optimizer(name, model, total_steps=10)
    before = [p.detach().clone() for p in model.parameters()]
    x, y = make_batch()
    with pytest.raises(
        RuntimeError, match="second forward-backward pass produced no gradient"
    ) as info:
        opt.step(_caching_closure(model, opt, x, y))
    assert "Lightning" in str(info.value)  # the likely cause, and the recipe
    assert "opt.step(closure=...)" in str(info.value)
    for p, w in zip(model.parameters(), before, strict=True):
        assert torch.equal(p, w)  # w exactly, not w + ε
    assert opt.steps_done == 0
    assert not opt.in_second_pass

    def closure() -> Tensor:  # a proper closure afterwards takes the step
        opt.zero_grad()
        loss = nn.functional.mse_loss(model(x), y)
        loss.backward()
        return loss

    opt.step(closure)
    assert opt.steps_done == 1
    assert any(not torch.equal(p, w) for p, w in zip(model.parameters(), before, strict=True))


def test_a_partial_second_gradient_is_still_accepted(
    make_mlp: Callable[..., nn.Sequential], make_batch: Callable[..., Any]
) -> None:
    """Only a pass that left *every* gradient empty is refused (a parameter unused at w + ε is
    the optimizers' own documented case)."""
    model = make_mlp()
    opt: Any = create_optimizer("looksam", model)
    x, y = make_batch()
    calls = 0

    def closure() -> Tensor:
        nonlocal calls
        calls += 1
        opt.zero_grad()
        loss = nn.functional.mse_loss(model(x), y)
        loss.backward()
        if calls == 2:
            model[0].bias.grad = None  # one parameter without g_s
        return loss

    opt.step(closure)
    assert opt.steps_done == 1


@pytest.mark.parametrize("name", LOOKING)
def test_a_look_step_with_no_gradient_at_all_raises_the_clear_error(
    name: str, make_mlp: Callable[..., nn.Sequential]
) -> None:
    """The boundary below the one above: not even the first pass left a gradient (no bucket)."""
    model = make_mlp()
    opt: Any = create_optimizer(name, model, total_steps=10)
    with pytest.raises(RuntimeError, match="second forward-backward pass produced no gradient"):
        opt.step(lambda: None)
    assert opt.steps_done == 0
    assert not opt.in_second_pass
