"""Optuna studies for a sweep: one per optimizer, equal budgets, resumable, shareable by workers.

Budget rule (``n_trials``, or the grid's size with the grid sampler): a trial counts when it
COMPLETEs, is PRUNED, or FAILs for a reason its hyperparameters caused (diverged, out of memory).
Infrastructure failures — a worker killed or interrupted — do not count; their parameters are
enqueued again, so a re-run completes the budget. Workers sharing a storage stop asking for
trials once finished plus running trials fill the budget, and a trial that loses the race for the
last slot is failed as ``surplus`` before it trains, so together they complete exactly the budget
with distinct trial numbers.
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import socket
import statistics
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import optuna
from optuna.storages.journal import JournalFileBackend
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

from looksam.bench.runner import EpochRecord, RunConfig, RunResult, run_training
from looksam.bench.workloads import create_workload, get_workload_info
from looksam.optim import get_optimizer_info
from looksam.sweeps.redact import redact_url
from looksam.sweeps.spec import SpecError, SweepSpec, reference_params, scaled_lr, suggest
from looksam.sweeps.tracking import NullTracker, Tracker, TrialRecord

#: Failures caused by the hyperparameters: they use up budget like any other result.
BUDGET_FAILURES = ("diverged", "oom")
#: A RUNNING trial whose worker has not written a heartbeat for this long is taken as dead.
HEARTBEAT_SECONDS = 10.0
STALE_AFTER_SECONDS = 60.0
WORKER_ID = f"{socket.gethostname()}:{os.getpid()}"
#: Set by Ctrl-C; checked at every progress report so an interrupt cannot be lost (see below).
_INTERRUPTED = threading.Event()


@contextlib.contextmanager
def _interrupts_latched() -> Iterator[None]:
    """Make Ctrl-C stick: Python raises KeyboardInterrupt wherever the main thread is, and
    inside a weakref callback or ``__del__`` it is printed and swallowed, so the sweep would
    train on. The handler also sets a flag that progress reports check, which re-raises it."""
    _INTERRUPTED.clear()
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_sigint(signum: int, frame: object) -> None:
        _INTERRUPTED.set()
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _raise_if_interrupted() -> None:
    if _INTERRUPTED.is_set():
        raise KeyboardInterrupt


@dataclass(frozen=True)
class TrialOutcome:
    """What one trial did, for the live display and the summary."""

    optimizer: str
    number: int
    state: str
    params: dict[str, Any]
    values: tuple[float, ...] | None
    failure_reason: str | None
    mean_accuracy: float | None
    mean_seconds: float | None


@dataclass(frozen=True)
class StudySummary:
    """One optimizer's study after the sweep (or as far as it got)."""

    optimizer: str
    study_name: str
    complete: int
    pruned: int
    failed: int
    best: tuple[TrialOutcome, ...]  # Pareto front (pareto) or the single best trial


@dataclass(frozen=True)
class SweepResult:
    """The whole sweep: its spec, every study's summary and its wall-clock."""

    spec: SweepSpec
    studies: tuple[StudySummary, ...]
    wall_seconds: float


class SweepObserver(Protocol):
    """Receives progress events (the CLI renders them live; tests may record them)."""

    def study_started(self, optimizer: str, counted: int, budget: int) -> None: ...
    def trial_started(self, optimizer: str, number: int, params: dict[str, Any]) -> None: ...
    def epoch(self, optimizer: str, seed: int, step: int, total: int) -> None: ...
    def trial_finished(self, outcome: TrialOutcome, counted: int, budget: int) -> None: ...


class _QuietObserver:
    def study_started(self, optimizer: str, counted: int, budget: int) -> None:
        pass

    def trial_started(self, optimizer: str, number: int, params: dict[str, Any]) -> None:
        pass

    def epoch(self, optimizer: str, seed: int, step: int, total: int) -> None:
        pass

    def trial_finished(self, outcome: TrialOutcome, counted: int, budget: int) -> None:
        pass


# ---------------------------------------------------------------------- storage


def open_storage(url: str) -> optuna.storages.BaseStorage:
    """SQLite/PostgreSQL via Optuna's RDB storage, ``journal:PATH`` via its JournalStorage.

    Raises:
        SpecError: the storage cannot be opened (the message never shows a password).
    """
    try:
        if url.startswith("journal:"):
            path = Path(url.removeprefix("journal:"))
            path.parent.mkdir(parents=True, exist_ok=True)
            backend = JournalFileBackend(str(path))
            return optuna.storages.JournalStorage(backend)
        if url.startswith("sqlite:///"):
            Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        return _rdb_storage(url)
    except Exception as error:  # SQLAlchemy raises many kinds; all mean "cannot use it"
        first = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise SpecError(f"cannot open storage {redact_url(url)}: {redact_url(first)}") from None


#: Workers starting together on a fresh database race to create Optuna's tables; the loser
#: sees a duplicate-object error once the winner has committed, and simply tries again.
_SCHEMA_RACE = ("already exists", "duplicate key", "UniqueViolation")


def _rdb_storage(url: str, attempts: int = 5) -> optuna.storages.RDBStorage:
    engine_kwargs = {"pool_pre_ping": True} if not url.startswith("sqlite") else {}
    for attempt in range(attempts):
        try:
            return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs)
        except Exception as error:
            if attempt == attempts - 1 or not any(m in str(error) for m in _SCHEMA_RACE):
                raise
    raise AssertionError("unreachable")


class _GridSampler(optuna.samplers.GridSampler):
    """Optuna's grid sampler without its ``study.stop()`` once the grid is used up.

    That call only works inside ``study.optimize``; this module drives studies with ask/tell and
    stops at the budget (the grid's size) itself.
    """

    def after_trial(
        self,
        study: optuna.Study,
        trial: FrozenTrial,
        state: TrialState,
        values: Sequence[float] | None,
    ) -> None:
        return None


def _sampler(spec: SweepSpec, optimizer: str) -> optuna.samplers.BaseSampler:
    # Each study gets its own, deterministic seed derived from the sweep's.
    seed = spec.sampler_seed + spec.optimizers.index(optimizer)
    if spec.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if spec.sampler == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed)
    if spec.sampler == "gp":
        return optuna.samplers.GPSampler(seed=seed)
    if spec.sampler == "grid":
        return _GridSampler(spec.grid_for(optimizer), seed=seed)
    return optuna.samplers.TPESampler(seed=seed, multivariate=True)


def _pruner(spec: SweepSpec) -> optuna.pruners.BasePruner:
    if spec.pruner == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=1)
    if spec.pruner == "hyperband":
        return optuna.pruners.HyperbandPruner()
    return optuna.pruners.NopPruner()


def directions(objective: str) -> list[StudyDirection]:
    """Optuna directions for an objective."""
    up, down = StudyDirection.MAXIMIZE, StudyDirection.MINIMIZE
    if objective == "pareto":
        return [up, down]  # accuracy, training seconds
    if objective == "accuracy":
        return [up]
    return [down]  # time-to-target


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


def open_study(spec: SweepSpec, optimizer: str, storage: Any) -> optuna.Study:
    """Create or join the study for ``optimizer``; a new one starts at the paper's point."""
    study = optuna.create_study(
        study_name=spec.study_name(optimizer),
        storage=storage,
        sampler=_sampler(spec, optimizer),
        pruner=_pruner(spec),
        directions=directions(spec.objective),
        load_if_exists=True,
    )
    space = spec.space_for(optimizer)
    # A grid already contains every point worth running; a reference trial would run one twice.
    if space and spec.sampler != "grid" and not study.get_trials(deepcopy=False):
        defaults = _defaults(spec, optimizer)
        study.enqueue_trial(reference_params(space, defaults), user_attrs={"reference": True})
    study.set_user_attr("sweep", spec.name)
    return study


def _defaults(spec: SweepSpec, optimizer: str) -> dict[str, Any]:
    info = get_optimizer_info(optimizer)
    base = spec.base if info.wraps_base else None
    values: dict[str, Any] = {hp.name: hp.default for hp in info.all_hyperparameters(base)}
    wl = get_workload_info(spec.workload.name)
    if (base or optimizer) == "sgd":
        values["lr"] = wl.default_lr
    values["batch_size"] = spec.workload.batch_size or wl.default_batch_size
    return values


# ---------------------------------------------------------------------- budget and liveness


def counts_toward_budget(trial: FrozenTrial) -> bool:
    """COMPLETE, PRUNED, or FAIL for a hyperparameter-caused reason."""
    if trial.state in (TrialState.COMPLETE, TrialState.PRUNED):
        return True
    return trial.state == TrialState.FAIL and trial.user_attrs.get("failure_reason") in (
        BUDGET_FAILURES
    )


def _worker_alive(worker: str | None, last_seen: float) -> bool:
    """A worker on this host is alive iff its process is; elsewhere, iff it beat recently."""
    host, _, pid = (worker or "").rpartition(":")
    if host == socket.gethostname() and pid.isdigit():
        try:
            os.kill(int(pid), 0)  # signal 0: existence check only
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    return time.time() - last_seen < STALE_AFTER_SECONDS


def reap_stale_trials(study: optuna.Study) -> list[int]:
    """Fail trials left RUNNING by dead workers ("interrupted") and enqueue their parameters.

    A trial's last sign of life is its heartbeat, or its start while it has none yet: a trial
    another worker has just asked for is not stale merely because it has not written one.
    """
    reaped = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        worker = trial.user_attrs.get("worker")
        if worker == WORKER_ID:
            continue
        started = trial.datetime_start.timestamp() if trial.datetime_start else time.time()
        last_seen = float(trial.user_attrs.get("heartbeat", started))
        if _worker_alive(worker, last_seen):
            continue
        try:
            # Not our trial, so the public Trial API cannot write to it: use the storage.
            study._storage.set_trial_user_attr(trial._trial_id, "failure_reason", "interrupted")
            study.tell(trial.number, state=TrialState.FAIL)
        except optuna.exceptions.UpdateFinishedTrialError:
            continue  # it finished meanwhile, or another worker reaped it first
        study.enqueue_trial(trial.params, user_attrs={"retry_of": trial.number})
        reaped.append(trial.number)
    return reaped


class _Heartbeat:
    """Writes the worker's heartbeat into the trial every few seconds while it trains."""

    def __init__(self, trial: optuna.Trial) -> None:
        self._trial = trial
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, daemon=True)

    def _beat(self) -> None:
        while not self._stop.wait(HEARTBEAT_SECONDS):
            try:
                self._trial.set_user_attr("heartbeat", time.time())
            except Exception:  # a finished trial or a storage hiccup: the next beat may work
                continue

    def __enter__(self) -> _Heartbeat:
        self._trial.set_user_attr("heartbeat", time.time())
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


# ---------------------------------------------------------------------- one trial


def trial_configs(spec: SweepSpec, optimizer: str, params: dict[str, Any]) -> list[RunConfig]:
    """The runs (one per seed) that a trial's parameters stand for."""
    info = get_optimizer_info(optimizer)
    fixed = {**spec.fixed.get("common", {}), **spec.fixed.get(optimizer, {})}
    accepted = {hp.name for hp in info.all_hyperparameters(spec.base if info.wraps_base else None)}
    values = {k: v for k, v in {**fixed, **params}.items() if k in accepted or k == "batch_size"}
    wl = get_workload_info(spec.workload.name)
    batch_size = int(values.pop("batch_size", spec.workload.batch_size or wl.default_batch_size))
    lr = values.pop("lr", None)
    if spec.lr_scaling != "none":
        base_lr = lr if lr is not None else _defaults(spec, optimizer).get("lr")
        reference = spec.reference_batch_size or wl.default_batch_size
        if base_lr is not None:
            lr = scaled_lr(float(base_lr), batch_size, spec.lr_scaling, reference)
    warmup = RunConfig.warmup_fraction if spec.warmup_fraction is None else spec.warmup_fraction
    return [
        RunConfig(
            workload=spec.workload.name,
            optimizer=optimizer,
            base=spec.base if info.wraps_base else None,
            hyperparameters=values,
            lr=lr,
            batch_size=batch_size,
            epochs=spec.workload.epochs,
            seed=seed,
            device=spec.workload.device,
            amp=spec.workload.amp,
            data_dir=spec.workload.data_dir,
            warmup_fraction=warmup,
            rho_warmup_fraction=spec.rho_warmup_fraction,
        )
        for seed in spec.seeds
    ]


def _used_hyperparameters(
    spec: SweepSpec, optimizer: str, params: dict[str, Any]
) -> dict[str, Any]:
    """Everything the trial trained with, fixed values included (trial.params holds only the
    searched ones): reports show this, so a grid of fixed points still names its settings."""
    config = trial_configs(spec, optimizer, params)[0]
    used = dict(config.hyperparameters)
    if config.lr is not None:
        used["lr"] = config.lr
    if "batch_size" in params or spec.workload.batch_size is not None:
        used["batch_size"] = config.batch_size
    return used


def _mean_curve(results: Sequence[RunResult]) -> list[float]:
    """Test accuracy per epoch, averaged over the seeds that reached that epoch."""
    by_epoch: dict[int, list[float]] = {}
    for result in results:
        for record in result.history:
            if record.test_accuracy is not None:
                by_epoch.setdefault(record.epoch, []).append(record.test_accuracy)
    return [round(statistics.fmean(v), 5) for _, v in sorted(by_epoch.items())]


def _objective_values(spec: SweepSpec, results: Sequence[RunResult]) -> tuple[float, ...]:
    accuracy = statistics.fmean(r.final_accuracy or 0.0 for r in results)
    seconds = statistics.fmean(r.train_seconds for r in results)
    if spec.objective == "pareto":
        return (accuracy, seconds)
    if spec.objective == "accuracy":
        return (accuracy,)
    reached = [r.time_to_target_seconds for r in results]
    if any(t is None for t in reached):
        return (math.inf,)  # AlgoPerf: not reaching the target fails the target
    return (statistics.fmean(t for t in reached if t is not None),)


@dataclass
class _TrialRun:
    spec: SweepSpec
    optimizer: str
    study: optuna.Study
    trial: optuna.Trial
    observer: SweepObserver
    tracker: Tracker
    results: list[RunResult] = field(default_factory=list)
    started: float = field(default_factory=time.perf_counter)
    told: bool = False  # the storage has this trial's final state

    def _progress(self, seed: int) -> Callable[[int, int, EpochRecord | None], None]:
        def report(step: int, total: int, record: EpochRecord | None) -> None:
            _raise_if_interrupted()
            self.observer.epoch(self.optimizer, seed, step, total)
            if (
                record is not None
                and seed == self.spec.seeds[0]
                and self.spec.objective == "accuracy"
                and record.test_accuracy is not None
            ):
                self.trial.report(record.test_accuracy, record.epoch)
                if self.trial.should_prune():
                    raise optuna.TrialPruned(f"pruned at epoch {record.epoch}")

        return report

    def run(self) -> TrialOutcome:
        params = suggest(self.trial, self.spec.space_for(self.optimizer))
        self.observer.trial_started(self.optimizer, self.trial.number, params)
        state, reason, values = TrialState.COMPLETE, None, None
        try:
            with _Heartbeat(self.trial):
                for config in trial_configs(self.spec, self.optimizer, params):
                    result = run_training(config, progress=self._progress(config.seed))
                    self.results.append(result)
                    if result.status != "ok":
                        state, reason = TrialState.FAIL, result.status
                        break
        except optuna.TrialPruned:
            state = TrialState.PRUNED
        except KeyboardInterrupt:
            self._finish(params, TrialState.FAIL, "interrupted", None)
            self.study.enqueue_trial(params, user_attrs={"retry_of": self.trial.number})
            raise
        except Exception as error:  # a bug or bad data: record it, then let it surface
            self._finish(params, TrialState.FAIL, f"error: {type(error).__name__}", None)
            raise
        if state == TrialState.COMPLETE:
            values = _objective_values(self.spec, self.results)
        return self._finish(params, state, reason, values)

    def _finish(
        self,
        params: dict[str, Any],
        state: TrialState,
        reason: str | None,
        values: tuple[float, ...] | None,
    ) -> TrialOutcome:
        accuracies = [r.final_accuracy for r in self.results if r.final_accuracy is not None]
        seconds = [r.train_seconds for r in self.results]
        attrs: dict[str, Any] = {
            "seed_accuracies": accuracies,
            "seed_train_seconds": seconds,
            "seed_samples_per_second": [r.samples_per_second for r in self.results],
            "seed_time_to_target": [r.time_to_target_seconds for r in self.results],
            "seeds": list(self.spec.seeds[: len(self.results)]),
            "curve_accuracy": _mean_curve(self.results),  # reports draw learning curves from it
            "hyperparameters": _used_hyperparameters(self.spec, self.optimizer, params),
        }
        if reason is not None:
            attrs["failure_reason"] = reason
        tracking_start = time.perf_counter()
        run_id = self.tracker.log_trial(
            TrialRecord(
                study_name=self.study.study_name,
                trial_number=self.trial.number,
                optimizer=self.optimizer,
                params=params,
                state=state.name,
                failure_reason=reason,
                results=tuple(self.results),
                objective_values=values,
            )
        )
        if run_id is not None:
            attrs["mlflow_run_id"] = run_id
            # Tracking cost against the trial's own wall-clock: the "< 1 %" budget, measured.
            attrs["tracking_seconds"] = time.perf_counter() - tracking_start
        attrs["trial_seconds"] = time.perf_counter() - self.started
        for key, value in attrs.items():
            self.trial.set_user_attr(key, value)
        if state == TrialState.COMPLETE:
            self.study.tell(self.trial, list(values or ()))
        else:
            self.study.tell(self.trial, state=state)
        self.told = True
        return TrialOutcome(
            optimizer=self.optimizer,
            number=self.trial.number,
            state=state.name,
            params=params,
            values=values,
            failure_reason=reason,
            mean_accuracy=statistics.fmean(accuracies) if accuracies else None,
            mean_seconds=statistics.fmean(seconds) if seconds else None,
        )


# ---------------------------------------------------------------------- the sweep


def _outcome_of(optimizer: str, trial: FrozenTrial) -> TrialOutcome:
    accuracies = trial.user_attrs.get("seed_accuracies") or []
    seconds = trial.user_attrs.get("seed_train_seconds") or []
    return TrialOutcome(
        optimizer=optimizer,
        number=trial.number,
        state=trial.state.name,
        params=dict(trial.params),
        values=tuple(trial.values) if trial.values is not None else None,
        failure_reason=trial.user_attrs.get("failure_reason"),
        mean_accuracy=statistics.fmean(accuracies) if accuracies else None,
        mean_seconds=statistics.fmean(seconds) if seconds else None,
    )


def summarize(spec: SweepSpec, optimizer: str, study: optuna.Study) -> StudySummary:
    """Counts and best trials of one study, read back from the storage."""
    trials = study.get_trials(deepcopy=False)
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    if not complete:
        best: list[FrozenTrial] = []
    elif spec.objective == "pareto":
        best = sorted(study.best_trials, key=lambda t: t.number)
    else:
        best = [study.best_trial]
    return StudySummary(
        optimizer=optimizer,
        study_name=study.study_name,
        complete=len(complete),
        pruned=sum(t.state == TrialState.PRUNED for t in trials),
        failed=sum(t.state == TrialState.FAIL for t in trials),
        best=tuple(_outcome_of(optimizer, t) for t in best),
    )


def run_sweep(
    spec: SweepSpec,
    *,
    observer: SweepObserver | None = None,
    tracker: Tracker | None = None,
) -> SweepResult:
    """Run (or resume, or join) every optimizer's study until its budget is met.

    KeyboardInterrupt marks the running trial failed ("interrupted"), enqueues it again and
    propagates after the studies are consistent; callers print the summary and exit 130.
    """
    validate_for_workload(spec)
    data_dir = Path(spec.workload.data_dir) if spec.workload.data_dir else None
    create_workload(spec.workload.name, data_dir=data_dir)  # WorkloadDataError before any study
    observer = observer or _QuietObserver()
    tracker = tracker or NullTracker()
    storage = open_storage(spec.storage)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    start = time.perf_counter()
    summaries: list[StudySummary] = []
    try:
        with _interrupts_latched():
            for optimizer in spec.optimizers:
                study = open_study(spec, optimizer, storage)
                tracker.start_study(spec.name, study.study_name, optimizer, spec.to_dict())
                reap_stale_trials(study)
                _fill_budget(spec, optimizer, study, observer, tracker)
                summary = summarize(spec, optimizer, study)
                summaries.append(summary)
                tracker.end_study(study.study_name, _summary_metrics(summary))
    finally:
        tracker.close()
    return SweepResult(spec, tuple(summaries), time.perf_counter() - start)


def _summary_metrics(summary: StudySummary) -> dict[str, float]:
    metrics = {
        "complete": float(summary.complete),
        "pruned": float(summary.pruned),
        "failed": float(summary.failed),
    }
    accuracies = [b.mean_accuracy for b in summary.best if b.mean_accuracy is not None]
    if accuracies:
        metrics["best_accuracy"] = max(accuracies)
    return metrics


def _fill_budget(
    spec: SweepSpec,
    optimizer: str,
    study: optuna.Study,
    observer: SweepObserver,
    tracker: Tracker,
) -> None:
    deadline = time.monotonic() + spec.timeout if spec.timeout else math.inf
    budget = spec.budget_for(optimizer)
    counted = sum(counts_toward_budget(t) for t in study.get_trials(deepcopy=False))
    observer.study_started(optimizer, counted, budget)
    while time.monotonic() < deadline:
        trials = study.get_trials(deepcopy=False)
        counted = sum(counts_toward_budget(t) for t in trials)
        running = sum(t.state == TrialState.RUNNING for t in trials)
        if counted + running >= budget:
            return
        trial: optuna.Trial | None = None
        run: _TrialRun | None = None
        _raise_if_interrupted()
        try:
            trial = study.ask()
            run = _TrialRun(spec, optimizer, study, trial, observer, tracker)
            trial.set_user_attr("worker", WORKER_ID)
            ahead = [
                t
                for t in study.get_trials(deepcopy=False)
                if t.number < trial.number
                and (counts_toward_budget(t) or t.state == TrialState.RUNNING)
            ]
            if len(ahead) >= budget:  # another worker took the last slot first
                trial.set_user_attr("failure_reason", "surplus")
                study.tell(trial, state=TrialState.FAIL)
                return
            outcome = run.run()
        except KeyboardInterrupt:
            # Ctrl-C outside the training itself (asking, suggesting, telling): the trial must
            # still end as "interrupted" and come back, never stay RUNNING under a live worker.
            if trial is not None and (run is None or not run.told):
                trial.set_user_attr("failure_reason", "interrupted")
                study.tell(trial, state=TrialState.FAIL)
                study.enqueue_trial(trial.params, user_attrs={"retry_of": trial.number})
            raise
        counted = sum(counts_toward_budget(t) for t in study.get_trials(deepcopy=False))
        observer.trial_finished(outcome, counted, budget)
