"""``advise``: which SAM to use on this model, within a wall-clock budget.

1. **Cost first.** A short paired bench (:func:`looksam.bench.suite.measure_suite`) times every
   candidate against the base at the user's batch size, before any store, run or file exists.
   A candidate whose paired cost is not below the reference's can never be the answer (the rule
   picks the cheapest of the reference and what matches it), so it is dropped, with the reason.
2. **A plan** (:mod:`looksam.sweeps._budget`) splits the budget between the search and the
   confirmation, equal search trials per candidate; a budget too small for the minimum is
   refused with the budget it needs.
3. **Search, then confirm** with the sweep machinery (:mod:`looksam.sweeps.study`): interleaved
   Optuna studies, paired per-trial cost, contention flags, resume, MLflow. The confirmation
   re-runs each candidate's configuration chosen by ``confirm_choices`` ("cheapest": the
   cheapest within the margin of SAM's search best) on 3 fresh seeds, then adds seeds only
   where they can change the answer (:func:`looksam.reports.advice.next_seed_counts`).
4. **The answer** by one rule (:func:`looksam.reports.advice.decide`), read back from the
   stores, so ``report --sweep NAME`` rebuilds it.

The run is a sweep named ``advise-WORKLOAD`` (``--name``) in the Optuna storage. Its settings,
costs and plan are stored with its studies; re-running the same command continues it (the time
already spent counts against the budget), and a finished one prints its answer again.
"""

from __future__ import annotations

import dataclasses
import math
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import optuna

from looksam.optim import DEFAULT_BASE, full_sam, get_optimizer_info, list_optimizers
from looksam.reports.advice import (
    ALPHA,
    LOOKS,
    Advice,
    advice_from,
    next_seed_counts,
    screen,
    search_bests,
)
from looksam.reports.model import SweepData
from looksam.sweeps._budget import (
    OVERRUN,
    BudgetClock,
    BudgetTooSmallError,
    Plan,
    format_duration,
    plan_budget,
)
from looksam.sweeps._liveness import interrupts_latched, raise_if_interrupted
from looksam.sweeps._storage import local_file, open_storage
from looksam.sweeps._trial import QuietObserver, SweepObserver, TrialOutcome
from looksam.sweeps.redact import redact_url
from looksam.sweeps.results import load_sweep_data
from looksam.sweeps.schema import STUDY
from looksam.sweeps.spec import (
    DEFAULT_STORAGE,
    DEFAULT_TRACKING_URI,
    Dimension,
    SpecError,
    SweepSpec,
    WorkloadSettings,
    registry_dimensions,
)
from looksam.sweeps.study import (
    _seeds,
    _Sweep,
    _taken,
    confirm_study_name,
)
from looksam.sweeps.tracking import NullTracker, Tracker
from looksam.train.workloads import get_workload_info

#: Stored with the run; a reader refuses a newer one.
SCHEMA_VERSION = 1
#: The paired cost bench: rounds at most and at least, and steps per contender per round.
BENCH_ROUNDS = (5, 15)
BENCH_STEPS = 10
BENCH_WARMUP = 5
#: Share of the budget the cost bench may take.
BENCH_SHARE = 0.04
#: Steps each candidate is counted for its extra memory (``looksam.bench.profile``): k = 5 and
#: an adaptive rule both show a look step within them.
PROFILE_STEPS = 6
#: Seconds a trial costs beyond training, evaluation and its paired timing (building the
#: session, the storage and tracking writes); the measured pace corrects it.
TRIAL_OVERHEAD_SECONDS = 0.3
#: The learning rate is searched over this factor either side of the rate runs use by default.
LR_SPAN = 10.0
#: How often the time spent is written to the storage while a trial trains.
PERSIST_SECONDS = 5.0


@dataclass(frozen=True)
class AdviseRequest:
    """What the user asked (``advise``'s options), before anything is checked."""

    workload: str
    budget_seconds: float
    optimizers: tuple[str, ...] | None = None  # None: the registry's default line-up
    reference: str | None = None  # None: the registry's full SAM
    base: str = DEFAULT_BASE
    margin: float = 0.01  # accuracy as a fraction
    batch_size: int | None = None
    search_batch_size: bool = False
    epochs: int | None = None
    device: str = "auto"
    data_dir: str | None = None
    #: Gradient accumulation: every run, the cost bench's too, splits each batch this many ways.
    accumulate: int = 1
    storage: str = DEFAULT_STORAGE
    tracking_uri: str | None = DEFAULT_TRACKING_URI
    name: str | None = None
    plugins: tuple[str, ...] = ()


@dataclass(frozen=True)
class CandidateCost:
    """One candidate's paired step cost against the base, from the cost bench."""

    optimizer: str
    ratio: float  # median step time over the base's, same batch
    q1: float
    q3: float
    passes: float  # measured forward-backward passes per step
    run_seconds: float  # predicted seconds of one trial (one seed, evaluation, paired timing)
    #: Peak bytes a step holds beyond the base's (``looksam.bench.profile``); None: not counted
    #: (a run stored before it was).
    extra_bytes: int | None = None

    def to_dict(self) -> dict[str, float | int | None]:
        """JSON-ready (stored with the run)."""
        return {
            "ratio": self.ratio,
            "q1": self.q1,
            "q3": self.q3,
            "passes": self.passes,
            "run_seconds": self.run_seconds,
            "extra_bytes": self.extra_bytes,
        }


@dataclass(frozen=True)
class CostBench:
    """What the cost bench measured and what it means for the plan."""

    costs: dict[str, CandidateCost]
    dropped: dict[str, str]  # candidate -> why it is not searched

    @property
    def finalists(self) -> tuple[str, ...]:
        """The candidates that are searched and confirmed, in line-up order."""
        return tuple(o for o in self.costs if o not in self.dropped)


@dataclass(frozen=True)
class Prepared:
    """A checked request: the sweep spec (budget not yet planned), the line-up, the name."""

    request: AdviseRequest
    spec: SweepSpec  # its optimizers: every candidate, in line-up order
    reference: str
    fingerprint: dict[str, Any]


@dataclass(frozen=True)
class AdviseResult:
    """What ``advise`` did and answered."""

    spec: SweepSpec
    plan: Plan
    bench: CostBench
    data: SweepData | None  # None: a dry run
    advice: Advice | None
    elapsed_seconds: float
    resumed: bool
    interrupted: bool = False


class AdviseObserver(SweepObserver, Protocol):
    """Progress of ``advise``: its phases and plan, on top of a sweep's trial events."""

    def phase(self, name: str, message: str) -> None: ...
    def bench_round(self, done: int, total: int) -> None: ...
    def planned(self, plan: Plan, bench: CostBench, resumed: bool) -> None: ...
    def replanned(self, before: int, after: int, pace: float) -> None: ...
    def progress(self, budget: BudgetClock, eta: float) -> None: ...


class QuietAdviseObserver(QuietObserver):
    """Shows nothing (library use, tests)."""

    def phase(self, name: str, message: str) -> None:
        pass

    def bench_round(self, done: int, total: int) -> None:
        pass

    def planned(self, plan: Plan, bench: CostBench, resumed: bool) -> None:
        pass

    def replanned(self, before: int, after: int, pace: float) -> None:
        pass

    def progress(self, budget: BudgetClock, eta: float) -> None:
        pass


# ---------------------------------------------------------------------- checking the request


def default_candidates(reference: str, base: str) -> tuple[str, ...]:
    """The base, the reference and every cheap SAM-family entry that wraps ``base`` (plugins
    too): the registry's ``approximates_sam`` flag decides, never a list here."""
    cheap = [
        info.name
        for info in list_optimizers()
        if info.approximates_sam and base in info.accepted_bases()
    ]
    return tuple(dict.fromkeys((base, reference, *cheap)))


def advise_name(workload: str) -> str:
    """``advise-digits-noisy``: the stored sweep's default name (no '/', at most 80 chars)."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", workload).strip("-") or "workload"
    return f"advise-{slug}"[:80]


def _search_space(
    optimizer: str, base: str, workload_lr: float | None, batches: tuple[int, ...] | None
) -> tuple[Dimension, ...]:
    """The candidate's registry search ranges, the base's learning rate around the rate runs use
    by default (the workload's tuned rate for SGD) and, when asked, the batch size."""
    info = get_optimizer_info(optimizer)
    base_name = base if info.wraps_base else optimizer
    base_info = get_optimizer_info(base_name)
    lr_hp = next(hp for hp in base_info.hyperparameters if hp.name == "lr")
    centre = workload_lr if base_info.uses_workload_lr and workload_lr else float(lr_hp.default)
    dims = [Dimension("lr", centre / LR_SPAN, centre * LR_SPAN, log=True)]
    if info.wraps_base:
        dims += registry_dimensions(optimizer)
    if batches is not None:
        dims.append(Dimension("batch_size", choices=batches, integer=True))
    return tuple(dims)


def prepare(request: AdviseRequest, outputs: Sequence[Path] = ()) -> Prepared:
    """Check everything the run will touch, before anything is created or trained.

    Raises:
        SpecError: one line naming what is wrong (unknown names, a reference or base that is
            not a candidate, a workload without an accuracy, a margin or budget out of range,
            values a trial could draw that a run would refuse, unwritable stores).
        WorkloadDataError: the workload's data is not where its runs will look.
    """
    from looksam.sweeps.validate import check_outputs, validate_trial_space

    if not request.budget_seconds > 0 or not math.isfinite(request.budget_seconds):
        raise SpecError(f"--budget must be more than 0 seconds, got {request.budget_seconds!r}")
    if not 0 < request.margin < 1:
        raise SpecError(
            f"--margin is in accuracy points and must be between 0 and 100, "
            f"got {100 * request.margin:g}"
        )
    try:
        info = get_workload_info(request.workload)
    except (ValueError, TypeError) as error:
        raise SpecError(str(error)) from None
    if not info.measures_accuracy:
        raise SpecError(
            f"{request.workload} measures no accuracy (random data): advise compares accuracy, "
            "so give a workload with real labels (use `looksam-bench bench` for speed alone)"
        )
    named = [*(request.optimizers or ()), request.base]
    if request.reference is not None:
        named.append(request.reference)
    for name in named:
        try:
            get_optimizer_info(name)
        except ValueError as error:
            raise SpecError(str(error)) from None
    base_info = get_optimizer_info(request.base)
    if base_info.wraps_base:
        raise SpecError(
            f"--base {request.base} is a SAM-family wrapper; the base is what SAM wraps "
            f"(e.g. {DEFAULT_BASE})"
        )
    reference = request.reference or full_sam().name
    if not get_optimizer_info(reference).wraps_base:
        raise SpecError(f"--reference {reference} is not a SAM-family optimizer")
    candidates = request.optimizers or default_candidates(reference, request.base)
    if len(set(candidates)) != len(candidates):
        repeated = sorted({c for c in candidates if candidates.count(c) > 1})
        raise SpecError(f"--optimizers names {', '.join(repeated)} more than once")
    for role, name in (("reference", reference), ("base", request.base)):
        if name not in candidates:
            raise SpecError(
                f"the {role} {name} is not among --optimizers ({', '.join(candidates)}): "
                "advise compares every candidate with both"
            )
    for name in candidates:
        c_info = get_optimizer_info(name)
        if c_info.wraps_base and request.base not in c_info.accepted_bases():
            raise SpecError(
                f"{name} cannot wrap --base {request.base}; it takes: "
                f"{', '.join(c_info.accepted_bases())}"
            )
        if not c_info.wraps_base and name != request.base:
            raise SpecError(
                f"{name} is a base optimizer; the only base advise compares is --base "
                f"{request.base}"
            )
    if request.batch_size is not None and request.batch_size < 1:
        raise SpecError(f"--batch-size must be >= 1, got {request.batch_size}")
    if request.epochs is not None and request.epochs < 1:
        raise SpecError(f"--epochs must be >= 1, got {request.epochs}")
    name = request.name or advise_name(request.workload)
    if not name or "/" in name or len(name) > 80:
        raise SpecError(f"--name must be 1 to 80 characters without '/', got {name!r}")
    batch = request.batch_size or info.default_batch_size
    batches = None
    if request.search_batch_size:
        from looksam.train.workloads import create_workload

        data_dir = None if request.data_dir is None else Path(request.data_dir)
        examples = create_workload(request.workload, data_dir=data_dir).num_train_examples
        # twice the batch is left out where one epoch could not fill it
        batches = tuple(sorted(b for b in {max(1, batch // 2), batch, batch * 2} if b <= examples))
    spec = SweepSpec(
        name=name,
        workload=WorkloadSettings(
            name=request.workload,
            epochs=request.epochs,
            batch_size=request.batch_size,
            device=request.device,
            data_dir=request.data_dir,
            accumulate=request.accumulate,
        ),
        optimizers=candidates,
        base=request.base,
        spaces={c: _search_space(c, request.base, info.default_lr, batches) for c in candidates},
        objective="pareto",
        n_trials=1,  # planned after the cost bench
        seeds=(0,),
        sampler="tpe",
        pruner="none",
        lr_scaling="sqrt" if batches else "none",
        reference_batch_size=batch,
        storage=request.storage,
        tracking_uri=request.tracking_uri,
        confirm_seeds=tuple(range(1, 1 + LOOKS[-1])),
        confirm_pick="cheapest",
        confirm_margin=request.margin,
        accuracy_reference=reference,
        plugins=request.plugins,
    )
    validate_trial_space(spec)  # every value a trial could draw, before anything exists
    check_outputs(spec, *outputs)
    fingerprint = {
        "workload": request.workload,
        "epochs": request.epochs,
        "batch_size": request.batch_size,
        "search_batch_size": request.search_batch_size,
        "device": request.device,
        "candidates": list(candidates),
        "reference": reference,
        "base": request.base,
        "margin": request.margin,
        "budget_seconds": request.budget_seconds,
        # only when set: a run stored before accumulation existed continues as it was
        **({"accumulate": request.accumulate} if request.accumulate != 1 else {}),
    }
    return Prepared(request, spec, reference, fingerprint)


# ---------------------------------------------------------------------- the cost bench


def _predicted_run_seconds(
    spec: SweepSpec,
    step: float,
    base_step: float,
    steps: int,
    epochs: int,
    eval_seconds: float,
) -> float:
    """One trial: its training steps, an evaluation per epoch, its paired timing (its own steps
    and the base's), overhead."""
    paired_steps = spec.timing_rounds * spec.timing_steps
    return (
        steps * step
        + epochs * eval_seconds
        + paired_steps * (step + base_step)
        + TRIAL_OVERHEAD_SECONDS
    )


def measure_costs(
    prepared: Prepared,
    budget_seconds: float,
    progress: Callable[[int, int], None] | None = None,
) -> CostBench:
    """Time every candidate's step against the base (paired rounds, in this process), predict
    each one's trial seconds, and drop those whose cost is not below the reference's."""
    from looksam.bench.profile import profile_suite
    from looksam.bench.suite import SuiteSpec, measure_suite
    from looksam.train.runner import TrainingSession
    from looksam.train.timing import synchronize

    spec = prepared.spec
    request = prepared.request
    workload = spec.workload
    probe = TrainingSession(workload.run_config(spec.base))
    batches = probe.batches()
    for _ in range(3):
        probe.train_step(*next(batches))
    synchronize(probe.device)
    t0 = time.perf_counter()
    for _ in range(5):
        probe.train_step(*next(batches))
    synchronize(probe.device)
    probe_step = (time.perf_counter() - t0) / 5
    probe.evaluate()  # the first one pays one-time costs
    t0 = time.perf_counter()
    probe.evaluate()
    eval_seconds = time.perf_counter() - t0
    guess = sum(get_optimizer_info(c).passes_per_step() + 0.3 for c in spec.optimizers)
    affordable = BENCH_SHARE * budget_seconds / max(1e-9, BENCH_STEPS * guess * probe_step)
    rounds = int(min(BENCH_ROUNDS[1], max(BENCH_ROUNDS[0], affordable)))
    suite = SuiteSpec(
        workload=workload.name,
        optimizers=spec.optimizers,
        reference=spec.base,
        batch_size=workload.batch_size,
        device=workload.device,
        rounds=rounds,
        steps_per_round=BENCH_STEPS,
        warmup_steps=BENCH_WARMUP,
        data_dir=workload.data_dir,
        micro_batches=workload.accumulate,
    )
    report = measure_suite(
        suite, progress=None if progress is None else (lambda done: progress(done, rounds))
    )
    extra = {p.optimizer: p.extra_bytes for p in profile_suite(suite, steps=PROFILE_STEPS)}
    steps = probe.total_steps
    base_step = next(c.median_step_seconds for c in report.costs if c.optimizer == spec.base)
    costs = {
        c.optimizer: CandidateCost(
            optimizer=c.optimizer,
            ratio=c.ratio,
            q1=c.ratio_q1,
            q3=c.ratio_q3,
            passes=c.floor,
            run_seconds=_predicted_run_seconds(
                spec, c.median_step_seconds, base_step, steps, probe.epochs, eval_seconds
            ),
            extra_bytes=extra.get(c.optimizer),
        )
        for c in report.costs
    }
    ordered = {name: costs[name] for name in spec.optimizers}
    reference = ordered[prepared.reference]
    dropped = {
        name: f"{cost.ratio:.2f}× ≥ {prepared.reference}'s {reference.ratio:.2f}×"
        for name, cost in ordered.items()
        if name not in (prepared.reference, request.base) and cost.ratio >= reference.ratio
    }
    return CostBench(ordered, dropped)


# ---------------------------------------------------------------------- stored state


def _stored_settings(spec: SweepSpec, reference: str) -> dict[str, Any] | None:
    """The settings an earlier attempt stored with the reference's study, or None."""
    local = local_file(spec.storage)
    if local is not None and not local.exists():
        return None
    storage = open_storage(spec.storage, create=False)
    name = spec.study_name(reference)
    names = {s.study_name for s in optuna.get_all_study_summaries(storage)}
    if name not in names:
        return None
    study = optuna.load_study(study_name=name, storage=storage)
    settings = study.user_attrs.get(STUDY.advice)
    if settings is None and not study.get_trials(deepcopy=False):
        return None  # killed between creating its studies and describing them: start afresh
    if settings is None:
        raise SpecError(
            f"{redact_url(spec.storage)} already holds a sweep named {spec.name!r} that is not "
            "an advise run; pass --name to start one beside it"
        )
    version = int(settings.get("schema_version", 0))
    if version > SCHEMA_VERSION:
        raise SpecError(
            f"advise run {spec.name!r} was stored by a newer looksam-bench (schema "
            f"{version}; this one reads {SCHEMA_VERSION}); upgrade, or pass --name to start "
            "another"
        )
    spent = study.user_attrs.get(STUDY.advise_spent, 0.0)
    return {**settings, "spent_seconds": float(spent)}


def _check_same(stored: Mapping[str, Any], prepared: Prepared) -> None:
    """A stored run continues only with the same settings; one line names what differs."""
    theirs = stored.get("fingerprint") or {}
    for key, mine in prepared.fingerprint.items():
        if theirs.get(key) != mine:
            shown = (
                format_duration(theirs.get(key) or 0)
                if key == "budget_seconds"
                else theirs.get(key)
            )
            raise SpecError(
                f"{redact_url(prepared.spec.storage)} already holds advise run "
                f"{prepared.spec.name!r} with {key} = {shown}; re-run with the same options to "
                "continue it, or pass --name to start another"
            )


def _bench_from(stored: Mapping[str, Any]) -> CostBench:
    costs = {
        name: CandidateCost(optimizer=name, **values)
        for name, values in (stored.get("costs") or {}).items()
    }
    return CostBench(costs=costs, dropped=dict(stored.get("dropped") or {}))


def _plan_from(stored: Mapping[str, Any]) -> Plan:
    return Plan(**stored["plan"])  # written by dataclasses.asdict: JSON keeps its numbers


def _settings(prepared: Prepared, bench: CostBench, plan: Plan) -> dict[str, Any]:
    """What ``report`` needs to rebuild the answer, and a resumed run to continue."""
    return {
        "schema_version": SCHEMA_VERSION,
        "reference": prepared.reference,
        "base": prepared.spec.base,
        "margin": prepared.request.margin,
        "looks": list(LOOKS),
        "alpha": ALPHA,
        "budget_seconds": prepared.request.budget_seconds,
        "fingerprint": prepared.fingerprint,
        "costs": {name: cost.to_dict() for name, cost in bench.costs.items()},
        "dropped": bench.dropped,
        "plan": dataclasses.asdict(plan),
    }


# ---------------------------------------------------------------------- running


@dataclass
class _Hooks:
    """Sits between the sweep machinery and the user's observer: times every trial for the
    budget, re-plans the search after each round and keeps the time spent in the storage."""

    outer: AdviseObserver
    budget: BudgetClock
    save_spent: Callable[[float], None]
    taken: Callable[[], dict[str, int]]
    confirm_left: Callable[[], dict[str, int]]
    search_trials: int
    frozen: bool = False
    _trial_started: float = 0.0
    _last_saved: float = field(default_factory=time.monotonic)

    def study_started(self, optimizer: str, stage: str, counted: int, budget: int) -> None:
        self.outer.study_started(optimizer, stage, counted, budget)

    def trial_started(self, optimizer: str, number: int, params: dict[str, Any]) -> None:
        self._trial_started = self.budget.clock()
        self.outer.trial_started(optimizer, number, params)

    def epoch(self, optimizer: str, seed: int, step: int, total: int) -> None:
        self.outer.epoch(optimizer, seed, step, total)
        if time.monotonic() - self._last_saved >= PERSIST_SECONDS:
            self.persist()

    def trial_finished(self, outcome: TrialOutcome, counted: int, budget: int) -> None:
        if outcome.state == "COMPLETE":  # a diverged run stops early; a duplicate never started
            self.budget.record(outcome.optimizer, self.budget.clock() - self._trial_started)
        self.persist()
        taken, left = self.taken(), self.confirm_left()  # read from the storage once a trial
        if outcome.stage == "search" and len(set(taken.values())) == 1:
            self.replan(taken, left)  # a whole round done: every candidate measured
        self.outer.progress(self.budget, self.eta(taken, left))
        self.outer.trial_finished(outcome, counted, budget)

    def persist(self) -> None:
        self.save_spent(self.budget.elapsed())
        self._last_saved = time.monotonic()

    def freeze(self) -> None:
        """The search is over (or a resumed run is past it): its budget is what was taken."""
        self.frozen = True
        self.search_trials = max([1, *self.taken().values()])

    def replan(self, taken: Mapping[str, int], confirm_left: Mapping[str, int]) -> None:
        """The search budget that still fits, told to the user when it moves."""
        if self.frozen:
            return
        after = self.budget.search_trials(taken, confirm_left, self.search_trials)
        if after != self.search_trials:
            self.outer.replanned(self.search_trials, after, self.budget.pace())
            self.search_trials = after

    def eta(self, taken: Mapping[str, int], confirm_left: Mapping[str, int]) -> float:
        """Seconds until the end if the planned runs still to come are all that is left."""
        todo = {o: max(0, self.search_trials - n) for o, n in taken.items()}
        for o, n in confirm_left.items():
            todo[o] = todo.get(o, 0) + n
        return self.budget.eta(todo)


def run_advise(
    request: AdviseRequest,
    *,
    observer: AdviseObserver | None = None,
    tracker_factory: Callable[[SweepSpec], Tracker] | None = None,
    clock: Callable[[], float] = time.monotonic,
    started_ago: float = 0.0,
    dry_run: bool = False,
    outputs: Sequence[Path] = (),
) -> AdviseResult:
    """Measure, plan, search, confirm and answer (see the module docstring).

    Args:
        request: the user's options.
        observer: progress (the CLI's live view); nothing is shown by default.
        tracker_factory: builds the MLflow tracker once the stores may exist (default: none).
        clock: the monotonic clock the budget is kept with.
        started_ago: seconds already spent before this call (the command passes its start-up,
            so it counts against the budget; a library call starts its budget here).
        dry_run: measure the costs and plan, then stop: nothing is created or trained.
        outputs: files the caller will write at the end (reports): checked first.

    Raises:
        SpecError: bad input, or a budget too small for the minimum (one line, before any
            store exists); BudgetTooSmallError (a ValueError) names the budget needed.
        KeyboardInterrupt: Ctrl-C; the stores are consistent and the same call continues.
    """
    observer = observer or QuietAdviseObserver()
    start = clock()
    before = started_ago
    prepared = prepare(request, outputs)
    spec = prepared.spec
    stored = _stored_settings(spec, prepared.reference)
    resumed = stored is not None
    if stored is not None:
        _check_same(stored, prepared)
        bench = _bench_from(stored)
        plan = _plan_from(stored)
        spent_before = float(stored.get("spent_seconds", 0.0)) + before
    else:
        observer.phase("bench", "measuring each candidate's step cost against the base")
        bench = measure_costs(
            prepared,
            request.budget_seconds,
            progress=observer.bench_round,
        )
        spent = before + clock() - start
        run_seconds = {o: bench.costs[o].run_seconds for o in bench.finalists}
        plan = plan_budget(request.budget_seconds, run_seconds, spent, confirm_seeds=LOOKS[0])
        spent_before = before
    observer.planned(plan, bench, resumed)
    spec = dataclasses.replace(spec, optimizers=bench.finalists, n_trials=plan.search_trials)
    budget = BudgetClock(plan, clock=clock, spent_before=spent_before, started=start)
    if dry_run:
        return AdviseResult(spec, plan, bench, None, None, budget.elapsed(), resumed)
    return _run(prepared, spec, plan, bench, budget, observer, tracker_factory, resumed)


def _run(
    prepared: Prepared,
    spec: SweepSpec,
    plan: Plan,
    bench: CostBench,
    budget: BudgetClock,
    observer: AdviseObserver,
    tracker_factory: Callable[[SweepSpec], Tracker] | None,
    resumed: bool,
) -> AdviseResult:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    settings = _settings(prepared, bench, plan)
    tracker = tracker_factory(spec) if tracker_factory is not None else NullTracker()
    targets: dict[str, int] = {}  # confirmation seeds per finalist
    opened: list[_Sweep] = []  # the sweep, once its studies exist (the hooks read them)

    def taken() -> dict[str, int]:
        return {o: _taken(study) for o, study in opened[0].studies.items()}

    def finalists(planning: bool = True) -> list[str]:
        """The candidates the confirmation will take, by the search so far (``screen``); while
        planning, one with no finished trial yet counts as one."""
        bests = search_bests(opened[0].points())
        left_out = screen(
            bests, reference=prepared.reference, base=spec.base, margin=spec.confirm_margin
        )
        unknown = {o for o, b in bests.items() if b is None} if planning else set()
        return [o for o in spec.optimizers if o not in left_out or o in unknown]

    def confirm_left() -> dict[str, int]:
        sweep = opened[0]
        choices = sweep.choices() if sweep.confirm else {}
        left = {}
        for o in finalists():
            want = targets.get(o, plan.confirm_seeds)
            study, chosen = sweep.confirm.get(o), choices.get(o)
            have = 0 if study is None or chosen is None else len(_seeds(study, chosen.number))
            left[o] = max(0, want - have)
        return left

    def save_spent(seconds: float) -> None:
        if opened:
            opened[0].studies[prepared.reference].set_user_attr(STUDY.advise_spent, seconds)

    hooks = _Hooks(observer, budget, save_spent, taken, confirm_left, plan.search_trials)
    interrupted = False
    try:
        with interrupts_latched():
            sweep = _Sweep(spec, hooks, tracker)
            opened.append(sweep)
            for study in sweep.studies.values():
                if study.user_attrs.get(STUDY.advice) is None:
                    study.set_user_attr(STUDY.advice, settings)
            sweep.start()
            if _confirmation_started(sweep):  # a resumed run past its search: keep its choices
                hooks.freeze()
            else:  # a resumed run, or a start slower than planned
                hooks.replan(hooks.taken(), hooks.confirm_left())
            observer.phase("search", f"{hooks.search_trials} trials per candidate, interleaved")
            sweep.search(spec.order, budget_of=lambda _optimizer: hooks.search_trials)
            hooks.freeze()
            chosen_ones = finalists(planning=False)
            targets.update(dict.fromkeys(chosen_ones, plan.confirm_seeds))
            left_out = len(spec.optimizers) - len(chosen_ones)
            observer.phase(
                "confirm",
                f"{plan.confirm_seeds} fresh seeds for each of {len(chosen_ones)} finalists"
                + (
                    f" ({left_out} left out: far below {prepared.reference}'s search best)"
                    if left_out
                    else ""
                ),
            )
            sweep.confirmation(spec.order, targets, lambda o: budget.affords({o: 1}, OVERRUN))
            while True:
                raise_if_interrupted()
                data = load_sweep_data(spec)
                advice = advice_from(data)
                more = {} if advice is None else next_seed_counts(advice, _affords(budget, advice))
                if not more:
                    break
                wanted = ", ".join(f"{o} (to {n})" for o, n in more.items())
                observer.phase("confirm", f"more seeds for {wanted}")
                # One arm after another, the reference first, then the closest to deciding: if
                # the budget runs out, the comparisons that matter most are whole.
                for name, seeds in more.items():
                    targets[name] = seeds
                    sweep.confirmation(spec.order, targets, lambda o: budget.affords({o: 1}))
            sweep.finish()
    except KeyboardInterrupt:
        interrupted = True
    finally:
        hooks.persist()
        tracker.close()
    data = load_sweep_data(spec)
    return AdviseResult(
        spec, plan, bench, data, advice_from(data), budget.elapsed(), resumed, interrupted
    )


def _confirmation_started(sweep: _Sweep) -> bool:
    """Whether a stored run has confirmation runs (its choices are then fixed)."""
    names = {s.study_name: s.n_trials for s in optuna.get_all_study_summaries(sweep.storage)}
    return any(names.get(confirm_study_name(sweep.spec, o), 0) > 0 for o in sweep.studies)


def _affords(budget: BudgetClock, advice: Advice) -> Callable[[Mapping[str, int]], bool]:
    """Whether the runs that seed targets still need fit the budget (a failed run holds its
    seed like a finished one)."""
    have = {j.arm.optimizer: len(j.arm.accuracies) + j.arm.failed_runs for j in advice.judged}

    def affords(targets: Mapping[str, int]) -> bool:
        return budget.affords({o: max(0, n - have.get(o, 0)) for o, n in targets.items()})

    return affords


def result_payload(result: AdviseResult) -> dict[str, Any]:
    """``advise --json``: the answer, every candidate's evidence, the plan and the costs."""
    from looksam.reports.advice import advice_json

    base: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "sweep": result.spec.name,
        "workload": result.spec.workload.name,
        "storage": redact_url(result.spec.storage),
        "budget_seconds": result.plan.budget_seconds,
        "elapsed_seconds": result.elapsed_seconds,
        "resumed": result.resumed,
        "interrupted": result.interrupted,
        "plan": dataclasses.asdict(result.plan),
        "bench": {name: cost.to_dict() for name, cost in result.bench.costs.items()},
        "dropped": [
            {"optimizer": name, "reason": why} for name, why in result.bench.dropped.items()
        ],
    }
    if result.advice is not None:
        base.update(advice_json(result.advice))
    return base


__all__ = [
    "AdviseObserver",
    "AdviseRequest",
    "AdviseResult",
    "BudgetTooSmallError",
    "CandidateCost",
    "CostBench",
    "QuietAdviseObserver",
    "advise_name",
    "default_candidates",
    "measure_costs",
    "prepare",
    "result_payload",
    "run_advise",
]
