"""One trial of a sweep: train its seeds, time it paired against the base, judge contention.

A search trial draws its hyperparameters from the study's sampler; a confirmation trial trains
the chosen configuration once more on one fresh seed. Both end the same way: the paired
measurement (:mod:`looksam.bench.paired`) gives the trial's cost relative to the base optimizer,
every seed's own step times are checked against it, and the results go to Optuna (user
attributes, objective values) and the tracker in one place.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import optuna
from optuna.trial import TrialState

from looksam.bench.paired import PairedCost, contention, measure_paired_cost
from looksam.optim import get_optimizer_info
from looksam.reports.model import TrialPoint
from looksam.stats import quiet_speed
from looksam.sweeps._liveness import (
    Heartbeat,
    is_taken,
    raise_if_interrupted,
    requeue,
)
from looksam.sweeps.results import point_from_attrs
from looksam.sweeps.schema import (
    CONTROL,
    CURVE_ATTR,
    paired_metrics,
    sweep_tags,
    trial_attrs,
    with_paired_cost,
    write_trial_attrs,
)
from looksam.sweeps.spec import SweepSpec, scaled_lr, suggest
from looksam.sweeps.tracking import Tracker, TrialRecord
from looksam.train.runner import EpochRecord, RunConfig, RunResult, run_training
from looksam.train.workloads import get_workload_info


@dataclass(frozen=True)
class TrialOutcome:
    """What one trial did, for the live display and the summary."""

    optimizer: str
    number: int
    state: str
    stage: str
    params: dict[str, Any]
    values: tuple[float, ...] | None
    failure_reason: str | None
    point: TrialPoint


class SweepObserver(Protocol):
    """Receives progress events (the CLI renders them live; tests may record them)."""

    def study_started(self, optimizer: str, stage: str, counted: int, budget: int) -> None: ...
    def trial_started(self, optimizer: str, number: int, params: dict[str, Any]) -> None: ...
    def epoch(self, optimizer: str, seed: int, step: int, total: int) -> None: ...
    def trial_finished(self, outcome: TrialOutcome, counted: int, budget: int) -> None: ...


class QuietObserver:
    """An observer that shows nothing (library use, tests)."""

    def study_started(self, optimizer: str, stage: str, counted: int, budget: int) -> None:
        pass

    def trial_started(self, optimizer: str, number: int, params: dict[str, Any]) -> None:
        pass

    def epoch(self, optimizer: str, seed: int, step: int, total: int) -> None:
        pass

    def trial_finished(self, outcome: TrialOutcome, counted: int, budget: int) -> None:
        pass


#: How often a running trial's learning curve is written to the storage, at most.
CURVE_WRITE_SECONDS = 2.0


def defaults(spec: SweepSpec, optimizer: str) -> dict[str, Any]:
    """The registry's defaults for ``optimizer`` with the workload's SGD rate and batch size."""
    info = get_optimizer_info(optimizer)
    base = spec.base if info.wraps_base else None
    values: dict[str, Any] = {hp.name: hp.default for hp in info.all_hyperparameters(base)}
    wl = get_workload_info(spec.workload.name)
    if get_optimizer_info(base or optimizer).uses_workload_lr:
        values["lr"] = wl.default_lr  # the workload's tuned rate for this base, as `run` uses
    values["batch_size"] = spec.workload.batch_size or wl.default_batch_size
    return values


def reference_batch_size(spec: SweepSpec) -> int:
    """The batch size at which every trial's per-sample cost is expressed (and LR scaled)."""
    wl = get_workload_info(spec.workload.name)
    return spec.reference_batch_size or spec.workload.batch_size or wl.default_batch_size


def trial_configs(
    spec: SweepSpec, optimizer: str, params: dict[str, Any], seeds: Sequence[int] | None = None
) -> list[RunConfig]:
    """The runs (one per seed; the spec's seeds unless given) a trial's parameters stand for."""
    info = get_optimizer_info(optimizer)
    fixed = {**spec.fixed.get("common", {}), **spec.fixed.get(optimizer, {})}
    accepted = {hp.name for hp in info.all_hyperparameters(spec.base if info.wraps_base else None)}
    values = {k: v for k, v in {**fixed, **params}.items() if k in accepted or k == "batch_size"}
    wl = get_workload_info(spec.workload.name)
    batch_size = int(values.pop("batch_size", spec.workload.batch_size or wl.default_batch_size))
    lr = values.pop("lr", None)
    if spec.lr_scaling != "none":
        base_lr = lr if lr is not None else defaults(spec, optimizer).get("lr")
        reference = spec.reference_batch_size or wl.default_batch_size
        if base_lr is not None:
            lr = scaled_lr(float(base_lr), batch_size, spec.lr_scaling, reference)
    warmup = RunConfig.warmup_fraction if spec.warmup_fraction is None else spec.warmup_fraction
    return [
        spec.workload.run_config(
            optimizer,
            base=spec.base if info.wraps_base else None,
            hyperparameters=values,
            lr=lr,
            batch_size=batch_size,
            seed=seed,
            warmup_fraction=warmup,
            rho_warmup_fraction=spec.rho_warmup_fraction,
        )
        for seed in (spec.seeds if seeds is None else seeds)
    ]


def used_hyperparameters(
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


def mean_curve(results: Sequence[RunResult]) -> list[float]:
    """Test accuracy per epoch, averaged over the seeds that reached that epoch."""
    by_epoch: dict[int, list[float]] = {}
    for result in results:
        for record in result.history:
            if record.test_accuracy is not None:
                by_epoch.setdefault(record.epoch, []).append(record.test_accuracy)
    return [round(statistics.fmean(v), 5) for _, v in sorted(by_epoch.items())]


def paired_costs(
    spec: SweepSpec, results: Sequence[RunResult], paired: PairedCost
) -> tuple[float, float | None]:
    """The trial's paired cost, and its cost until the target, in reference steps.

    A run's cost is the samples it trained times its paired per-sample cost, over the reference
    batch size: how many steps of the base optimizer at that batch size take as long. It rests
    on paired ratios only, never on how busy the machine was while the run trained. The cost to
    the target is None unless every seed reached it (AlgoPerf: else the target was failed).
    """
    per_sample = paired.per_sample_ratio / reference_batch_size(spec)
    cost = statistics.fmean(r.steps * (r.config.batch_size or 0) for r in results) * per_sample
    reached = [r.target_step for r in results]
    if not results or any(t is None for t in reached):
        return cost, None
    samples = [
        (t or 0) * (r.config.batch_size or 0) for t, r in zip(reached, results, strict=True)
    ]
    return cost, statistics.fmean(samples) * per_sample


def objective_values(
    spec: SweepSpec, results: Sequence[RunResult], paired: PairedCost
) -> tuple[float, ...]:
    """What Optuna optimises: mean accuracy over the seeds, and/or the paired cost."""
    accuracy = statistics.fmean(r.final_accuracy or 0.0 for r in results)
    cost, to_target = paired_costs(spec, results, paired)
    if spec.objective == "pareto":
        return (accuracy, cost)
    if spec.objective == "accuracy":
        return (accuracy,)
    return (math.inf if to_target is None else to_target,)


def repeats_a_point(study: optuna.Study, trial: optuna.Trial, params: dict[str, Any]) -> bool:
    """Whether an earlier trial that counts or runs already has exactly these parameters.

    A re-queued trial repeats its own interrupted attempt on purpose (``retry_of``); that
    attempt failed and holds no slot, so it is not matched here.
    """
    if not params:
        return False
    return any(
        t.number < trial.number and is_taken(t) and t.params == params
        for t in study.get_trials(deepcopy=False)
    )


@dataclass
class TrialRun:
    """Train, time and record one trial of ``study`` (search or confirmation)."""

    spec: SweepSpec
    optimizer: str
    study: optuna.Study
    trial: optuna.Trial
    observer: SweepObserver
    tracker: Tracker
    parent_study: str  # the search study's name: MLflow's parent run
    quiet_pool: Callable[[], list[float]]  # reference seconds/sample measured so far
    stage: str = "search"
    source_params: dict[str, Any] | None = None  # confirm: the chosen configuration
    seeds: tuple[int, ...] | None = None  # confirm: its one fresh seed
    results: list[RunResult] = field(default_factory=list)
    told: bool = False  # the storage has this trial's final state

    def _progress(self, seed: int) -> Callable[[int, int, EpochRecord | None], None]:
        """Per epoch of the trial's first seed: its accuracy so far in the ``curve_accuracy``
        user attribute (all studies: Optuna keeps no intermediate values for multi-objective
        ones, ``Trial.report`` raises there), and for a searched accuracy objective
        ``Trial.report`` too, so a pruner can stop the trial. The attribute becomes the mean
        over seeds when the trial ends."""
        prune = self.stage == "search" and self.spec.objective == "accuracy"
        first = seed == (self.seeds or self.spec.seeds)[0]
        curve: list[float] = []
        written = [-math.inf]  # when the curve last went to the storage (monotonic seconds)

        def report(step: int, total: int, record: EpochRecord | None) -> None:
            raise_if_interrupted()
            self.observer.epoch(self.optimizer, seed, step, total)
            if first and record is not None and record.test_accuracy is not None:
                curve.append(round(record.test_accuracy, 5))
                # A storage write per epoch would cost a remote database more than a digits
                # epoch trains; dashboards need the curve every few seconds, not every epoch.
                if time.monotonic() - written[0] >= CURVE_WRITE_SECONDS:
                    self.trial.set_user_attr(CURVE_ATTR, list(curve))
                    written[0] = time.monotonic()
            if (
                prune
                and record is not None
                and seed == self.spec.seeds[0]
                and record.test_accuracy is not None
            ):
                self.trial.report(record.test_accuracy, record.epoch)
                if self.trial.should_prune():
                    raise optuna.TrialPruned(f"pruned at epoch {record.epoch}")

        return report

    def run(self) -> TrialOutcome:
        """Train every seed, then measure and record; Ctrl-C re-queues the trial."""
        if self.source_params is None:
            params = suggest(self.trial, self.spec.space_for(self.optimizer))
        else:
            params = dict(self.source_params)
        if self.stage == "search" and repeats_a_point(self.study, self.trial, params):
            return self._finish(params, TrialState.FAIL, "duplicate", None, None)
        self.observer.trial_started(self.optimizer, self.trial.number, params)
        state, reason, values, paired = TrialState.COMPLETE, None, None, None
        try:
            with Heartbeat(self.trial):
                configs = trial_configs(self.spec, self.optimizer, params, self.seeds)
                for config in configs:
                    result = run_training(config, progress=self._progress(config.seed))
                    self.results.append(result)
                    if result.status != "ok":
                        state, reason = TrialState.FAIL, result.status
                        break
                if state == TrialState.COMPLETE:
                    paired = measure_paired_cost(
                        configs[0],
                        self.spec.base,
                        reference_batch_size(self.spec),
                        rounds=self.spec.timing_rounds,
                        steps_per_round=self.spec.timing_steps,
                        second_pass_share=_measured_share(self.results),
                    )
        except optuna.TrialPruned:
            state = TrialState.PRUNED
        except KeyboardInterrupt:
            self._finish(params, TrialState.FAIL, "interrupted", None, None)
            requeue(self.study, self.trial.number, self.trial.params, self.trial.user_attrs)
            raise
        except Exception as error:  # a bug or bad data: record it, then let it surface
            self._finish(params, TrialState.FAIL, f"error: {type(error).__name__}", None, None)
            raise
        if paired is not None:
            values = objective_values(self.spec, self.results, paired)
        return self._finish(params, state, reason, values, paired)

    def _finish(
        self,
        params: dict[str, Any],
        state: TrialState,
        reason: str | None,
        values: tuple[float, ...] | None,
        paired: PairedCost | None,
    ) -> TrialOutcome:
        results = self.results
        used = used_hyperparameters(self.spec, self.optimizer, params)
        # the mean curve over seeds replaces the first seed's: reports draw learning curves from it
        stored = trial_attrs(self.stage, results, mean_curve(results), used, self.source_params)
        stored = dataclasses.replace(stored, failure_reason=reason)
        if paired is not None:
            costs = paired_costs(self.spec, results, paired)
            stored = with_paired_cost(stored, paired, costs, self._contention(paired))
        point = point_from_attrs(
            self.optimizer, self.trial.number, state.name, params, stored, values
        )
        if reason != "duplicate":  # it trained nothing: no run to track
            attrs = self.trial.user_attrs
            tags = sweep_tags(
                self.stage,
                stored.contention,
                timed=paired is not None,
                confirm_seed=attrs.get(CONTROL.confirm_seed),
                source_trial=attrs.get(CONTROL.source_trial),
            )
            metrics = {} if paired is None else paired_metrics(paired)
            run_id = self._track(params, state, reason, values, tags, metrics)
            if run_id is not None:
                stored = dataclasses.replace(stored, mlflow_run_id=run_id)
        write_trial_attrs(self.trial, stored)
        if state == TrialState.COMPLETE:
            self.study.tell(self.trial, list(values or ()))
        else:  # its failure_reason, if any, was written with the other attributes
            self.study.tell(self.trial, state=state)
        self.told = True
        return TrialOutcome(
            optimizer=self.optimizer,
            number=self.trial.number,
            state=state.name,
            stage=self.stage,
            params=params,
            values=values,
            failure_reason=reason,
            point=point,
        )

    def _contention(self, paired: PairedCost) -> str | None:
        """The first reason the trial's runs disagree with its paired cost (None: they agree)."""
        quiet = quiet_speed([*self.quiet_pool(), paired.reference_seconds_per_sample])
        reasons = [why for r in self.results if quiet and (why := contention(r, paired, quiet))]
        return reasons[0] if reasons else None

    def _track(
        self,
        params: dict[str, Any],
        state: TrialState,
        reason: str | None,
        values: tuple[float, ...] | None,
        tags: dict[str, str],
        metrics: dict[str, float],
    ) -> str | None:
        return self.tracker.log_trial(
            TrialRecord(
                study_name=self.parent_study,
                trial_number=self.trial.number,
                optimizer=self.optimizer,
                params=params,
                state=state.name,
                failure_reason=reason,
                results=tuple(self.results),
                objective_values=values,
                tags=tags,
                metrics=metrics,
            )
        )


def _measured_share(results: Sequence[RunResult]) -> float | None:
    """The trained runs' mean share of second-pass steps (what an adaptive rule really chose)."""
    shares = [f for r in results if (f := r.second_pass_fraction) is not None]
    return statistics.fmean(shares) if shares else None
