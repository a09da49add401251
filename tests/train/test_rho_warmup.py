"""ρ warm-up (large-batch recipe): the radius grows linearly from 0, then stays at its target."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from looksam.cli.app import app
from looksam.train.runner import RunConfig, TrainingSession


def test_rho_ramps_linearly_over_the_warm_up_share() -> None:
    config = RunConfig(workload="digits-noisy", optimizer="looksam", device="cpu", max_steps=10,
                       hyperparameters={"rho": 0.5, "k": 2}, rho_warmup_fraction=0.4)  # fmt: skip
    session = TrainingSession(config)
    assert session.sam is not None
    radii = []
    for _, (x, y) in zip(range(10), session.batches(), strict=False):
        session.train_step(x, y)
        radii.append(session.sam.rho)
    # 4 warm-up steps: step t uses 0.5 × (t + 1) / 4, then 0.5 to the end
    assert radii == pytest.approx([0.125, 0.25, 0.375, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5])


def test_no_warm_up_keeps_rho_fixed() -> None:
    config = RunConfig(workload="digits-noisy", optimizer="sam", device="cpu", max_steps=3,
                       hyperparameters={"rho": 0.3})  # fmt: skip
    session = TrainingSession(config)
    for _, (x, y) in zip(range(3), session.batches(), strict=False):
        session.train_step(x, y)
        assert session.sam is not None
        assert session.sam.rho == 0.3


def test_a_warm_up_share_outside_0_1_is_a_usage_error() -> None:
    result = CliRunner().invoke(
        app, ["run", "-o", "sam", "--rho-warmup", "1.5", "--device", "cpu"]
    )
    assert result.exit_code == 2, result.output
    assert "rho warm-up fraction must be in [0, 1)" in result.output
