"""Optimizers whose second passes follow a rule or a phase are timed at the run's mix of steps.

AE-SAM decides per step and late-phase SAM switches at a fraction of the run, so a short timing
window at the start of a fresh session would see the wrong share of second passes (late-phase
SAM: none). The timing replays the share the trained run measured instead. A fake clock that
only passes advance makes the paired ratios exact.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import nn

import looksam.train.runner as runner
import looksam.train.timing as timing
from looksam.bench.paired import measure_paired_cost
from looksam.optim import create_optimizer, get_optimizer_info
from looksam.train.runner import RunConfig, TrainingSession
from looksam.train.timing import spread_looks

UNIT = 1e-3


@pytest.fixture
def pass_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every forward-backward pass costs UNIT fake seconds; nothing else takes time."""
    clock = {"t": 0.0}
    real_step = TrainingSession.train_step

    def train_step(self: TrainingSession, *args: Any, **kwargs: Any) -> Any:
        before = self.passes
        loss = real_step(self, *args, **kwargs)
        clock["t"] += (self.passes - before) * UNIT
        return loss

    monkeypatch.setattr(TrainingSession, "train_step", train_step)
    monkeypatch.setattr(runner, "now", lambda: clock["t"])
    monkeypatch.setattr(timing, "now", lambda: clock["t"])


@pytest.mark.parametrize(
    ("share", "period", "looks"),
    [(0.0, 16, 0), (1.0, 16, 16), (0.5, 16, 8), (0.125, 16, 2), (0.03, 16, 0), (0.032, 16, 1)],
)
def test_spread_looks_puts_the_rounded_share_in_every_window(
    share: float, period: int, looks: int
) -> None:
    """Any `period` consecutive steps hold round(share × period) second passes (0.5/16 is the
    rounding boundary: 0.03 × 16 = 0.48 rounds down, 0.032 × 16 = 0.512 up)."""
    pick = spread_looks(share, period)
    for start in (0, 3, 17, 40):
        assert sum(pick(t) for t in range(start, start + period)) == looks


def test_spread_looks_spaces_them_evenly() -> None:
    pick = spread_looks(0.25, 8)
    assert [pick(t) for t in range(8)] == [False, False, False, True] * 2


@pytest.mark.parametrize(
    ("optimizer", "share", "expected"),
    [
        ("latesam", 0.5, 1.5),  # a run that spent half its steps in the SAM phase
        ("aesam", 0.25, 1.25),
        ("aelooksam", 0.75, 1.75),
        ("latesam", None, 1.125),  # the registry's expectation: 2 − f with f = 0.875
        ("aesam", None, 1.5),
        ("looksam", 0.9, 1.25),  # a fixed schedule (k = 4) ignores the replay: 1 + 1/k
    ],
)
def test_paired_cost_replays_the_runs_share_of_second_passes(
    pass_clock: None, optimizer: str, share: float | None, expected: float
) -> None:
    hp = {"k": 4} if get_optimizer_info(optimizer).takes_k else {}
    config = RunConfig("digits-noisy", optimizer, hyperparameters=hp, batch_size=32, device="cpu")
    paired = measure_paired_cost(
        config, "sgd", 32, rounds=3, steps_per_round=16, second_pass_share=share
    )
    assert paired.ratio == pytest.approx(expected)
    assert list(paired.same_batch_ratios) == pytest.approx([expected] * 3)  # every round


def test_replay_still_runs_the_rule_and_none_restores_it() -> None:
    """The rule's own decision is still made (its cost is the step's); only its answer is
    replaced, and replay_look_schedule(None) hands the decisions back."""
    torch.manual_seed(0)
    model = nn.Linear(4, 2)
    opt: Any = create_optimizer("aesam", model, total_steps=100)
    x, y = torch.randn(8, 4), torch.randn(8, 2)
    calls: list[int] = []

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = nn.functional.mse_loss(model(x), y)
        loss.backward()
        calls.append(opt.steps_done)
        return loss

    opt.replay_look_schedule(lambda t: t % 2 == 1)
    for _ in range(4):
        opt.step(closure)
    assert calls == [0, 1, 1, 2, 3, 3]  # second passes on the odd steps only
    assert opt.grad_sq_mean > 0  # the rule ran every step and committed its statistics
    opt.replay_look_schedule(None)
    for _ in range(6):
        before, chosen = len(calls), opt.sam_steps
        opt.step(closure)
        assert len(calls) - before == 1 + (opt.sam_steps - chosen)  # its own rule again
