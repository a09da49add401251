"""What a report is drawn from: plain frozen data, loaded once, never re-trained.

Reports are pure functions of :class:`SweepData`; the loader that fills it from Optuna lives in
:mod:`looksam.sweeps.results`, so nothing in ``looksam.reports`` does I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class TrialPoint:
    """One trial as the reports see it (means over its seeds; per-seed values kept)."""

    optimizer: str
    number: int
    state: str  # "COMPLETE" | "PRUNED" | "FAIL" | "RUNNING" | "WAITING"
    params: dict[str, Any]
    accuracy: float | None  # mean final test accuracy over seeds
    seed_accuracies: tuple[float, ...]
    train_seconds: float | None  # mean over seeds, evaluation excluded
    samples_per_second: float | None
    time_to_target_seconds: float | None
    curve: tuple[float, ...]  # mean test accuracy per epoch (epoch 1 first)
    mlflow_run_id: str | None = None
    failure_reason: str | None = None


@dataclass(frozen=True)
class StudyData:
    """One optimizer's study."""

    optimizer: str
    study_name: str
    passes_per_step: float  # forward-backward passes per step at the study's reference k
    trials: tuple[TrialPoint, ...]
    importances: dict[str, float] = field(default_factory=dict)  # Optuna's evaluator

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
    reference: str = "sgd"  # the optimizer speeds are compared with
