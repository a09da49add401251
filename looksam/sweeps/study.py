"""The sweep's scheduler: every optimizer's study in turn, then the confirmation stage.

Studies take turns by default: each next trial goes to the study with the smallest share of its
budget taken (counted or running, by any worker), ties to the spec's order, so the optimizers
progress together, a change of machine load lands on all of them alike, and a sweep stopped
half-way has something of every optimizer. ``order = "sequential"`` fills one study after the
other instead. The rule reads only the storage, so it holds across workers and resumes.

After the search, the confirmation stage re-trains each optimizer's chosen configuration
(:func:`~looksam.reports.summary.confirm_choices`: by default SAM's and the base's most accurate
trial, and every other optimizer's cheapest trial within the margin of SAM's search best) on
fresh seeds, one seed per trial of a study of its own (``SWEEP/WORKLOAD/OPTIMIZER/confirm``),
interleaved the same way. Its trials are queued with their seed, so a killed worker's run is
re-queued with the same seed, and a second worker that races for one is failed as ``surplus``
before it trains.
"""

from __future__ import annotations

import threading
import time
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from looksam.reports.model import TrialPoint
from looksam.reports.summary import (
    accuracy_reference,
    confirm_choices,
    confirmation_runs,
    headline_accuracy,
)
from looksam.sweeps._liveness import (
    WORKER_ID,
    counts_toward_budget,
    fail_trial,
    interrupts_latched,
    is_taken,
    lost_the_last_slot,
    raise_if_interrupted,
    reap_stale_trials,
    requeue,
)
from looksam.sweeps._samplers import METRIC_NAMES, directions, make_pruner, make_sampler
from looksam.sweeps._storage import open_storage
from looksam.sweeps._trial import (
    QuietObserver,
    SweepObserver,
    TrialOutcome,
    TrialRun,
    defaults,
)
from looksam.sweeps.results import point_from_trial
from looksam.sweeps.schema import CONTROL, STUDY, read_trial_attrs, stamp_version
from looksam.sweeps.spec import ORDERS, SpecError, SweepSpec, reference_params
from looksam.sweeps.tracking import NullTracker, Tracker
from looksam.sweeps.validate import validate_trial_space
from looksam.train.workloads import get_workload_info

#: How often a worker that waits for other workers' search trials looks again.
WAIT_POLL_SECONDS = 2.0
#: Draws in a row that repeat a known point before a study's space counts as used up.
MAX_REPEATED_DRAWS = 25


@dataclass(frozen=True)
class StudySummary:
    """One optimizer's studies after the sweep (or as far as it got)."""

    optimizer: str
    study_name: str
    complete: int
    pruned: int
    failed: int
    best: TrialPoint | None  # the confirmed configuration (one definition: reports.summary)
    confirmations: tuple[TrialPoint, ...]  # its confirmation runs that count


@dataclass(frozen=True)
class SweepResult:
    """The whole sweep: its spec, every study's summary and its wall-clock."""

    spec: SweepSpec
    studies: tuple[StudySummary, ...]
    wall_seconds: float


def validate_for_workload(spec: SweepSpec) -> None:
    """Objectives the workload cannot support are user errors, found before any study exists."""
    info = get_workload_info(spec.workload.name)
    if not info.measures_accuracy and spec.objective in ("pareto", "accuracy", "time-to-target"):
        raise SpecError(
            f"{spec.workload.name} trains on random data and measures no accuracy: "
            "sweep a real workload (use `looksam-bench bench` for speed alone)"
        )
    if spec.objective == "time-to-target" and info.target_accuracy is None:
        raise SpecError(f"{spec.workload.name} has no target accuracy for time-to-target")


def confirm_study_name(spec: SweepSpec, optimizer: str) -> str:
    """The study holding ``optimizer``'s confirmation runs."""
    return f"{spec.study_name(optimizer)}/confirm"


def open_study(spec: SweepSpec, optimizer: str, storage: Any) -> optuna.Study:
    """Create or join the study for ``optimizer``; a new one starts at the paper's point."""
    study = optuna.create_study(
        study_name=spec.study_name(optimizer),
        storage=storage,
        sampler=make_sampler(spec, optimizer, 0),
        pruner=make_pruner(spec),
        directions=directions(spec.objective),
        load_if_exists=True,
    )
    space = spec.space_for(optimizer)
    # A grid already contains every point worth running; a reference trial would run one twice.
    # Two workers may both queue it: the second copy is failed as a duplicate before it trains.
    if space and spec.sampler != "grid" and not study.get_trials(deepcopy=False):
        point = reference_params(space, defaults(spec, optimizer))
        study.enqueue_trial(point, user_attrs={CONTROL.reference: True})
    _describe(study, spec)
    return study


def _describe(study: optuna.Study, spec: SweepSpec) -> None:
    # Refuses a store a newer version wrote, before this code writes a trial into it.
    stamp_version(study, study.user_attrs, f"study {study.study_name}")
    # `report --sweep NAME` rebuilds the confirmed choices from these, not from defaults.
    confirm = confirm_settings(spec)
    if study.user_attrs.get(STUDY.confirm) != confirm:
        study.set_user_attr(STUDY.confirm, confirm)
    if spec.plugins:  # `report --sweep NAME` loads them again to know the optimizers
        study.set_user_attr(STUDY.plugins, list(spec.plugins))
    if study.metric_names != METRIC_NAMES[spec.objective]:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names(METRIC_NAMES[spec.objective])


def confirm_settings(spec: SweepSpec) -> dict[str, Any]:
    """What decides the confirmed configurations, as stored with every study of the sweep."""
    return {
        "pick": spec.confirm_pick,
        "margin": spec.confirm_margin,
        "reference": spec.accuracy_reference,
        "seeds": list(spec.confirm_seeds),
        "base": spec.base,
    }


def _taken(study: optuna.Study) -> int:
    return sum(is_taken(t) for t in study.get_trials(deepcopy=False))


def _counted(study: optuna.Study) -> int:
    return sum(counts_toward_budget(t) for t in study.get_trials(deepcopy=False))


def next_study(
    spec: SweepSpec, taken: Mapping[str, int], budgets: Mapping[str, int], order: str
) -> str | None:
    """Whose trial comes next: the least advanced study (interleaved) or the first unfinished.

    Args:
        taken: trials per optimizer that count or run now (every worker's).
        budgets: each optimizer's budget; optimizers left out are finished for this worker.
    """
    open_ = [o for o in spec.optimizers if o in budgets and taken.get(o, 0) < budgets[o]]
    if not open_:
        return None
    if order == "sequential":
        return open_[0]
    return min(open_, key=lambda o: (taken.get(o, 0) / budgets[o], spec.optimizers.index(o)))


class _Sweep:
    """One worker's part of a sweep: the studies, the stores and the observers."""

    def __init__(self, spec: SweepSpec, observer: SweepObserver, tracker: Tracker) -> None:
        self.spec = spec
        self.observer = observer
        self.tracker = tracker
        self.storage = open_storage(spec.storage)
        self.studies = {o: open_study(spec, o, self.storage) for o in spec.optimizers}
        self.confirm: dict[str, optuna.Study] = {}
        self.spent: dict[str, float] = dict.fromkeys(spec.optimizers, 0.0)

    def quiet_pool(self) -> list[float]:
        """The reference's seconds per sample from every paired measurement so far."""
        studies = [*self.studies.values(), *self.confirm.values()]
        return [
            value
            for study in studies
            for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
            if (value := read_trial_attrs(t.user_attrs).reference_seconds_per_sample) is not None
        ]

    def start(self) -> None:
        """Open every study's tracking and take back the trials of workers that died."""
        for optimizer, study in self.studies.items():
            self.tracker.start_study(
                self.spec.name, study.study_name, optimizer, self.spec.to_dict()
            )
            reap_stale_trials(study)

    def finish(self) -> list[StudySummary]:
        """Every study's summary, also written to its tracking."""
        chosen = self.choices()
        summaries = [
            summarize(self.spec, o, s, self.confirm.get(o), chosen[o])
            for o, s in self.studies.items()
        ]
        for summary in summaries:
            self.tracker.end_study(summary.study_name, _summary_metrics(summary))
        return summaries

    # ------------------------------------------------------------------ search

    def search(self, order: str, budget_of: Callable[[str], int] | None = None) -> None:
        """Fill every study's budget, one trial at a time in ``order``.

        ``budget_of`` (default: the spec's) is asked again before every trial, so a caller
        that plans against a clock (``advise``) can move every study's budget while it runs.
        """
        budget_of = budget_of or self.spec.budget_for
        budgets = {o: budget_of(o) for o in self.spec.optimizers}
        for optimizer, study in self.studies.items():
            self.observer.study_started(optimizer, "search", _counted(study), budgets[optimizer])
        repeats = dict.fromkeys(budgets, 0)
        while True:
            raise_if_interrupted()
            budgets = {o: budget_of(o) for o in self.spec.optimizers}
            live = {o: b for o, b in budgets.items() if not self._out_of_time(o)}
            for o in live:  # a worker that died mid-sweep must not keep holding its slot
                reap_stale_trials(self.studies[o])
            taken = {o: _taken(self.studies[o]) for o in live}
            turn = next_study(self.spec, taken, live, order)
            if turn is None:
                return
            optimizer, study = turn, self.studies[turn]
            study.sampler = make_sampler(self.spec, optimizer, len(study.get_trials()))
            started = time.monotonic()
            outcome = self._one(optimizer, study, budgets[optimizer], "search")
            self.spent[optimizer] += time.monotonic() - started
            repeated = outcome is not None and outcome.failure_reason == "duplicate"
            repeats[optimizer] = repeats[optimizer] + 1 if repeated else 0
            if repeats[optimizer] >= MAX_REPEATED_DRAWS:
                raise SpecError(
                    f"{study.study_name}: the sampler drew {MAX_REPEATED_DRAWS} known points "
                    "in a row; its space has fewer distinct points than the budget (use "
                    'sampler = "grid" or fewer trials)'
                )
            if outcome is not None:
                budget = budgets[optimizer]
                self.observer.trial_finished(outcome, _counted(study), budget)

    def _out_of_time(self, optimizer: str) -> bool:
        return self.spec.timeout is not None and self.spent[optimizer] >= self.spec.timeout

    def _one(
        self,
        optimizer: str,
        study: optuna.Study,
        budget: int | None,
        stage: str,
        source: TrialPoint | None = None,
    ) -> TrialOutcome | None:
        """Ask for one trial and run it; None when it lost its slot to another worker.

        ``budget`` None: the trial's slot is its queued seed (confirmation), not a count.
        """
        trial: optuna.Trial | None = None
        run: TrialRun | None = None
        try:
            trial = study.ask()
            trial.set_user_attr(CONTROL.worker, WORKER_ID)
            seed = trial.user_attrs.get(CONTROL.confirm_seed)
            if stage == "confirm" and not _claims_seed(study, trial, source):
                fail_trial(study, trial, "surplus")  # another worker runs that seed
                return None
            if budget is not None and lost_the_last_slot(study, trial.number, budget):
                fail_trial(study, trial, "surplus")  # another worker took the last slot first
                return None
            run = TrialRun(
                self.spec,
                optimizer,
                study,
                trial,
                self.observer,
                self.tracker,
                parent_study=self.spec.study_name(optimizer),
                quiet_pool=self.quiet_pool,
                stage=stage,
                source_params=None if source is None else dict(source.searched_params),
                seeds=None if seed is None else (int(seed),),
            )
            return run.run()
        except KeyboardInterrupt:
            # Ctrl-C outside the training itself (asking, suggesting, telling): the trial must
            # still end as "interrupted" and come back, never stay RUNNING under a live worker.
            if trial is not None and (run is None or not run.told):
                fail_trial(study, trial, "interrupted")
                requeue(study, trial.number, trial.params, trial.user_attrs)
            raise

    # ------------------------------------------------------------------ confirmation

    def points(self) -> dict[str, list[TrialPoint]]:
        """Every search trial of every study, as report points."""
        return {
            o: [point_from_trial(o, t) for t in study.get_trials(deepcopy=False)]
            for o, study in self.studies.items()
        }

    def choices(self) -> dict[str, TrialPoint | None]:
        """Each optimizer's configuration to confirm, by the spec's pick (the report's rule)."""
        return confirm_choices(
            self.points(),
            self.spec.objective,
            self.spec.confirm_pick,
            reference=accuracy_reference(self.spec.optimizers, self.spec.accuracy_reference),
            base=self.spec.base,
            margin=self.spec.confirm_margin,
        )

    def confirmation(
        self,
        order: str,
        seed_counts: Mapping[str, int] | None = None,
        may_start: Callable[[str], bool] | None = None,
    ) -> None:
        """Re-run each optimizer's chosen configuration on the spec's fresh seeds.

        Args:
            seed_counts: how many of the spec's confirmation seeds each optimizer needs now
                (its first ones; optimizers left out need none); default: all of them for
                every optimizer. Calling again with larger counts adds seeds.
            may_start: asked before each run; False ends that optimizer's runs for this call
                (a caller's budget ran out).
        """
        seeds = self.spec.confirm_seeds
        if not seeds:
            return
        wanted = dict.fromkeys(self.studies, len(seeds)) if seed_counts is None else seed_counts
        self._wait_for_search()
        sources: dict[str, TrialPoint] = {}
        for optimizer, chosen in self.choices().items():
            if chosen is None or wanted.get(optimizer, 0) <= 0:
                continue  # nothing finished (or nothing wanted): nothing to confirm
            sources[optimizer] = chosen
            self.confirm[optimizer] = self._open_confirm(optimizer, chosen)
        mine = {o: seeds[: wanted[o]] for o in sources}
        for optimizer, own in mine.items():
            study = self.confirm[optimizer]
            counted = len(_seeds(study, sources[optimizer].number, counts_toward_budget))
            self.observer.study_started(optimizer, "confirm", counted, len(own))
        stopped: set[str] = set()
        while True:
            raise_if_interrupted()
            taken = {
                o: len(_seeds(self.confirm[o], sources[o].number) & set(own))
                for o, own in mine.items()
            }
            budgets = {o: len(own) for o, own in mine.items() if o not in stopped}
            turn = next_study(self.spec, taken, budgets, order)
            if turn is None:
                return
            if may_start is not None and not may_start(turn):
                stopped.add(turn)
                continue
            optimizer, study = turn, self.confirm[turn]
            source = sources[optimizer]
            _queue_missing_seeds(study, source.number, mine[optimizer])
            outcome = self._one(optimizer, study, None, "confirm", source)
            if outcome is not None:
                counted = len(_seeds(study, source.number, counts_toward_budget))
                self.observer.trial_finished(outcome, counted, len(mine[optimizer]))

    def _open_confirm(self, optimizer: str, source: TrialPoint) -> optuna.Study:
        study = optuna.create_study(
            study_name=confirm_study_name(self.spec, optimizer),
            storage=self.storage,
            sampler=optuna.samplers.RandomSampler(seed=0),  # confirmation draws nothing
            directions=directions(self.spec.objective),
            load_if_exists=True,
        )
        _describe(study, self.spec)
        reap_stale_trials(study)  # a killed worker's run comes back with its seed
        return study

    def _wait_for_search(self) -> None:
        """Confirmation needs the final best: wait while other workers' search trials run."""
        while True:
            for study in self.studies.values():
                reap_stale_trials(study)
            running = [
                t
                for study in self.studies.values()
                for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
            ]
            if not running:
                return
            waited = threading.Event()
            waited.wait(WAIT_POLL_SECONDS)
            raise_if_interrupted()


def _claims_seed(study: optuna.Study, trial: optuna.Trial, source: TrialPoint | None) -> bool:
    """A confirmation trial trains only a queued seed of the current choice that no earlier
    trial holds (two workers may both have queued it, or raced for one)."""
    seed = trial.user_attrs.get(CONTROL.confirm_seed)
    if (
        source is None
        or seed is None
        or trial.user_attrs.get(CONTROL.source_trial) != source.number
    ):
        return False
    return not any(
        t.number < trial.number
        and is_taken(t)
        and t.user_attrs.get(CONTROL.confirm_seed) == seed
        and t.user_attrs.get(CONTROL.source_trial) == source.number
        for t in study.get_trials(deepcopy=False)
    )


def _seeds(
    study: optuna.Study, source: int, holds: Callable[[FrozenTrial], bool] = is_taken
) -> set[int]:
    """Confirmation seeds of ``source`` held by a trial: taken (counted or running), or with
    ``holds=counts_toward_budget`` counted only."""
    return {
        int(t.user_attrs[CONTROL.confirm_seed])
        for t in study.get_trials(deepcopy=False)
        if holds(t)
        and t.user_attrs.get(CONTROL.source_trial) == source
        and t.user_attrs.get(CONTROL.confirm_seed) is not None
    }


def _queue_missing_seeds(study: optuna.Study, source: int, seeds: tuple[int, ...]) -> None:
    """Queue every seed of the current choice that no trial holds or waits for."""
    held = _seeds(study, source) | {
        int(t.user_attrs[CONTROL.confirm_seed])
        for t in study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
        if t.user_attrs.get(CONTROL.source_trial) == source
        and CONTROL.confirm_seed in t.user_attrs
    }
    for seed in seeds:
        if seed not in held:
            study.enqueue_trial(
                {}, user_attrs={CONTROL.confirm_seed: seed, CONTROL.source_trial: source}
            )


def summarize(
    spec: SweepSpec,
    optimizer: str,
    study: optuna.Study,
    confirm: optuna.Study | None,
    chosen: TrialPoint | None,
) -> StudySummary:
    """Counts, the confirmed configuration and its confirmation runs, read back from storage."""
    trials = study.get_trials(deepcopy=False)
    best = chosen
    runs: list[TrialPoint] = []
    if best is not None and confirm is not None:
        points = [point_from_trial(optimizer, t) for t in confirm.get_trials(deepcopy=False)]
        runs = confirmation_runs(best, points)
    return StudySummary(
        optimizer=optimizer,
        study_name=study.study_name,
        complete=sum(t.state == TrialState.COMPLETE for t in trials),
        pruned=sum(t.state == TrialState.PRUNED for t in trials),
        failed=sum(t.state == TrialState.FAIL for t in trials),
        best=best,
        confirmations=tuple(runs),
    )


def run_sweep(
    spec: SweepSpec,
    *,
    observer: SweepObserver | None = None,
    tracker: Tracker | None = None,
    order: str | None = None,
) -> SweepResult:
    """Run (or resume, or join) every optimizer's study until its budget is met, then confirm.

    KeyboardInterrupt marks the running trial failed ("interrupted"), enqueues it again and
    propagates after the studies are consistent; callers print the summary and exit 130.
    """
    order = order or spec.order
    if order not in ORDERS:
        raise SpecError(f"unknown order {order!r}; choose one of: {', '.join(ORDERS)}")
    validate_for_workload(spec)
    validate_trial_space(spec)  # WorkloadDataError or SpecError before any study exists
    observer = observer or QuietObserver()
    tracker = tracker or NullTracker()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    start = time.perf_counter()
    try:
        with interrupts_latched():
            sweep = _Sweep(spec, observer, tracker)
            sweep.start()
            sweep.search(order)
            sweep.confirmation(order)
            summaries = sweep.finish()
    finally:
        tracker.close()
    return SweepResult(spec, tuple(summaries), time.perf_counter() - start)


def _summary_metrics(summary: StudySummary) -> dict[str, float]:
    metrics = {
        "complete": float(summary.complete),
        "pruned": float(summary.pruned),
        "failed": float(summary.failed),
        "confirmed_runs": float(len(summary.confirmations)),
    }
    if summary.best is not None and summary.best.accuracy is not None:
        metrics["chosen_search_accuracy"] = summary.best.accuracy
    headline = headline_accuracy(summary.best, summary.confirmations)
    if headline is not None:
        metrics["headline_accuracy"] = headline.mean
    return metrics


__all__ = [
    "ORDERS",
    "StudySummary",
    "SweepObserver",
    "SweepResult",
    "TrialOutcome",
    "confirm_study_name",
    "next_study",
    "open_study",
    "run_sweep",
    "summarize",
    "validate_for_workload",
]
