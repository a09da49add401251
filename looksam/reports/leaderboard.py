"""The leaderboard and Pareto fronts as plain rows: one computation, three renderings.

Rich (terminal), HTML and Markdown all print the rows built here, so they never disagree.
"""

from __future__ import annotations

from dataclasses import dataclass

from looksam.reports.model import StudyData, SweepData, TrialPoint
from looksam.reports.stats import MeanCI, mean_ci
from looksam.reports.svg import pareto_front

COLUMNS = (
    "optimizer", "trials c/p/f", "best accuracy (95% CI)", "train s", "samples/s",
    "speed vs base", "time to target", "best hyperparameters",
)  # fmt: skip


def format_params(params: dict[str, object]) -> str:
    """'alpha=0.7 k=5 lr=0.05' with floats to three significant digits."""
    return " ".join(
        f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in sorted(params.items())
    )


def best_trial(study: StudyData) -> TrialPoint | None:
    """The most accurate completed trial (also the top of the Pareto front)."""
    return max(
        study.complete, key=lambda t: (t.accuracy or 0.0, -(t.train_seconds or 0.0)), default=None
    )


def trial_front(trials: tuple[TrialPoint, ...]) -> list[TrialPoint]:
    """A study's Pareto-optimal trials (accuracy up, training seconds down), fastest first."""
    timed = [t for t in trials if t.accuracy is not None and t.train_seconds is not None]
    return pareto_front(timed, key=lambda t: (t.train_seconds or 0.0, t.accuracy or 0.0))


@dataclass(frozen=True)
class LeaderboardEntry:
    """One optimizer's standing, with the numbers findings need."""

    optimizer: str
    study: StudyData
    best: TrialPoint | None
    accuracy: MeanCI | None
    speed_ratio: float | None  # samples/s of its best trial over the reference's best


def leaderboard(data: SweepData) -> list[LeaderboardEntry]:
    """One entry per study, in the sweep's optimizer order."""
    bests = {s.optimizer: best_trial(s) for s in data.studies}
    ref = bests.get(data.reference)
    entries = []
    for study in data.studies:
        best = bests[study.optimizer]
        accuracy = mean_ci(best.seed_accuracies) if best and best.seed_accuracies else None
        ratio = None
        if best and ref and best.samples_per_second and ref.samples_per_second:
            ratio = best.samples_per_second / ref.samples_per_second
        entries.append(LeaderboardEntry(study.optimizer, study, best, accuracy, ratio))
    return entries


def leaderboard_rows(data: SweepData) -> list[dict[str, str]]:
    """The leaderboard as text cells keyed by :data:`COLUMNS`."""
    rows = []
    for e in leaderboard(data):
        trials = e.study.trials
        counts = (
            f"{sum(t.state == 'COMPLETE' for t in trials)}/"
            f"{sum(t.state == 'PRUNED' for t in trials)}/{sum(t.state == 'FAIL' for t in trials)}"
        )
        b = e.best
        ttt = "-"
        if data.target_accuracy is not None and b is not None:
            ttt = (
                "not reached"
                if b.time_to_target_seconds is None
                else f"{b.time_to_target_seconds:.2f} s"
            )
        rows.append(
            {
                "optimizer": e.optimizer,
                "trials c/p/f": counts,
                "best accuracy (95% CI)": "-" if e.accuracy is None else e.accuracy.format(),
                "train s": "-"
                if b is None or b.train_seconds is None
                else f"{b.train_seconds:.2f}",
                "samples/s": (
                    "-"
                    if b is None or b.samples_per_second is None
                    else f"{b.samples_per_second:,.0f}"
                ),
                "speed vs base": "-" if e.speed_ratio is None else f"{e.speed_ratio:.2f}×",
                "time to target": ttt,
                "best hyperparameters": "-" if b is None else format_params(b.params),
            }
        )
    return rows


def front_rows(study: StudyData) -> list[dict[str, str]]:
    """One row per Pareto-optimal trial of a study, fastest first."""
    return [
        {
            "trial": f"#{t.number}",
            "accuracy": f"{100 * (t.accuracy or 0.0):.2f} %",
            "train s": f"{t.train_seconds:.2f}",
            "hyperparameters": format_params(t.params),
        }
        for t in trial_front(study.trials)
    ]
