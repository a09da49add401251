"""Paired speed of one training configuration, and the rule that calls a trial contended.

A sweep's trials run minutes apart on machines whose load changes, so their wall-clock totals
cannot be divided (a busy minute once made LookSAM look 13× faster than SGD). Instead each trial
times a few short rounds of its own configuration interleaved with the reference optimizer at
the same batch size, and at the sweep's reference batch size, in one process (as ``bench``
does), and keeps every round's ratio. Load that lasts a round slows both sides of it; the median
over rounds drops the rounds it did not.

A trial is *contended* when its own training steps disagree with that paired expectation:
its median step or its mean time per step (stalls) much slower than the paired step cost times
the sweep's quiet reference speed, step times drifting during the run, or pairing done while the
reference itself ran far slower than usual. Its raw seconds are
then a measurement of the machine, not of the optimizer, and no speed claim may use it.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from looksam.train.runner import RunConfig, RunResult, TrainingSession, resolve_device
from looksam.train.timing import below_floor, floor_limit, time_relative
from looksam.train.workloads import Workload, create_workload

#: A trial whose median step takes this many times the paired expectation is contended.
SLOW_FACTOR = 1.5
#: Slowest over fastest quarter of a run's step-time medians beyond this: the load changed.
DRIFT_FACTOR = 1.5
#: The reference, timed in the trial's own rounds, this many times slower than its sweep median.
BUSY_FACTOR = 1.5
#: Defaults of the per-trial measurement: a few per cent of a digits-noisy trial.
ROUNDS = 9
STEPS_PER_ROUND = 16
WARMUP_STEPS = 5


@dataclass(frozen=True)
class PairedCost:
    """One configuration timed against the reference in interleaved rounds.

    ``same_batch_ratios[r]`` is round r's step time over the reference's at the same batch size
    (what ``bench`` reports); ``per_sample_ratios[r]`` is round r's time per sample over the
    reference's at the sweep's reference batch size, so configurations with different batch
    sizes compare per sample, every factor of it paired within the round. A sweep stores it
    through :func:`looksam.sweeps.schema.trial_attrs` (the bench sits below the sweeps).
    """

    same_batch_ratios: tuple[float, ...]
    per_sample_ratios: tuple[float, ...]
    reference_seconds_per_sample: float  # median over rounds, at the reference batch size
    step_seconds: float  # median over rounds of this configuration's step time

    @property
    def ratio(self) -> float:
        """Median step-cost ratio to the reference at the same batch size."""
        return statistics.median(self.same_batch_ratios)

    @property
    def per_sample_ratio(self) -> float:
        """Median per-sample cost relative to the reference at the reference batch size."""
        return statistics.median(self.per_sample_ratios)


def measure_paired_cost(
    config: RunConfig,
    reference: str,
    reference_batch_size: int,
    *,
    rounds: int = ROUNDS,
    steps_per_round: int = STEPS_PER_ROUND,
    warmup_steps: int = WARMUP_STEPS,
    workload: Workload | None = None,
    second_pass_share: float | None = None,
) -> PairedCost:
    """Time ``config`` against ``reference`` at its batch size and at ``reference_batch_size``.

    Each round runs the same number of steps per contender, a multiple of the configuration's
    k, so every round sees the same mix of look and plain steps. An optimizer whose second
    passes follow a rule or a phase (AE-SAM, late-phase SAM) replays ``second_pass_share``, the
    share its trained run measured (None: the registry's expectation), spread over every round.
    The sessions are fresh (the step's cost does not depend on the trained weights) and train
    nothing that is kept.
    """
    k = int(config.hyperparameters.get("k", 1))
    steps = max(k, math.ceil(steps_per_round / k) * k)
    data_dir = None if config.data_dir is None else Path(config.data_dir)
    shared = workload or create_workload(config.workload, data_dir=data_dir)
    batch = config.batch_size or shared.info().default_batch_size
    timing = replace(config, epochs=10_000, max_steps=None)  # the LR must not reach zero
    ref = RunConfig(
        workload=config.workload,
        optimizer=reference,
        batch_size=batch,
        epochs=10_000,
        seed=config.seed,
        device=config.device,
        amp=config.amp,
        data_dir=config.data_dir,
        micro_batches=config.micro_batches,  # paired at the same gradient accumulation
    )
    configs = {"trial": timing}
    if config.optimizer != reference:
        configs["reference"] = ref
    if batch != reference_batch_size:
        configs["reference@batch"] = replace(ref, batch_size=reference_batch_size)
    sessions = {name: TrainingSession(c, shared) for name, c in configs.items()}
    sessions["trial"].replay_second_passes(second_pass_share, steps)

    def stepper(session: TrainingSession) -> Any:
        batches = session.batches()
        return lambda: session.train_step(*next(batches))

    timings = {
        t.name: t
        for t in time_relative(
            {name: stepper(s) for name, s in sessions.items()},
            "trial",
            device=resolve_device(config.device),
            steps_per_round=steps,
            rounds=rounds,
            warmup_steps=warmup_steps,
        )
    }
    mine = timings["trial"].round_seconds
    same = timings.get("reference", timings["trial"]).round_seconds
    at_reference = timings.get("reference@batch", timings.get("reference", timings["trial"]))
    ref_per_sample = [s / reference_batch_size for s in at_reference.round_seconds]
    return PairedCost(
        same_batch_ratios=tuple(m / r for m, r in zip(mine, same, strict=True)),
        per_sample_ratios=tuple(
            (m / batch) / r for m, r in zip(mine, ref_per_sample, strict=True)
        ),
        reference_seconds_per_sample=statistics.median(ref_per_sample),
        step_seconds=statistics.median(mine),
    )


def contention(
    result: RunResult, paired: PairedCost, quiet_seconds_per_sample: float
) -> str | None:
    """Why a run's own step times disagree with the paired expectation; None if they agree.

    Args:
        result: the trained run (its median step time and per-step distribution).
        paired: the configuration's paired measurement.
        quiet_seconds_per_sample: the reference's seconds per sample at the reference batch
            size on this machine when it is not busy (:func:`quiet_speed` of the sweep's).
    """
    batch = result.config.batch_size
    if batch is None or quiet_seconds_per_sample <= 0:
        return None
    expected = paired.per_sample_ratio * quiet_seconds_per_sample * batch
    # The median catches a slow stretch; the mean (total time over steps) catches stalls that
    # leave most steps alone yet multiply the wall-clock.
    mean = batch / result.samples_per_second if result.samples_per_second > 0 else 0.0
    for what, seconds in (("steps", result.median_step_seconds), ("time per step", mean)):
        if seconds > SLOW_FACTOR * expected:
            return f"training {what} took {seconds / expected:.1f}× the paired expectation"
    for kind in ("plain", "look"):
        quarters = (result.step_times.get(kind) or {}).get("quarter_medians") or []
        if quarters and min(quarters) > 0 and max(quarters) > DRIFT_FACTOR * min(quarters):
            return f"{kind} step times drifted {max(quarters) / min(quarters):.1f}× during the run"
    busy = paired.reference_seconds_per_sample / quiet_seconds_per_sample
    if busy > BUSY_FACTOR:
        return f"the reference ran {busy:.1f}× slower than usual while pairing"
    floor = result.passes_per_step
    if floor is not None and below_floor(paired.ratio, floor):
        return (
            f"paired at {paired.ratio:.2f}× the reference, below what {floor:.2f} passes per "
            f"step allow ({floor_limit(floor):.2f}×)"
        )
    return None
