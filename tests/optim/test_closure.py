"""The closure contract and the two-phase API.

``step(closure)`` calls the closure twice on look steps and once otherwise, returns the first
call's loss, and refuses to run a look step without a closure. ``first_step``/``second_step``
(the API GradScaler and manual loops use) reproduce ``step(closure)`` exactly.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import Tensor, nn

from looksam import SAM, LayerLookSAM, LookSAM, SAMk

#: Every test here runs on both scalar paths (conftest's ``scalar_path``).
pytestmark = pytest.mark.usefixtures("scalar_path")

Wrap = Callable[[torch.optim.Optimizer], Any]

# name → (factory, expected closure calls for steps 0..5)
SCHEDULES: dict[str, tuple[Wrap, list[int]]] = {
    "sam": (lambda b: SAM(b, rho=0.05), [2, 2, 2, 2, 2, 2]),
    "asam": (lambda b: SAM(b, rho=0.5, adaptive=True), [2, 2, 2, 2, 2, 2]),
    "samk": (lambda b: SAMk(b, rho=0.05, k=3), [2, 1, 1, 2, 1, 1]),
    "looksam": (lambda b: LookSAM(b, rho=0.05, k=3), [2, 1, 1, 2, 1, 1]),
    "layerlooksam": (lambda b: LayerLookSAM(b, rho=0.05, k=3), [2, 1, 1, 2, 1, 1]),
}


def _setup(
    wrap: Wrap, make_mlp: Callable[..., Any], make_batch: Callable[..., Any]
) -> tuple[Any, Any, Tensor, Tensor]:
    model = make_mlp()
    opt = wrap(torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9))
    x, y = make_batch()
    return model, opt, x, y


@pytest.mark.parametrize("name", SCHEDULES)
def test_closure_calls_per_step_and_returned_loss(
    name: str,
    make_mlp: Callable[..., Any],
    make_batch: Callable[..., Any],
    make_closure: Callable[..., Any],
) -> None:
    """Two closure calls on look steps, one on the others; ``step`` returns the first loss
    (the loss at w, not at w + ε); ``is_look_step`` and ``steps_done`` follow t % k."""
    wrap, expected_calls = SCHEDULES[name]
    model, opt, x, y = _setup(wrap, make_mlp, make_batch)
    record: list[Tensor] = []
    closure = make_closure(model, opt, x, y, record)

    calls = []
    for t, expected in enumerate(expected_calls):
        assert opt.steps_done == t
        assert opt.is_look_step == (expected == 2)
        record.clear()
        loss = opt.step(closure)
        calls.append(len(record))
        assert loss is record[0]
        if len(record) == 2:
            assert record[1].item() != record[0].item()  # the second pass really is elsewhere
    assert calls == expected_calls
    assert opt.steps_done == len(expected_calls)


@pytest.mark.parametrize("name", SCHEDULES)
def test_step_without_closure_on_look_step_raises(
    name: str,
    make_mlp: Callable[..., Any],
    make_batch: Callable[..., Any],
    make_closure: Callable[..., Any],
) -> None:
    """A look step needs two gradients: ``step()`` alone is a RuntimeError naming the closure,
    and it changes nothing."""
    model, opt, x, y = _setup(SCHEDULES[name][0], make_mlp, make_batch)
    make_closure(model, opt, x, y)()  # gradients exist, but only g
    before = [p.detach().clone() for p in model.parameters()]
    with pytest.raises(RuntimeError, match="closure"):
        opt.step()
    assert opt.steps_done == 0
    assert not opt.in_second_pass
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))


@pytest.mark.parametrize("name", ["samk", "looksam", "layerlooksam"])
def test_plain_step_accepts_manual_backward_then_step(
    name: str,
    make_mlp: Callable[..., Any],
    make_batch: Callable[..., Any],
    make_closure: Callable[..., Any],
) -> None:
    """On a plain step, backward followed by ``step()`` (no closure) is a complete step."""
    model, opt, x, y = _setup(SCHEDULES[name][0], make_mlp, make_batch)
    closure = make_closure(model, opt, x, y)
    opt.step(closure)
    assert not opt.is_look_step
    closure()
    before = [p.detach().clone() for p in model.parameters()]
    assert opt.step() is None
    assert opt.steps_done == 2
    assert not all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))


def test_first_step_on_plain_step_raises(
    make_mlp: Callable[..., Any], make_batch: Callable[..., Any], make_closure: Callable[..., Any]
) -> None:
    """``first_step()`` is only meaningful on look steps."""
    model, opt, x, y = _setup(SCHEDULES["looksam"][0], make_mlp, make_batch)
    closure = make_closure(model, opt, x, y)
    opt.step(closure)
    closure()
    with pytest.raises(RuntimeError, match="not a look step"):
        opt.first_step()
    assert not opt.in_second_pass


def test_second_step_on_look_step_without_first_step_raises(
    make_mlp: Callable[..., Any], make_batch: Callable[..., Any], make_closure: Callable[..., Any]
) -> None:
    """Skipping ``first_step()`` on a look step is an error, not a silent plain step."""
    model, opt, x, y = _setup(SCHEDULES["sam"][0], make_mlp, make_batch)
    make_closure(model, opt, x, y)()
    with pytest.raises(RuntimeError, match="first_step"):
        opt.second_step()
    assert opt.steps_done == 0


@pytest.mark.parametrize("name", SCHEDULES)
def test_two_phase_api_matches_step_closure(
    name: str,
    make_mlp: Callable[..., Any],
    make_batch: Callable[..., Any],
    make_closure: Callable[..., Any],
) -> None:
    """backward → first_step → backward → second_step (look steps) and backward → second_step
    (plain steps) give bit-identical weights to ``step(closure)`` over six steps; the weights are
    perturbed exactly while ``in_second_pass`` is True."""
    wrap = SCHEDULES[name][0]
    closure_model, closure_opt, x, y = _setup(wrap, make_mlp, make_batch)
    manual_model, manual_opt, _, _ = _setup(wrap, make_mlp, make_batch)
    by_closure = make_closure(closure_model, closure_opt, x, y)
    manual = make_closure(manual_model, manual_opt, x, y)

    for _ in range(6):
        by_closure_loss = closure_opt.step(by_closure)
        manual_loss = manual()
        assert not manual_opt.in_second_pass
        if manual_opt.is_look_step:
            at_w = [p.detach().clone() for p in manual_model.parameters()]
            manual_opt.first_step()
            assert manual_opt.in_second_pass
            assert all(p.grad is None for p in manual_model.parameters())
            assert not all(
                torch.equal(a, b) for a, b in zip(at_w, manual_model.parameters(), strict=True)
            )
            manual()
            manual_opt.second_step()
        else:
            manual_opt.second_step()
        assert not manual_opt.in_second_pass
        assert torch.equal(manual_loss, by_closure_loss)
        for a, b in zip(manual_model.parameters(), closure_model.parameters(), strict=True):
            assert torch.equal(a, b)
    assert manual_opt.steps_done == closure_opt.steps_done == 6


def test_look_step_restores_weights_exactly(
    make_mlp: Callable[..., Any], make_batch: Callable[..., Any], make_closure: Callable[..., Any]
) -> None:
    """With lr = 0 the base step is a no-op, so after a look step w must be bit-identical to
    before (restored, not recomputed as (w + ε) − ε)."""
    model = make_mlp()
    opt = LookSAM(torch.optim.SGD(model.parameters(), lr=0.0), rho=0.3, k=2)
    x, y = make_batch()
    before = [p.detach().clone() for p in model.parameters()]
    opt.step(make_closure(model, opt, x, y))
    for a, b in zip(before, model.parameters(), strict=True):
        assert torch.equal(a, b)


class SecondPassError(Exception):
    pass


@pytest.mark.parametrize("name", SCHEDULES)
def test_failing_second_pass_leaves_weights_at_w(
    name: str, make_mlp: Callable[..., Any], make_batch: Callable[..., Any]
) -> None:
    """If the closure raises during the perturbed pass (OOM, Ctrl-C), ``step`` re-raises with the
    weights restored bit-for-bit, no step taken, and the optimizer no longer mid-step."""
    model, opt, x, y = _setup(SCHEDULES[name][0], make_mlp, make_batch)
    before = [p.detach().clone() for p in model.parameters()]

    def closure() -> Tensor:
        opt.zero_grad()
        if opt.in_second_pass:
            raise SecondPassError
        loss = nn.functional.mse_loss(model(x), y)
        loss.backward()
        return loss

    with pytest.raises(SecondPassError):
        opt.step(closure)
    assert not opt.in_second_pass
    assert opt.steps_done == 0
    assert len(opt.base.state) == 0
    for a, b in zip(before, model.parameters(), strict=True):
        assert torch.equal(a, b)


def test_abandon_look_step_restores_weights(
    make_mlp: Callable[..., Any], make_batch: Callable[..., Any], make_closure: Callable[..., Any]
) -> None:
    """In a hand-written loop, ``abandon_look_step()`` undoes ``first_step()`` exactly."""
    model, opt, x, y = _setup(SCHEDULES["looksam"][0], make_mlp, make_batch)
    make_closure(model, opt, x, y)()
    before = [p.detach().clone() for p in model.parameters()]
    opt.first_step()
    assert not all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
    opt.abandon_look_step()
    assert not opt.in_second_pass
    assert opt.steps_done == 0
    for a, b in zip(before, model.parameters(), strict=True):
        assert torch.equal(a, b)
