"""When a run counts as diverged: a non-finite loss, or an epoch's mean loss far above chance.

A learning rate far too large can leave every loss finite while the model sits at chance
accuracy; without the second rule such a run ended "ok" and its trial COMPLETE.
"""

from __future__ import annotations

import math

import pytest
from torch import Tensor

from looksam.train.runner import (
    CHANCE_FACTOR,
    CHANCE_MIN_EPOCHS,
    DIVERGENCE_LOSS_FACTOR,
    EpochRecord,
    RunConfig,
    divergence,
    run_training,
    stuck_at_chance,
)
from looksam.train.workloads.digits import DigitsNoisy

LIMIT_10 = DIVERGENCE_LOSS_FACTOR * math.log(10)  # digits: ten classes


def digits_sgd(**overrides: object) -> RunConfig:
    fields: dict[str, object] = {"epochs": 3, "device": "cpu", "timing_warmup_steps": 2}
    fields.update(overrides)
    return RunConfig("digits-noisy", "sgd", **fields)  # type: ignore[arg-type]


def test_the_limit_itself_is_not_divergence_and_the_next_float_is() -> None:
    assert DIVERGENCE_LOSS_FACTOR == 10.0
    assert divergence(LIMIT_10, 10, epoch_end=True) is None
    above = divergence(math.nextafter(LIMIT_10, math.inf), 10, epoch_end=True)
    assert above is not None
    assert above.startswith("exploding training loss")
    assert "10 × ln(10 classes) = 23.03" in above
    assert divergence(math.log(10), 10, epoch_end=True) is None  # a uniform guess: fine


def test_the_limit_scales_with_the_number_of_classes() -> None:
    loss = 30.0  # above 10 × ln 10 = 23.0, below 10 × ln 1000 = 69.1
    assert divergence(loss, 10, epoch_end=True) is not None
    assert divergence(loss, 1000, epoch_end=True) is None
    assert divergence(math.nextafter(10 * math.log(1000), math.inf), 1000, epoch_end=True)


def test_a_partial_epoch_is_judged_only_for_non_finite_losses() -> None:
    assert divergence(1e6, 10, epoch_end=False) is None  # an epoch's mean, not a spike
    for bad in (math.nan, math.inf, -math.inf):
        for epoch_end in (False, True):
            assert divergence(bad, 10, epoch_end=epoch_end) == "non-finite training loss"


def test_sgd_at_learning_rate_37_ends_diverged_at_chance_instead_of_ok() -> None:
    """The issue's trial: every loss stays finite, the first epoch's mean is ~15,000."""
    result = run_training(digits_sgd(lr=37.0))
    per_epoch = DigitsNoisy().steps_per_epoch(64)
    assert result.status == "diverged"
    assert result.message.startswith("exploding training loss: epoch mean ")
    assert result.message.endswith(f"by step {per_epoch}")
    assert result.steps == per_epoch  # stopped at the first epoch's end
    assert result.final_accuracy is None
    assert result.history == ()  # the diverged epoch is not recorded, as for NaN


def test_a_normal_run_stays_well_below_the_limit() -> None:
    result = run_training(digits_sgd(epochs=2))
    assert result.status == "ok"
    assert result.message == ""
    assert len(result.history) == 2
    assert all(h.train_loss < LIMIT_10 / 5 for h in result.history)
    assert result.final_accuracy is not None


class _ConstantLoss(DigitsNoisy):
    """Every training loss equals ``value`` (and has zero gradient): a scripted epoch mean."""

    def __init__(self, value: float) -> None:
        super().__init__()
        self.value = value

    def loss(self, logits: Tensor, targets: Tensor) -> Tensor:
        return super().loss(logits, targets) * 0.0 + self.value


class _ConstantLossOf1000Classes(_ConstantLoss):
    num_classes = 1000  # only the rule reads it: the limit becomes 10 × ln 1000 = 69.1


@pytest.mark.parametrize(
    ("value", "workload", "status"),
    [
        (2.0 * LIMIT_10, _ConstantLoss, "diverged"),
        (0.5 * LIMIT_10, _ConstantLoss, "ok"),
        (30.0, _ConstantLoss, "diverged"),
        (30.0, _ConstantLossOf1000Classes, "ok"),  # the runner asks the workload
    ],
)
def test_the_runner_applies_the_rule_to_each_epochs_mean(
    value: float, workload: type[_ConstantLoss], status: str
) -> None:
    result = run_training(digits_sgd(epochs=2), workload=workload(value))
    if status == "diverged":
        assert result.status == "diverged"
        assert result.steps == DigitsNoisy().steps_per_epoch(64)
        assert f"ln({workload.num_classes} classes)" in result.message
    else:  # no explosion: both epochs run (a zero gradient then leaves it stuck at chance)
        assert "exploding" not in result.message
        assert [h.train_loss for h in result.history] == pytest.approx([value, value])


def _epochs(*pairs: tuple[float, float | None]) -> list[EpochRecord]:
    return [
        EpochRecord(epoch=i + 1, step=10 * (i + 1), train_loss=loss, test_accuracy=acc,
                    train_seconds=float(i + 1))
        for i, (loss, acc) in enumerate(pairs)
    ]  # fmt: skip


def test_stuck_at_chance_limits_are_inclusive_and_need_two_epochs() -> None:
    ln10 = math.log(10)
    assert stuck_at_chance(_epochs((3.0, 0.1), (ln10, CHANCE_FACTOR / 10)), 10) is not None
    above = math.nextafter(CHANCE_FACTOR / 10, 1.0)
    assert stuck_at_chance(_epochs((3.0, 0.1), (ln10, above)), 10) is None  # it learned a bit
    below = math.nextafter(ln10, 0.0)
    assert stuck_at_chance(_epochs((3.0, 0.1), (below, 0.1)), 10) is None  # loss improved
    assert stuck_at_chance(_epochs((ln10, 0.1)), 10) is None  # one epoch is too early to say
    assert stuck_at_chance(_epochs((3.0, None), (3.0, None)), 10) is None  # no accuracy
    assert CHANCE_MIN_EPOCHS == 2


def test_a_learning_rate_that_kills_the_network_ends_diverged_not_ok() -> None:
    dead = run_training(RunConfig("digits-noisy", "sgd", lr=7.0, epochs=3, device="cpu"))
    assert dead.status == "diverged"
    assert dead.message.startswith("stuck at chance")
    assert dead.final_accuracy is None
