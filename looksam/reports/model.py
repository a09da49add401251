"""What a report is drawn from: plain frozen data, loaded once, never re-trained.

Reports are pure functions of :class:`SweepData`; the loader that fills it from Optuna lives in
:mod:`looksam.sweeps.results`, so nothing in ``looksam.reports`` does I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from looksam.optim import DEFAULT_BASE

#: Failures caused by the hyperparameters: they count like any other result (budget, seeds).
BUDGET_FAILURES = ("diverged", "oom")


@dataclass(frozen=True)
class TrialPoint:
    """One trial as the reports see it (means over its seeds; per-seed values kept).

    Raw wall-clock (``train_seconds``, ``samples_per_second``, ``time_to_target_seconds``) is
    what the trial measured on a machine that may have been busy; every speed the reports
    compare comes from the paired fields (``paired_ratios``, ``cost``), see
    :mod:`looksam.bench.paired`.
    """

    optimizer: str
    number: int
    state: str  # "COMPLETE" | "PRUNED" | "FAIL" | "RUNNING" | "WAITING"
    params: dict[str, Any]  # everything it trained with (fixed values too)
    accuracy: float | None  # mean final test accuracy over seeds
    seed_accuracies: tuple[float, ...]
    train_seconds: float | None  # raw: mean over seeds, evaluation excluded
    samples_per_second: float | None  # raw
    time_to_target_seconds: float | None  # raw
    curve: tuple[float, ...]  # mean test accuracy per epoch (epoch 1 first)
    mlflow_run_id: str | None = None
    failure_reason: str | None = None
    stage: str = "search"  # or "confirm": a re-run of the chosen configuration on a fresh seed
    seeds: tuple[int, ...] = ()
    searched_params: dict[str, Any] = field(default_factory=dict)  # what the sampler drew
    source_trial: int | None = None  # confirm: the search trial it re-runs
    values: tuple[float, ...] | None = None  # Optuna's objective values
    paired_ratios: tuple[float, ...] = ()  # per round: step time / base's at the same batch
    paired_costs: tuple[float, ...] = ()  # per round: per-sample time / base's at reference batch
    samples: float | None = None  # samples trained, mean over seeds
    cost: float | None = None  # paired, in base-optimizer steps at the reference batch size
    cost_to_target: float | None = None  # paired, until the target (every seed reached it)
    reference_seconds_per_sample: float | None = None  # the base, timed in this trial's rounds
    contended: bool = False
    contention: str | None = None  # why its own step times disagree with the paired cost
    passes_per_step: float | None = None  # measured: forward-backward passes / steps


@dataclass(frozen=True)
class StudyData:
    """One optimizer's study."""

    optimizer: str
    study_name: str
    passes_per_step: float  # forward-backward passes per step at the study's reference k
    trials: tuple[TrialPoint, ...]
    importances: dict[str, float] = field(default_factory=dict)  # Optuna's evaluator
    confirmations: tuple[TrialPoint, ...] = ()  # every confirmation run (any source trial)

    @property
    def complete(self) -> tuple[TrialPoint, ...]:
        """Trials that finished and have an accuracy."""
        return tuple(t for t in self.trials if t.state == "COMPLETE" and t.accuracy is not None)


@dataclass(frozen=True)
class SweepData:
    """Everything a report shows about a sweep."""

    name: str
    workload: str
    objective: str
    base: str
    target_accuracy: float | None
    studies: tuple[StudyData, ...]
    spec: dict[str, Any]
    environment: dict[str, Any]
    generated_at: str
    reference: str = DEFAULT_BASE  # the base optimizer speeds are compared with (paired)
    reference_batch_size: int | None = None  # per-sample costs are relative to the base here
    confirm_seeds: tuple[int, ...] = ()  # seeds of the confirmation stage (none: no stage)
    confirm_pick: str = "cheapest"  # which configuration is confirmed (reports.summary.PICKS)
    confirm_margin: float = 0.01  # "cheapest": within this accuracy (a fraction) of the reference
    accuracy_reference: str | None = None  # "cheapest": whose search best sets the bar (SAM)
    #: An ``advise`` run's settings (looksam.sweeps.advise); None for a plain sweep.
    advise_settings: dict[str, Any] | None = None
