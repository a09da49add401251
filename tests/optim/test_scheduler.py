"""LR schedulers attach to the wrapper and drive the base optimizer through the shared groups."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch.optim.lr_scheduler import LambdaLR, StepLR
from torch.testing import assert_close

from looksam import LookSAM, SAMk

#: Every test here runs on both scalar paths (conftest's ``scalar_path``).
pytestmark = pytest.mark.usefixtures("scalar_path")


def test_wrapper_shares_param_groups_with_base(make_mlp: Callable[..., Any]) -> None:
    """Not a copy: the very list object, so later changes on either side are seen by both."""
    model = make_mlp()
    base = torch.optim.SGD(model.parameters(), lr=0.1)
    opt = LookSAM(base, rho=0.05, k=3)
    assert opt.param_groups is base.param_groups
    extra = torch.nn.Parameter(torch.zeros(2, dtype=torch.float64))
    opt.add_param_group({"params": [extra], "lr": 0.5})
    assert base.param_groups[-1]["params"] == [extra]
    assert base.param_groups[-1]["lr"] == 0.5


def test_lambda_lr_drives_the_base(
    make_mlp: Callable[..., Any], make_batch: Callable[..., Any], make_closure: Callable[..., Any]
) -> None:
    """LambdaLR on the wrapper halves both groups' lr each step; the trajectory equals a run
    where the base's lr is set by hand to the same values; no scheduler-order warning."""
    lrs = (0.1, 0.04)

    def groups(model: torch.nn.Module) -> list[dict[str, Any]]:
        return [
            {"params": model[0].parameters(), "lr": lrs[0]},
            {"params": model[2].parameters(), "lr": lrs[1]},
        ]

    x, y = make_batch()
    scheduled_model, manual_model = make_mlp(), make_mlp()
    scheduled = LookSAM(torch.optim.SGD(groups(scheduled_model), lr=0.1), rho=0.05, k=2)
    manual = LookSAM(torch.optim.SGD(groups(manual_model), lr=0.1), rho=0.05, k=2)
    scheduler = LambdaLR(scheduled, lambda epoch: 0.5**epoch)
    assert all("initial_lr" in g for g in scheduled.base.param_groups)

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # e.g. "lr_scheduler.step() before optimizer.step()"
        for t in range(5):
            for group, lr in zip(manual.base.param_groups, lrs, strict=True):
                group["lr"] = lr * 0.5**t
            assert [g["lr"] for g in scheduled.base.param_groups] == pytest.approx(
                [g["lr"] for g in manual.base.param_groups], rel=1e-15
            )
            scheduled.step(make_closure(scheduled_model, scheduled, x, y))
            manual.step(make_closure(manual_model, manual, x, y))
            scheduler.step()

    assert scheduled.base.param_groups[0]["lr"] == pytest.approx(0.1 * 0.5**5)
    assert scheduler.get_last_lr() == pytest.approx([lr * 0.5**5 for lr in lrs])
    assert_close(
        list(scheduled_model.parameters()), list(manual_model.parameters()), rtol=0, atol=0
    )


def test_step_lr_scales_the_update(
    make_mlp: Callable[..., Any], make_batch: Callable[..., Any], make_closure: Callable[..., Any]
) -> None:
    """StepLR(step_size=2, γ=0.1) on the wrapper: on plain SGD steps Δw = −lr·g with the
    scheduled lr (0.1, then 0.01 from step 2, 0.001 from step 4)."""
    model = make_mlp()
    opt = SAMk(torch.optim.SGD(model.parameters(), lr=0.1), rho=0.05, k=100)  # look at t=0 only
    scheduler = StepLR(opt, step_size=2, gamma=0.1)
    x, y = make_batch()
    closure = make_closure(model, opt, x, y)
    expected_lrs = [0.1, 0.1, 0.01, 0.01, 0.001, 0.001]

    for t, lr in enumerate(expected_lrs):
        assert opt.base.param_groups[0]["lr"] == pytest.approx(lr)
        if t > 0:  # plain step: capture g, then check the base applied exactly lr·g
            closure()
            g = [p.grad.clone() for p in model.parameters()]
            before = [p.detach().clone() for p in model.parameters()]
            opt.step()
            for p, w, gi in zip(model.parameters(), before, g, strict=True):
                assert_close(w - p.detach(), lr * gi, rtol=1e-12, atol=1e-15)
        else:
            opt.step(closure)
        scheduler.step()
