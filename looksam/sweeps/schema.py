"""What a sweep stores, in one place: a trial's Optuna user attributes, its MLflow names, the
version stamped on every study.

A trial's results travel from the trial runner (:mod:`looksam.sweeps._trial`) through Optuna's
user attributes to the report reader (:mod:`looksam.sweeps.results`), and through the tracker
(:mod:`looksam.sweeps.tracking`) to MLflow. Writer and readers agree because both go through
:class:`TrialAttrs` and the name tables here, not through string keys of their own.

Stores written before the version existed carry none and read as version 0: every field of
:class:`TrialAttrs` has a default, so a key an older sweep did not write reads as "unknown". A
store stamped with a newer version than this code knows is refused (:func:`check_version`):
its trials may mean something this code would misreport.
"""

from __future__ import annotations

import dataclasses
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from looksam.reports.summary import speed_from_ratio
from looksam.sweeps.spec import SpecError

if TYPE_CHECKING:
    from looksam.bench.paired import PairedCost
    from looksam.train.runner import RunResult

#: The version of what this code writes; raise it when a stored name or meaning changes.
SCHEMA_VERSION = 1
#: The study user attribute holding the version its trials were written with.
VERSION_ATTR = "looksam_schema_version"
#: The trial attribute the running trial rewrites every few seconds (its learning curve).
CURVE_ATTR = "curve_accuracy"


@dataclass(frozen=True)
class TrialAttrs:
    """A trial's Optuna user attributes: written once when it ends, read by every report.

    Every field has a default, so a trial that failed early, or one stored by an older
    version, reads back with what it has and "unknown" for the rest.
    """

    stage: str = "search"  # or "confirm"
    seeds: tuple[int, ...] = ()
    seed_accuracies: tuple[float, ...] = ()  # final test accuracy of each seed that has one
    seed_train_seconds: tuple[float, ...] = ()  # raw wall-clock, evaluation excluded
    seed_samples_per_second: tuple[float, ...] = ()
    seed_time_to_target: tuple[float | None, ...] = ()  # None: that seed missed the target
    seed_samples: tuple[float, ...] = ()  # samples each seed trained
    passes_per_step: float | None = None  # measured, mean over the seeds that took a step
    curve_accuracy: tuple[float, ...] = ()  # mean test accuracy per epoch
    hyperparameters: dict[str, Any] = field(default_factory=dict)  # fixed values included
    source_params: dict[str, Any] | None = None  # confirm: the configuration it re-runs
    source_trial: int | None = None  # confirm: queued with it (study.py), never rewritten
    failure_reason: str | None = None
    paired_ratios: tuple[float, ...] = ()  # per round: step time / the base's, same batch
    paired_costs: tuple[float, ...] = ()  # per round: per-sample time / the base's
    reference_seconds_per_sample: float | None = None  # the base in this trial's rounds
    cost: float | None = None  # paired, in base steps at the reference batch size
    cost_to_target: float | None = None  # paired, until the target (every seed reached it)
    contended: bool = False
    contention: str | None = None  # why its own step times disagree with the paired cost
    mlflow_run_id: str | None = None

    def to_user_attrs(self) -> dict[str, Any]:
        """JSON-ready attributes; None is not written (it reads back as None anyway), and the
        queue's ``source_trial`` is left as the queue wrote it."""
        stored: dict[str, Any] = {}
        for name, value in dataclasses.asdict(self).items():
            if value is None or name == "source_trial":
                continue
            stored[name] = list(value) if isinstance(value, tuple) else value
        return stored

    @classmethod
    def from_user_attrs(cls, attrs: Mapping[str, Any]) -> TrialAttrs:
        """Read stored attributes, tolerating any that are missing (older stores)."""
        get = attrs.get
        source_params = get("source_params")
        source_trial = get("source_trial")
        return cls(
            stage=str(get("stage", "search")),
            seeds=tuple(int(s) for s in get("seeds") or ()),
            seed_accuracies=_floats(get("seed_accuracies")),
            seed_train_seconds=_floats(get("seed_train_seconds")),
            seed_samples_per_second=_floats(get("seed_samples_per_second")),
            seed_time_to_target=tuple(
                None if t is None else float(t) for t in get("seed_time_to_target") or ()
            ),
            seed_samples=_floats(get("seed_samples")),
            passes_per_step=_optional_float(get("passes_per_step")),
            curve_accuracy=_floats(get(CURVE_ATTR)),
            hyperparameters=dict(get("hyperparameters") or {}),
            source_params=None if source_params is None else dict(source_params),
            source_trial=None if source_trial is None else int(source_trial),
            failure_reason=get("failure_reason"),
            paired_ratios=_floats(get("paired_ratios")),
            paired_costs=_floats(get("paired_costs")),
            reference_seconds_per_sample=_optional_float(get("reference_seconds_per_sample")),
            cost=_optional_float(get("cost")),
            cost_to_target=_optional_float(get("cost_to_target")),
            contended=bool(get("contended", False)),
            contention=get("contention"),
            mlflow_run_id=get("mlflow_run_id"),
        )


class _AttrSink(Protocol):
    def set_user_attr(self, key: str, value: Any) -> None: ...


def write_trial_attrs(trial: _AttrSink, attrs: TrialAttrs) -> None:
    """Store ``attrs`` as the trial's user attributes (the trial runner's one write)."""
    for key, value in attrs.to_user_attrs().items():
        trial.set_user_attr(key, value)


def read_trial_attrs(attrs: Mapping[str, Any]) -> TrialAttrs:
    """A stored trial's attributes (the results reader's one read)."""
    return TrialAttrs.from_user_attrs(attrs)


def trial_attrs(
    stage: str,
    results: Sequence[RunResult],
    curve: Sequence[float],
    hyperparameters: Mapping[str, Any],
    source_params: Mapping[str, Any] | None = None,
) -> TrialAttrs:
    """What a finished trial stores of its runs (its failure, and its paired cost when it was
    timed, are added with :func:`dataclasses.replace` and :func:`with_paired_cost`)."""
    passes = [p for r in results if (p := r.passes_per_step) is not None]
    return TrialAttrs(
        stage=stage,
        seeds=tuple(r.config.seed for r in results),
        seed_accuracies=tuple(r.final_accuracy for r in results if r.final_accuracy is not None),
        seed_train_seconds=tuple(r.train_seconds for r in results),
        seed_samples_per_second=tuple(r.samples_per_second for r in results),
        seed_time_to_target=tuple(r.time_to_target_seconds for r in results),
        seed_samples=tuple(r.steps * (r.config.batch_size or 0) for r in results),
        passes_per_step=statistics.fmean(passes) if passes else None,
        curve_accuracy=tuple(curve),
        hyperparameters=dict(hyperparameters),
        source_params=None if source_params is None else dict(source_params),
    )


def with_paired_cost(
    attrs: TrialAttrs,
    paired: PairedCost,
    costs: tuple[float, float | None],
    contention: str | None,
) -> TrialAttrs:
    """``attrs`` with the trial's paired measurement: its rounds, its cost and cost to the
    target, and the first reason its own runs disagree with it (None: they agree)."""
    cost, to_target = costs
    return dataclasses.replace(
        attrs,
        paired_ratios=paired.same_batch_ratios,
        paired_costs=paired.per_sample_ratios,
        reference_seconds_per_sample=paired.reference_seconds_per_sample,
        cost=cost,
        cost_to_target=to_target,
        contended=contention is not None,
        contention=contention,
    )


@dataclass(frozen=True)
class _TagNames:
    """MLflow tag names of a sweep's runs (the UI's columns and filters)."""

    user: str = "mlflow.user"
    role: str = "looksam.role"  # "study" (parent run) or "trial" (child run)
    sweep: str = "looksam.sweep"
    study: str = "looksam.study"
    optimizer: str = "looksam.optimizer"
    spec: str = "looksam.spec"
    trial_number: str = "looksam.trial_number"
    state: str = "looksam.state"
    failure_reason: str = "looksam.failure_reason"
    device: str = "looksam.device"
    device_name: str = "looksam.device_name"
    torch_version: str = "looksam.torch_version"
    timm_version: str = "looksam.timm_version"
    git_commit: str = "looksam.git_commit"
    seed_status: str = "looksam.seed_status"
    message: str = "looksam.message"
    stage: str = "looksam.stage"
    contended: str = "looksam.contended"
    contention: str = "looksam.contention"
    confirm_seed: str = "looksam.confirm_seed"
    source_trial: str = "looksam.source_trial"
    #: A trial run's record id, by which a retried write finds an earlier, partial try.
    record_id: str = "looksam.record_id"


@dataclass(frozen=True)
class _MetricNames:
    """MLflow metric names of a trial's run: curves per epoch, then final values."""

    test_accuracy: str = "test_accuracy"  # per epoch, mean over seeds
    train_loss: str = "train_loss"  # per epoch, mean over seeds
    final_accuracy: str = "final_accuracy"
    best_accuracy: str = "best_accuracy"
    train_seconds: str = "train_seconds"
    samples_per_second: str = "samples_per_second"
    forward_backward_passes: str = "forward_backward_passes"
    passes_per_step: str = "passes_per_step"
    second_pass_fraction: str = "second_pass_fraction"
    time_to_target_seconds: str = "time_to_target_seconds"
    seeds_reached_target: str = "seeds_reached_target"
    paired_ratio: str = "paired_ratio"
    speed_vs_base: str = "speed_vs_base"
    paired_cost: str = "paired_cost"

    def seed_test_accuracy(self, seed: int) -> str:
        """One seed's own curve (written when a trial trains several)."""
        return f"seed{seed}/{self.test_accuracy}"

    def objective(self, index: int) -> str:
        """Optuna's objective value number ``index``."""
        return f"objective_{index}"


@dataclass(frozen=True)
class _ParamNames:
    """MLflow params of a trial's run besides its suggested hyperparameters."""

    optimizer: str = "optimizer"
    workload: str = "workload"
    base: str = "base"
    seeds: str = "seeds"


@dataclass(frozen=True)
class _ControlNames:
    """Trial user attributes the scheduler writes and reads to run the sweep (not results):
    who runs a trial, whether it is alive, and what a queued trial stands for."""

    worker: str = "worker"  # the process that took the trial
    heartbeat: str = "heartbeat"  # its last sign of life (epoch seconds)
    failure_reason: str = "failure_reason"  # why it failed ("interrupted": requeue it)
    confirm_seed: str = "confirm_seed"  # a confirmation run: the fresh seed it trains
    source_trial: str = "source_trial"  # … and the search trial it confirms
    reference: str = "reference"  # the enqueued reference point of a search
    retry_of: str = "retry_of"  # a requeued trial: the number of the interrupted attempt


@dataclass(frozen=True)
class _StudyNames:
    """Study user attributes: what a sweep's studies say about the sweep as a whole."""

    confirm: str = "confirm"  # the confirmation settings, read back by `report --sweep`
    plugins: str = "plugins"  # plugins the sweep loaded, loaded again by `report --sweep`
    advice: str = "advice"  # an `advise` run's settings (on its reference's study)
    advise_spent: str = "advise_spent_seconds"  # wall-clock an `advise` run has used


TAG = _TagNames()
METRIC = _MetricNames()
PARAM = _ParamNames()
CONTROL = _ControlNames()
STUDY = _StudyNames()


def sweep_tags(
    stage: str,
    contention: str | None,
    *,
    timed: bool,
    confirm_seed: object = None,
    source_trial: object = None,
) -> dict[str, str]:
    """Tags the sweep adds to a trial's run: its stage, whether its timing was contended (when
    it was timed), and for a confirmation run the seed and search trial it re-runs."""
    tags = {TAG.stage: stage}
    if timed:
        tags[TAG.contended] = "true" if contention else "false"
        if contention:
            tags[TAG.contention] = contention
    if stage == "confirm":
        tags[TAG.confirm_seed] = str(confirm_seed)
        tags[TAG.source_trial] = str(source_trial)
    return tags


def paired_metrics(paired: PairedCost) -> dict[str, float]:
    """A timed trial's paired cost as final MLflow metrics (a speed only where it has one)."""
    metrics = {METRIC.paired_ratio: paired.ratio, METRIC.paired_cost: paired.per_sample_ratio}
    speed = speed_from_ratio(paired.ratio)
    if speed is not None:
        metrics[METRIC.speed_vs_base] = speed
    return metrics


def stamp_version(study: _AttrSink, stored: Mapping[str, Any], where: str) -> None:
    """Write this code's version into a study it writes to, after refusing a newer one.

    ``stored`` is the study's current user attributes; an older store is stamped with the new
    version (its old trials still read: missing keys read as unknown).
    """
    if check_version(stored, where) != SCHEMA_VERSION:
        study.set_user_attr(VERSION_ATTR, SCHEMA_VERSION)


def check_version(attrs: Mapping[str, Any], where: str) -> int:
    """The schema version a study was written with (0: before versions existed).

    Raises:
        SpecError: (one line) the study was written by a newer looksam-bench.
    """
    stored = attrs.get(VERSION_ATTR, 0)
    try:
        version = int(stored)
    except (TypeError, ValueError):
        raise SpecError(f"{where}: unreadable schema version {stored!r}") from None
    if version > SCHEMA_VERSION:
        raise SpecError(
            f"{where} was written with store schema version {version}, newer than this "
            f"looksam-bench's version {SCHEMA_VERSION}: upgrade looksam-bench to read it"
        )
    return version


def _floats(values: Any) -> tuple[float, ...]:
    return tuple(float(v) for v in values or () if v is not None)


def _optional_float(value: Any) -> float | None:
    return None if value is None else float(value)
