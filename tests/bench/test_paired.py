"""Paired per-trial timing and the contention rule, each threshold at its boundary."""

from __future__ import annotations

from dataclasses import replace

import pytest

import looksam.train.timing as timing
from looksam.bench.paired import (
    BUSY_FACTOR,
    DRIFT_FACTOR,
    SLOW_FACTOR,
    PairedCost,
    contention,
    measure_paired_cost,
)
from looksam.train.runner import RunConfig, RunResult, TrainingSession, run_training


def _result(median_step: float, quarters: list[float] | None = None) -> RunResult:
    config = RunConfig("digits-noisy", "sgd", batch_size=10, epochs=1, device="cpu", max_steps=2)
    result = run_training(config)
    times = {} if quarters is None else {"look": {"quarter_medians": quarters}}
    return replace(result, median_step_seconds=median_step, step_times=times)


PAIRED = PairedCost(
    same_batch_ratios=(2.0,), per_sample_ratios=(2.0,), reference_seconds_per_sample=1.0,
    step_seconds=20.0,
)  # fmt: skip


def test_slow_threshold_is_exclusive() -> None:
    expected = 2.0 * 1.0 * 10  # paired per-sample cost × quiet seconds/sample × batch
    assert contention(_result(SLOW_FACTOR * expected), PAIRED, 1.0) is None
    why = contention(_result(SLOW_FACTOR * expected * 1.001), PAIRED, 1.0)
    assert why is not None
    assert "paired expectation" in why


def test_stalls_that_spare_the_median_are_caught_by_the_mean_time_per_step() -> None:
    expected = 2.0 * 1.0 * 10
    at_limit = replace(_result(20.0), samples_per_second=10 / (SLOW_FACTOR * expected))
    assert contention(at_limit, PAIRED, 1.0) is None
    stalled = replace(_result(20.0), samples_per_second=10 / (SLOW_FACTOR * expected * 1.001))
    why = contention(stalled, PAIRED, 1.0)
    assert why is not None
    assert "time per step" in why


def test_drift_threshold_is_exclusive() -> None:
    assert contention(_result(20.0, [1.0, 1.0, DRIFT_FACTOR, 1.0]), PAIRED, 1.0) is None
    why = contention(_result(20.0, [1.0, 1.0, DRIFT_FACTOR * 1.001, 1.0]), PAIRED, 1.0)
    assert why is not None
    assert "drifted" in why


def test_busy_pairing_threshold_is_exclusive() -> None:
    quiet = 1.0 / BUSY_FACTOR
    # the expectation scales with the quiet speed: keep the run's own steps below it
    fine = contention(_result(1.0), PAIRED, quiet)
    assert fine is None
    busy = contention(_result(1.0), PAIRED, quiet * 0.999)
    assert busy is not None
    assert "while pairing" in busy


@pytest.mark.parametrize(("ratio", "flagged"), [(1.44, True), (1.45, False), (2.0, False)])
def test_a_paired_ratio_below_the_pass_floor_is_contention(ratio: float, flagged: bool) -> None:
    """A run of 2 passes per step paired at under 1.45× its base cannot be a correct timing."""
    base = _result(1.0)
    two_passes = replace(base, forward_backward_passes=2 * base.steps)
    paired = replace(PAIRED, same_batch_ratios=(ratio,), per_sample_ratios=(ratio,))
    why = contention(two_passes, paired, 1.0)
    assert (why is not None) == flagged, why
    if flagged:
        expected = "paired at 1.44× the reference, below what 2.00 passes per step allow (1.45×)"
        assert why == expected


def test_paired_ratios_come_from_the_same_round(monkeypatch: pytest.MonkeyPatch) -> None:
    """A fake clock makes SAM exactly twice SGD per step, with a different load each round."""
    clock = {"t": 0.0, "round": 0}
    real_step = TrainingSession.train_step
    loads = [1.0, 3.0, 1.5, 7.0, 1.0]
    calls = {"n": 0}

    def train_step(self: TrainingSession, *args: object, **kwargs: object) -> object:
        before = self.passes
        loss = real_step(self, *args, **kwargs)
        calls["n"] += 1
        clock["t"] += (self.passes - before) * (self.batch_size / 32) * loads[clock["round"]]
        return loss

    def now() -> float:
        return clock["t"]

    def progress(done: int) -> None:
        clock["round"] = min(done, len(loads) - 1)

    monkeypatch.setattr(TrainingSession, "train_step", train_step)
    monkeypatch.setattr(timing, "now", now)
    real_time_relative = timing.time_relative

    def time_relative(*args: object, **kwargs: object) -> object:
        kwargs["progress"] = progress
        return real_time_relative(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr("looksam.bench.paired.time_relative", time_relative)
    config = RunConfig("digits-noisy", "sam", batch_size=64, device="cpu")
    paired = measure_paired_cost(config, "sgd", 32, rounds=5, steps_per_round=4, warmup_steps=0)
    assert paired.same_batch_ratios == pytest.approx((2.0,) * 5)
    # per sample: SAM at 64 costs 2 passes × 2 (batch share) per 64 samples, SGD at 32 costs 1
    # pass per 32 samples: the same per sample, times SAM's 2 passes.
    assert paired.per_sample_ratios == pytest.approx((2.0,) * 5)
    assert paired.reference_seconds_per_sample == pytest.approx(1.5 / 32)


def test_the_reference_runs_at_the_trial_s_accumulation(monkeypatch: pytest.MonkeyPatch) -> None:
    """A trial with 4 micro-batches is paired against SGD with 4 micro-batches too, at its own
    batch and at the reference batch."""
    built: dict[str, int] = {}
    real_init = TrainingSession.__init__

    def init(self: TrainingSession, config: RunConfig, *args: object, **kwargs: object) -> None:
        real_init(self, config, *args, **kwargs)  # type: ignore[arg-type]
        built[f"{config.optimizer}@{config.batch_size}"] = config.micro_batches

    monkeypatch.setattr(TrainingSession, "__init__", init)
    config = RunConfig("digits-noisy", "sam", batch_size=64, device="cpu", micro_batches=4)
    measure_paired_cost(config, "sgd", 32, rounds=2, steps_per_round=1, warmup_steps=0)
    assert built == {"sam@64": 4, "sgd@64": 4, "sgd@32": 4}
