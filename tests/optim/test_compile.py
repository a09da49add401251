"""``torch.compile(model)`` trains like eager with every SAM-family optimizer, with no recompile.

A look step points ``param.data`` at w + ε for the second pass and back afterwards, and toggles
BatchNorm's ``track_running_stats`` (``frozen_bn_stats``). Compiled graphs take the parameters as
inputs, so neither may cost a recompile per step: after one plain and one look step have been
compiled, ``torch._dynamo.config.error_on_recompile`` turns any further compile into an error.
Inductor runs on the CPU here (its C++ backend), one model compiled once for every optimizer:
its weights are reset in place between optimizers, which changes no guard.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import torch
import torch._dynamo
from torch import Tensor, nn

from looksam.optim import create_optimizer, get_optimizer_info, list_optimizers
from looksam.optim._base import SharpnessAwareOptimizer
from looksam.optim.bn import frozen_bn_stats

#: The wrappers a plain closure drives (the contract's methods have tests of their own).
SAM_FAMILY = [info.name for info in list_optimizers() if info.wraps_base and info.drop_in]
WARMUP_STEPS = 2  # k = 2: one look step (t = 0) and one plain step, both compiled
STEPS = 6
#: Inductor may fuse and reorder float32 arithmetic: the trajectories agree to rounding.
RTOL, ATOL = 1e-4, 1e-6


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 16), nn.BatchNorm1d(16), nn.Tanh(), nn.Linear(16, 3))


@pytest.fixture(scope="module")
def nets() -> Iterator[tuple[nn.Module, Callable[..., Tensor], dict[str, Tensor]]]:
    """One module, its compiled form (inductor) and its initial state, shared by every test."""
    torch._dynamo.reset()
    net = _net()
    initial = {k: v.clone() for k, v in net.state_dict().items()}
    yield net, torch.compile(net), initial
    torch._dynamo.reset()


def _batch(step: int) -> tuple[Tensor, Tensor]:
    generator = torch.Generator().manual_seed(100 + step)
    return torch.randn(32, 6, generator=generator), torch.randint(0, 3, (32,), generator=generator)


def _train(
    net: nn.Module,
    forward: Callable[..., Tensor],
    initial: dict[str, Tensor],
    name: str,
    no_recompile_after: int | None = None,
) -> tuple[list[float], list[Tensor]]:
    """Reset ``net`` in place, train STEPS steps through ``forward``; losses and final weights."""
    with torch.no_grad():
        for key, value in net.state_dict().items():
            value.copy_(initial[key])
    info = get_optimizer_info(name)
    hp: dict[str, Any] = {"k": 2} if info.takes_k else {}
    torch.manual_seed(0)  # the random methods (RWP, G-RST) seed their own generators from it
    opt = create_optimizer(name, net, base="sgd", total_steps=STEPS, lr=0.05, **hp)
    assert isinstance(opt, SharpnessAwareOptimizer)
    if not info.fixed_schedule:
        opt.replay_look_schedule(lambda t: t % 2 == 0)
    losses = []
    for step in range(STEPS):
        x, y = _batch(step)

        def closure(x: Tensor = x, y: Tensor = y) -> Tensor:
            opt.zero_grad()
            with frozen_bn_stats(net, enabled=opt.in_second_pass):
                loss = nn.functional.cross_entropy(forward(x), y)
            loss.backward()
            return loss.detach()

        strict = no_recompile_after is not None and step >= no_recompile_after
        guard = torch._dynamo.config.patch(error_on_recompile=True) if strict else None
        with guard or contextlib.nullcontext():
            losses.append(float(opt.step(closure)))
    return losses, [p.detach().clone() for p in net.parameters()]


@pytest.mark.parametrize("name", SAM_FAMILY)
def test_compiled_model_follows_the_eager_trajectory_without_recompiling(
    name: str, nets: tuple[nn.Module, Callable[..., Tensor], dict[str, Tensor]]
) -> None:
    net, compiled, initial = nets
    eager_losses, eager_weights = _train(net, net, initial, name)
    losses, weights = _train(net, compiled, initial, name, no_recompile_after=WARMUP_STEPS)
    torch.testing.assert_close(losses, eager_losses, rtol=RTOL, atol=ATOL)
    torch.testing.assert_close(weights, eager_weights, rtol=RTOL, atol=ATOL)
    assert not torch.equal(eager_weights[0], initial["0.weight"])  # it trained


def test_a_recompile_is_caught(
    nets: tuple[nn.Module, Callable[..., Tensor], dict[str, Tensor]],
) -> None:
    """The guard above can fail: a new input shape after warm-up is a recompile, and raises."""
    _, compiled, _ = nets
    compiled(torch.randn(32, 6))
    with (
        torch._dynamo.config.patch(error_on_recompile=True),
        pytest.raises(torch._dynamo.exc.RecompileError),
    ):
        compiled(torch.randn(16, 6))
