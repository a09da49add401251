"""Gradient accumulation: a batch run as micro-batches inside the closure trains as the batch.

Every pass of every SAM-family entry (g, g_s, any reuse, a subset's pass) must see the whole
batch's gradient, and ESAM and K-SAM must pick their examples across the whole batch, so N
micro-batches must give the weights one batch gives, in float64 up to summation order.
"""

from __future__ import annotations

import pytest
import torch
from typer.testing import CliRunner

from looksam.cli.app import app
from looksam.optim import get_optimizer_info, list_optimizers
from looksam.train.runner import RunConfig, TrainingSession, validate_config
from looksam.train.workloads._base import Batch
from looksam.train.workloads.digits import DigitsNoisy

SAM_FAMILY = [info.name for info in list_optimizers() if info.wraps_base]
BATCH = 60
STEPS = 4  # with k = 2: look, reuse, look, reuse


class Digits64(DigitsNoisy):
    """digits-noisy in float64: an MLP without BatchNorm, so micro-batches' statistics cannot
    differ, and a batch-mean loss."""

    def load_tensors(self) -> tuple[Batch, Batch]:
        (x_tr, y_tr), (x_te, y_te) = super().load_tensors()
        return (x_tr.double(), y_tr), (x_te.double(), y_te)

    def build_model(self) -> torch.nn.Module:
        return super().build_model().double()


def _trained(optimizer: str, micro_batches: int) -> tuple[list[torch.Tensor], list[float], float]:
    """Weights, per-step losses and passes after STEPS steps on one fixed batch; the loss-term
    methods start their term at once (start_epoch 0), SAF with a one-epoch-old bank."""
    info = get_optimizer_info(optimizer)
    names = {hp.name for hp in info.hyperparameters}
    hp = {"k": 2} if info.takes_k else {}
    hp.update({"start_epoch": 0} if "start_epoch" in names else {})
    config = RunConfig(
        workload="digits-noisy", optimizer=optimizer, hyperparameters=hp, batch_size=BATCH,
        seed=0, device="cpu", micro_batches=micro_batches,
    )  # fmt: skip
    session = TrainingSession(config, workload=Digits64())
    batch = next(session.batches())
    losses = [float(session.train_step(*batch)) for _ in range(STEPS)]
    weights = [p.detach().clone() for p in session.model.parameters()]
    return weights, losses, session.passes


@pytest.mark.parametrize("optimizer", SAM_FAMILY)
@pytest.mark.parametrize("micro_batches", [3, 7])  # 60 = 3 × 20; 7 splits it unevenly (9 + 8…)
def test_micro_batches_train_as_the_whole_batch(optimizer: str, micro_batches: int) -> None:
    whole, whole_losses, whole_passes = _trained(optimizer, 1)
    split, split_losses, split_passes = _trained(optimizer, micro_batches)
    assert split_passes == whole_passes  # a pass is a pass, however many micro-batches
    assert split_losses == pytest.approx(whole_losses, rel=1e-12)  # the batch's mean loss
    for a, b in zip(whole, split, strict=True):
        torch.testing.assert_close(b, a, rtol=0, atol=1e-12)


def test_a_mean_of_unequal_micro_batches_is_weighted_by_their_sizes() -> None:
    """The boundary the weights guard: 7 micro-batches of 60 are 9, 9, 9, 9, 8, 8, 8 examples.
    An unweighted mean of their losses would differ from the batch's mean loss."""
    x = torch.randn(BATCH, 3, generator=torch.Generator().manual_seed(0))
    sizes = [len(c) for c in x.tensor_split(7)]
    assert sizes == [9, 9, 9, 9, 8, 8, 8]
    values = x.pow(2).sum(1)
    weighted = sum(c.mean() * len(c) / BATCH for c in values.tensor_split(7))
    unweighted = sum(c.mean() for c in values.tensor_split(7)) / 7
    assert float(weighted) == pytest.approx(float(values.mean()), rel=1e-6)
    assert abs(float(unweighted) - float(values.mean())) > 1e-6


def _config(micro_batches: object, batch_size: int = BATCH) -> RunConfig:
    return RunConfig(
        workload="digits-noisy", optimizer="sgd", batch_size=batch_size, device="cpu",
        micro_batches=micro_batches,  # type: ignore[arg-type]
    )  # fmt: skip


def test_as_many_micro_batches_as_examples_is_the_limit() -> None:
    validate_config(_config(BATCH))
    with pytest.raises(ValueError, match="61 micro-batches cannot split a batch of 60"):
        validate_config(_config(BATCH + 1))
    with pytest.raises(ValueError, match="cannot split a batch of 30 examples per process"):
        validate_config(_config(31), world_size=2)  # each rank splits its own half
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="micro-batches must be an integer >= 1"):
            validate_config(_config(bad))


def test_run_refuses_more_micro_batches_than_examples_in_one_line() -> None:
    result = CliRunner().invoke(app, ["run", "-b", "8", "--accumulate", "9"])
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [
        "error: 9 micro-batches cannot split a batch of 8 examples per process: use at most 8"
    ]
