"""What a sweep needs from experiment tracking, and the record of one trial it hands over.

Nothing here imports MLflow: ``--no-mlflow`` sweeps and tests that record trials in memory use
these names alone.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from looksam.train.runner import RunResult

STATES = ("COMPLETE", "PRUNED", "FAIL")


class TrackingUnavailable(ValueError):  # noqa: N818 - the name the sweep command catches
    """The tracking store cannot be reached, or refused a write (message has no password).

    ``transient`` is False for a write the store refused (retrying it cannot help) and True
    for an outage (the tracker keeps the record and retries).
    """

    def __init__(self, message: str, *, transient: bool = True) -> None:
        super().__init__(message)
        self.transient = transient


@dataclass(frozen=True)
class TrialRecord:
    """Everything one Optuna trial produced, ready to be tracked."""

    study_name: str
    trial_number: int
    optimizer: str
    params: dict[str, Any]  # the suggested hyperparameters (rho, k, alpha, lr, batch_size…)
    state: str  # "COMPLETE" | "PRUNED" | "FAIL"
    failure_reason: str | None  # "diverged" | "oom" | "interrupted" | "error: …" | None
    results: tuple[RunResult, ...]  # one per seed (empty if the trial failed before training)
    objective_values: tuple[float, ...] | None
    #: Extra child-run tags and final metrics the sweep adds (stage, contention, paired speed).
    tags: Mapping[str, str] = field(default_factory=dict)
    metrics: Mapping[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.state not in STATES:
            raise ValueError(f"state must be one of {', '.join(STATES)}, got {self.state!r}")


class Tracker(Protocol):
    """What a sweep needs from experiment tracking."""

    def start_study(
        self, sweep: str, study_name: str, optimizer: str, spec: Mapping[str, Any]
    ) -> None:
        """Open the parent run of one optimizer's study."""

    def log_trial(self, record: TrialRecord) -> str | None:
        """Record one finished trial; returns its run id where there is one."""

    def end_study(self, study_name: str, summary: Mapping[str, float]) -> None:
        """Record the study's summary (best values…) and close its parent run."""

    def close(self) -> None:
        """Close whatever is still open."""

    def backfill(self) -> int:
        """Write what an outage held back; returns how many records are still pending."""

    def log_artifacts(self, files: Sequence[Path]) -> None:
        """Attach files (the report, the spec) to every study's parent run; never raises."""


class NullTracker:
    """``--no-mlflow``: track nothing, cost nothing."""

    def start_study(
        self, sweep: str, study_name: str, optimizer: str, spec: Mapping[str, Any]
    ) -> None:
        """Do nothing."""

    def log_trial(self, record: TrialRecord) -> str | None:
        """Do nothing; there is no run id."""
        return None

    def end_study(self, study_name: str, summary: Mapping[str, float]) -> None:
        """Do nothing."""

    def close(self) -> None:
        """Do nothing."""

    def backfill(self) -> int:
        """Nothing is ever pending."""
        return 0

    def log_artifacts(self, files: Sequence[Path]) -> None:
        """Do nothing."""
