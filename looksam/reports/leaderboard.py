"""The leaderboard and Pareto fronts as plain rows: one computation, every rendering.

Rich (terminal), HTML, Markdown and JSON all print the entries built here from the summaries
of :mod:`looksam.reports.summary`, so they never disagree.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from looksam.optim import OptimizerInfo, get_optimizer_info
from looksam.reports.model import StudyData, SweepData, TrialPoint
from looksam.reports.summary import (
    Headline,
    Speed,
    accuracy_reference,
    best_trial,
    confirm_choices,
    confirmation_runs,
    estimated_seconds,
    headline_accuracy,
    pareto_front,
    quiet_seconds_per_sample,
    speed_vs_base,
)

COLUMNS = (
    "optimizer", "trials c/p/f", "accuracy (95% CI)", "search best", "speed vs base (IQR)",
    "est. train s", "raw train s", "time to target", "contended", "confirmed hyperparameters",
)  # fmt: skip


def format_params(params: dict[str, object]) -> str:
    """'alpha=0.7 k=5 lr=0.05' with floats to three significant digits."""
    return " ".join(
        f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in sorted(params.items())
    )


def optimizer_info(name: str) -> OptimizerInfo | None:
    """The registry entry of a stored sweep's optimizer; None for one this version lacks."""
    try:
        return get_optimizer_info(name)
    except ValueError:
        return None


def optimizer_label(name: str) -> str:
    """The name reports print for an optimizer (its registry label, else the stored name)."""
    info = optimizer_info(name)
    return name if info is None else info.label


def all_points(data: SweepData) -> list[TrialPoint]:
    """Every search trial and confirmation run of the sweep."""
    return [p for s in data.studies for p in (*s.trials, *s.confirmations)]


#: A trial's paired cost in quiet-machine seconds (None: no paired measurement).
Estimate = Callable[[TrialPoint], float | None]


def seconds_estimator(data: SweepData) -> Estimate:
    """The sweep's one rule for a trial's seconds: paired cost at quiet-machine speed."""
    quiet = quiet_seconds_per_sample(all_points(data))
    return lambda t: estimated_seconds(t.cost, quiet, data.reference_batch_size)


@dataclass(frozen=True)
class LeaderboardEntry:
    """One optimizer's standing, with the numbers findings need."""

    optimizer: str
    study: StudyData
    chosen: TrialPoint | None  # the configuration the headline is about (confirmed if any)
    search_best: TrialPoint | None  # the search's most accurate trial (one seed, usually)
    confirmations: tuple[TrialPoint, ...]  # the chosen configuration's confirmation runs
    headline: Headline | None
    speed: Speed | None  # paired, against the base at the chosen batch size
    estimated_seconds: float | None  # the chosen trial's paired cost at quiet-machine speed
    estimated_time_to_target: float | None
    contended: int  # contended trials and runs of this optimizer

    @property
    def accuracies(self) -> tuple[float, ...]:
        """The per-seed accuracies behind the headline (what the tests use)."""
        return () if self.headline is None else self.headline.values


def chosen_configurations(data: SweepData) -> dict[str, TrialPoint | None]:
    """Each study's confirmed configuration, by the sweep's pick (reports.summary's one rule)."""
    return confirm_choices(
        {s.optimizer: s.trials for s in data.studies},
        data.objective,
        data.confirm_pick,
        reference=accuracy_reference([s.optimizer for s in data.studies], data.accuracy_reference),
        base=data.reference,
        margin=data.confirm_margin,
    )


def leaderboard(data: SweepData) -> list[LeaderboardEntry]:
    """One entry per study, in the sweep's optimizer order."""
    quiet = quiet_seconds_per_sample(all_points(data))
    batch = data.reference_batch_size
    choices = chosen_configurations(data)
    entries = []
    for study in data.studies:
        chosen = choices[study.optimizer]
        runs = tuple(confirmation_runs(chosen, study.confirmations))
        entries.append(
            LeaderboardEntry(
                optimizer=study.optimizer,
                study=study,
                chosen=chosen,
                search_best=best_trial(study.trials, data.objective),
                confirmations=runs,
                headline=headline_accuracy(chosen, runs),
                speed=speed_vs_base(chosen, runs),
                estimated_seconds=estimated_seconds(
                    None if chosen is None else chosen.cost, quiet, batch
                ),
                estimated_time_to_target=estimated_seconds(
                    None if chosen is None else chosen.cost_to_target, quiet, batch
                ),
                contended=sum(p.contended for p in (*study.trials, *study.confirmations)),
            )
        )
    return entries


def contended_total(data: SweepData) -> int:
    """Contended trials and runs in the whole sweep (the report's header says it)."""
    return sum(p.contended for p in all_points(data))


def _headline_text(e: LeaderboardEntry) -> str:
    if e.headline is None:
        return "-"
    text = e.headline.accuracy.format()
    if not e.headline.confirmed:
        return f"{text} (search)"
    n = len(e.headline.values)
    failed = f", {e.headline.failed_runs} failed" if e.headline.failed_runs else ""
    return f"{text} ({n} seed{'s' if n != 1 else ''}{failed})"


def _speed_text(speed: Speed | None) -> str:
    if speed is None:
        return "-"
    return f"{speed.value:.2f}× ({speed.low:.2f}–{speed.high:.2f})"


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def leaderboard_rows(data: SweepData) -> list[dict[str, str]]:
    """The leaderboard as text cells keyed by :data:`COLUMNS`."""
    rows = []
    for e in leaderboard(data):
        trials = e.study.trials
        counts = (
            f"{sum(t.state == 'COMPLETE' for t in trials)}/"
            f"{sum(t.state == 'PRUNED' for t in trials)}/{sum(t.state == 'FAIL' for t in trials)}"
        )
        c = e.chosen
        ttt = "-"
        if data.target_accuracy is not None and c is not None:
            ttt = (
                "not reached"
                if e.estimated_time_to_target is None
                else f"{e.estimated_time_to_target:.2f} s"
            )
        best = e.search_best
        rows.append(
            {
                "optimizer": e.optimizer,
                "trials c/p/f": counts,
                "accuracy (95% CI)": _headline_text(e),
                "search best": "-" if best is None else f"{100 * (best.accuracy or 0.0):.2f} %",
                "speed vs base (IQR)": _speed_text(e.speed),
                "est. train s": _seconds(e.estimated_seconds),
                "raw train s": _seconds(None if c is None else c.train_seconds),
                "time to target": ttt,
                "contended": str(e.contended),
                # measured (closure calls per step), so AE-SAM shows what its rule chose
                "passes/step": "-"
                if c is None or c.passes_per_step is None
                else f"{c.passes_per_step:.2f}",
                "confirmed hyperparameters": "-" if c is None else format_params(c.params),
            }
        )
    return rows


def leaderboard_json(data: SweepData) -> list[dict[str, Any]]:
    """Machine-readable leaderboard rows (``report --json``), one per optimizer."""
    out = []
    for e in leaderboard(data):
        h, s, c = e.headline, e.speed, e.chosen
        out.append(
            {
                "optimizer": e.optimizer,
                "accuracy_mean": None if h is None else h.mean,
                "accuracy_ci95": (
                    None
                    if h is None or h.accuracy.half_width is None
                    else [h.mean - h.accuracy.half_width, h.mean + h.accuracy.half_width]
                ),
                "seeds": 0 if h is None else len(h.values),
                "confirmed": bool(h and h.confirmed),
                "search_best_accuracy": None if e.search_best is None else e.search_best.accuracy,
                "speed_vs_base": None if s is None else s.value,
                "speed_iqr": None if s is None else [s.low, s.high],
                "speed_method": "none: every timing contended" if s is None else s.method,
                "base": data.reference,
                "estimated_train_seconds": e.estimated_seconds,
                "raw_train_seconds": None if c is None else c.train_seconds,
                "estimated_time_to_target_seconds": e.estimated_time_to_target,
                "passes_per_step": None if c is None else c.passes_per_step,
                "contended_trials": e.contended,
                "best_trial": None if c is None else c.number,
                "best_params": {} if c is None else c.params,
            }
        )
    return out


def front_rows(study: StudyData, data: SweepData) -> list[dict[str, str]]:
    """One row per Pareto-optimal trial of a study, cheapest first."""
    estimate = seconds_estimator(data)
    return [
        {
            "trial": f"#{t.number}" + (" (contended)" if t.contended else ""),
            "accuracy": f"{100 * (t.accuracy or 0.0):.2f} %",
            "est. train s": _seconds(estimate(t)),
            "hyperparameters": format_params(t.params),
        }
        for t in pareto_front(study.trials)
    ]


#: Failures that say nothing about the optimizer: a slot lost to another worker, a repeated draw.
BOOKKEEPING_FAILURES = ("surplus", "duplicate")


def has_results(data: SweepData) -> bool:
    """Whether a report has something to say: a trial finished, was pruned, or failed for a
    reason of its own (every trial diverging is a result; an interrupted one is not)."""
    return any(
        t.state in ("COMPLETE", "PRUNED")
        or (t.state == "FAIL" and t.failure_reason not in (*BOOKKEEPING_FAILURES, "interrupted"))
        for s in data.studies
        for t in s.trials
    )


def failure_rows(data: SweepData) -> list[dict[str, str]]:
    """Per optimizer, its failed trials by reason and the first one's settings; a sweep whose
    every trial failed is reported through these rows instead of ending with no report."""
    rows = []
    for study in data.studies:
        failed = [
            t
            for t in (*study.trials, *study.confirmations)
            if t.state == "FAIL" and t.failure_reason not in BOOKKEEPING_FAILURES
        ]
        if not failed:
            continue
        reasons: dict[str, int] = {}
        for t in failed:
            reasons[t.failure_reason or "unknown"] = (
                reasons.get(t.failure_reason or "unknown", 0) + 1
            )
        rows.append(
            {
                "optimizer": study.optimizer,
                "failed": str(len(failed)),
                "reasons": ", ".join(f"{r} ×{n}" for r, n in reasons.items()),
                "first failed": f"#{failed[0].number} {format_params(failed[0].params)}",
            }
        )
    return rows
