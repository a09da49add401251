"""Step-cost benchmarks of whole training steps, and the CI regression check built on them.

A benchmark times the runner's own ``train_step`` for each optimizer on one workload, alternating
contenders in one process (see :mod:`looksam.train.timing`), and reports each one's ratio to the
base optimizer next to its floor (forward-backward passes per step). The regression check compares
those *ratios* — never absolute times, which these shared machines do not keep stable — with a
committed baseline.
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from looksam.optim import (
    DEFAULT_BASE,
    get_optimizer_info,
    list_optimizers,
    shared_hyperparameter,
)
from looksam.train.runner import (
    Environment,
    RunConfig,
    TrainingSession,
    environment,
    resolve_device,
    run_training,
)
from looksam.train.timing import below_floor, floor_limit, time_relative
from looksam.train.workloads import Workload, create_workload, get_workload_info


def default_optimizers() -> tuple[str, ...]:
    """What ``bench`` times when none are named: the base and every registered SAM-family
    optimizer (read at call time, so a plugin's are included)."""
    return (DEFAULT_BASE, *(info.name for info in list_optimizers() if info.wraps_base))


@dataclass(frozen=True)
class SuiteSpec:
    """What to measure: one workload, the optimizers, and the timing protocol."""

    workload: str = "synthetic-mlp"
    optimizers: tuple[str, ...] = field(default_factory=default_optimizers)
    reference: str = DEFAULT_BASE
    k: int = field(default_factory=lambda: int(shared_hyperparameter("k").default))
    batch_size: int | None = None
    device: str = "cpu"
    amp: str = "off"
    rounds: int = 20
    steps_per_round: int = 10
    warmup_steps: int = 10
    data_dir: str | None = None
    #: Gradient accumulation: every contender, the reference too, runs each batch as this many
    #: micro-batches, so the ratios pair steps at the same accumulation.
    micro_batches: int = 1

    def __post_init__(self) -> None:
        if isinstance(self.micro_batches, bool) or self.micro_batches < 1:
            raise ValueError(f"--accumulate must be an integer >= 1, got {self.micro_batches}")
        if self.k < 1:
            raise ValueError(f"k must be an integer >= 1, got {self.k}")
        for name, value in (("rounds", self.rounds), ("steps per round", self.steps_per_round)):
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        if self.batch_size is not None and self.batch_size < 1:
            raise ValueError(f"batch size must be >= 1, got {self.batch_size}")
        for name in (*self.optimizers, self.reference):
            get_optimizer_info(name)


@dataclass(frozen=True)
class StepCost:
    """One optimizer's measured step cost relative to the reference."""

    optimizer: str
    median_step_seconds: float
    samples_per_second: float
    ratio: float
    ratio_q1: float
    ratio_q3: float
    floor: float  # measured forward-backward passes per step relative to the reference

    @property
    def overhead(self) -> float:
        """Ratio beyond the floor: the optimizer's own arithmetic, in reference steps."""
        return self.ratio - self.floor

    @property
    def below_floor(self) -> bool:
        """Measured cheaper than its passes allow (:func:`~looksam.train.timing.below_floor`):
        the machine was busy while timing, and the ratio supports no claim."""
        return below_floor(self.ratio, self.floor)


@dataclass(frozen=True)
class BenchReport:
    """A suite and what it measured, with the machine it was measured on."""

    spec: SuiteSpec
    batch_size: int
    costs: tuple[StepCost, ...]
    environment: Environment
    #: What each step is made of (``looksam.bench.profile``): ops, passes, extra memory.
    profiles: tuple[Any, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (overheads included for readers of the file)."""
        data = asdict(self)
        for cost, row in zip(self.costs, data["costs"], strict=True):
            row["overhead"] = cost.overhead
            row["below_floor"] = cost.below_floor
        return data

    def floor_violations(self) -> list[str]:
        """One line per optimizer measured below its pass floor (empty: none)."""
        return [
            f"{self.spec.workload}: {c.optimizer} measured {c.ratio:.2f}× {self.spec.reference}, "
            f"below what {c.floor:.2f} passes per step allow ({floor_limit(c.floor):.2f}×)"
            for c in self.costs
            if c.below_floor
        ]


def _suite_config(spec: SuiteSpec, optimizer: str, **run: Any) -> RunConfig:
    """The run ``optimizer`` gets in ``spec``'s suite (``run``: epochs, max_steps, seed…)."""
    return RunConfig(
        workload=spec.workload,
        optimizer=optimizer,
        hyperparameters=_hyperparameters(optimizer, spec.k),
        batch_size=spec.batch_size,
        device=spec.device,
        amp=spec.amp,
        data_dir=spec.data_dir,
        micro_batches=spec.micro_batches,
        **run,
    )


def _hyperparameters(optimizer: str, k: int) -> dict[str, Any]:
    return {"k": k} if get_optimizer_info(optimizer).takes_k else {}


def measure_suite(
    spec: SuiteSpec, *, progress: Callable[[int], None] | None = None
) -> BenchReport:
    """Build one training session per optimizer and time their steps against the reference."""
    device = resolve_device(spec.device)
    contenders = tuple(dict.fromkeys((spec.reference, *spec.optimizers)))
    sessions = {
        name: TrainingSession(
            _suite_config(spec, name, epochs=10_000)  # the LR must not reach zero while timed
        )
        for name in contenders
    }

    for session in sessions.values():  # rules and phases: the registry's expected mix
        session.replay_second_passes(None, spec.steps_per_round)
    steps = dict.fromkeys(sessions, 0)

    def stepper(name: str, session: TrainingSession) -> Callable[[], object]:
        batches = session.batches()

        def step() -> None:
            session.train_step(*next(batches))
            steps[name] += 1

        return step

    timings = time_relative(
        {name: stepper(name, session) for name, session in sessions.items()},
        spec.reference,
        device=device,
        steps_per_round=spec.steps_per_round,
        rounds=spec.rounds,
        warmup_steps=spec.warmup_steps,
        progress=progress,
    )
    batch_size = sessions[spec.reference].batch_size
    # Measured, not predicted: an adaptive rule (AE-SAM) or a phase (late SAM) decides how many
    # second passes the timed steps really took.
    passes = {name: sessions[name].passes / max(1, steps[name]) for name in sessions}
    costs = tuple(
        StepCost(
            optimizer=t.name,
            median_step_seconds=t.median_step_seconds,
            samples_per_second=batch_size / t.median_step_seconds,
            ratio=t.ratio,
            ratio_q1=t.ratio_q1,
            ratio_q3=t.ratio_q3,
            floor=passes[t.name] / passes[spec.reference],
        )
        for t in timings
    )
    return BenchReport(spec, batch_size, costs, environment(device))


# ---------------------------------------------------------------------- regression check


@dataclass(frozen=True)
class AbsoluteExpectation:
    """Absolute mode of one suite, for fixed hardware: samples/s per optimizer on one device."""

    device_name: str  # the Environment's device_name; a check elsewhere is refused
    tolerance: float  # relative: samples/s below baseline × (1 - tolerance) is a regression
    samples_per_second: dict[str, float]


@dataclass(frozen=True)
class AccuracyExpectation:
    """Accuracy guard of one suite: each optimizer's final test accuracy after a short run
    (``steps`` steps, seed ``seed``), to be matched within ``tolerance`` (0: bit for bit).

    ``threads``: the CPU threads torch used (None off the CPU), used again by the check, since
    how a CPU kernel splits its sums, and so its last bits, depends on them.
    """

    steps: int
    seed: int
    tolerance: float  # absolute, in accuracy (0.01 = one percentage point)
    final_accuracy: dict[str, float]
    threads: int | None = None


@dataclass(frozen=True)
class Baseline:
    """Committed expectations: per suite, the ratio each optimizer had, and the tolerance.

    Optionally, per suite, absolute samples/s on a named device (``absolute``) and the final
    accuracy of a short fixed-seed run (``accuracy``); both tuples are aligned with ``suites``
    (None where a suite has none; left empty, no suite has any).
    """

    suites: tuple[SuiteSpec, ...]
    ratios: tuple[dict[str, float], ...]  # aligned with suites
    tolerance: float  # relative: a ratio above baseline × (1 + tolerance) is a regression
    measured_on: dict[str, Any] = field(default_factory=dict)
    absolute: tuple[AbsoluteExpectation | None, ...] = ()
    accuracy: tuple[AccuracyExpectation | None, ...] = ()

    def __post_init__(self) -> None:
        for name in ("absolute", "accuracy"):
            value = getattr(self, name)
            if not value:
                object.__setattr__(self, name, (None,) * len(self.suites))
            elif len(value) != len(self.suites):
                raise ValueError(f"{name} must have one entry per suite, got {len(value)}")

    @classmethod
    def read(cls, path: Path) -> Baseline:
        """Parse a baseline file; ValueError naming the file and the key if it is not one.

        Every field is checked, and a gate that would measure nothing (no suite, a suite with no
        ratio) is refused: it would pass whatever the code does.
        """
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise ValueError(f"baseline {path} does not exist") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise ValueError(f"baseline {path} is not valid JSON: {error}") from None
        except OSError as error:
            raise ValueError(f"baseline {path} cannot be read: {error.strerror}") from None
        try:
            return cls._parse(data)
        except _BaselineError as error:
            raise ValueError(f"baseline {path}: {error}") from None

    @classmethod
    def _parse(cls, data: Any) -> Baseline:
        top = _Fields(data, "", 'an object {"tolerance": 0.1, "suites": [...]}')
        tolerance = top.number("tolerance", low=0.0)
        entries = top.items("suites")
        if not entries:
            raise _BaselineError(
                "suites is empty: a gate that measures nothing passes anything (write one "
                "with check --init)"
            )
        suites, ratios, absolute, accuracy = [], [], [], []
        for i, raw in enumerate(entries):
            entry = _Fields(raw, f"suites[{i}]", 'an object {"suite": {...}, "ratios": {...}}')
            spec = entry.suite("suite")
            named = {*spec.optimizers, spec.reference}
            ratios.append(entry.numbers("ratios", low=0.0, names=named, required=False))
            absolute.append(entry.absolute("absolute", named))
            accuracy.append(entry.accuracy("accuracy", named))
            if not ratios[-1] and absolute[-1] is None and accuracy[-1] is None:
                raise _BaselineError(
                    f"suites[{i}].ratios is empty and the suite has no absolute or accuracy "
                    "entry: it would check nothing"
                )
            suites.append(spec)
        measured_on = data.get("measured_on", {})
        if not isinstance(measured_on, dict):
            raise _BaselineError("measured_on must be an object")
        return cls(tuple(suites), tuple(ratios), tolerance, measured_on, tuple(absolute),
                   tuple(accuracy))  # fmt: skip

    def write(self, path: Path) -> None:
        """Write the baseline as indented JSON (a suite without absolute or accuracy entries is
        written exactly as before they existed)."""
        suites = []
        for spec, ratios, absolute, accuracy in zip(
            self.suites, self.ratios, self.absolute, self.accuracy, strict=True
        ):
            suite = asdict(spec)
            if spec.micro_batches == 1:  # written as before gradient accumulation existed
                del suite["micro_batches"]
            entry: dict[str, Any] = {"suite": suite, "ratios": ratios}
            if absolute is not None:
                entry["absolute"] = asdict(absolute)
            if accuracy is not None:
                entry["accuracy"] = asdict(accuracy)
            suites.append(entry)
        data = {"tolerance": self.tolerance, "suites": suites, "measured_on": self.measured_on}
        path.write_text(json.dumps(data, indent=2) + "\n")


class _BaselineError(ValueError):
    """A baseline field that is missing or wrong; the message names its key."""


class _Fields:
    """One JSON object of a baseline, read key by key with the key's full name in every error."""

    def __init__(self, raw: Any, where: str, shape: str) -> None:
        if not isinstance(raw, dict):
            kind = type(raw).__name__ if raw is not None else "null"
            raise _BaselineError(f"{where or 'the file'} must be {shape}, not a JSON {kind}")
        self.raw, self.where = raw, where

    def key(self, name: str) -> str:
        return f"{self.where}.{name}" if self.where else name

    def get(self, name: str) -> Any:
        if name not in self.raw:
            raise _BaselineError(f"{self.key(name)} is missing")
        return self.raw[name]

    def number(self, name: str, *, low: float, high: float | None = None) -> float:
        return _number(self.get(name), self.key(name), low, high)

    def items(self, name: str) -> list[Any]:
        value = self.get(name)
        if not isinstance(value, list):
            raise _BaselineError(f"{self.key(name)} must be a list")
        return value

    def numbers(
        self, name: str, *, low: float, names: set[str], required: bool, high: float | None = None
    ) -> dict[str, float]:
        """A {optimizer: number} object whose names the suite measures."""
        fields = _Fields(self.get(name), self.key(name), "an object {optimizer: number}")
        if required and not fields.raw:
            raise _BaselineError(f"{fields.where} is empty: the suite would check nothing")
        values = {}
        for optimizer, value in fields.raw.items():
            if optimizer not in names:
                raise _BaselineError(
                    f"{fields.key(optimizer)}: the suite does not measure {optimizer!r} "
                    f"(it times {', '.join(sorted(names))})"
                )
            values[optimizer] = _number(value, fields.key(optimizer), low, high)
        return values

    def suite(self, name: str) -> SuiteSpec:
        fields = _Fields(self.get(name), self.key(name), "an object of suite settings")
        known = {f for f in SuiteSpec.__dataclass_fields__}
        stray = sorted(set(fields.raw) - known)
        if stray:
            raise _BaselineError(f"{fields.key(stray[0])} is not a suite setting")
        try:
            return SuiteSpec(**_spec_fields(fields.raw))
        except (ValueError, TypeError) as error:
            raise _BaselineError(f"{fields.where}: {error}") from None

    def absolute(self, name: str, named: set[str]) -> AbsoluteExpectation | None:
        if self.raw.get(name) is None:
            return None
        fields = _Fields(self.raw[name], self.key(name), "an object")
        device_name = fields.get("device_name")
        if not isinstance(device_name, str) or not device_name:
            raise _BaselineError(f"{fields.key('device_name')} must be a device's name")
        tolerance = fields.number("tolerance", low=0.0)
        if tolerance >= 1.0:  # a lower bound of samples/s × (1 - tolerance) <= 0 checks nothing
            raise _BaselineError(f"{fields.key('tolerance')} must be in [0, 1), got {tolerance:g}")
        return AbsoluteExpectation(
            device_name=device_name,
            tolerance=tolerance,
            samples_per_second=fields.numbers(
                "samples_per_second", low=0.0, names=named, required=True
            ),
        )

    def accuracy(self, name: str, named: set[str]) -> AccuracyExpectation | None:
        if self.raw.get(name) is None:
            return None
        fields = _Fields(self.raw[name], self.key(name), "an object")
        threads = fields.raw.get("threads")
        return AccuracyExpectation(
            steps=_integer(fields.get("steps"), fields.key("steps"), low=1),
            seed=_integer(fields.get("seed"), fields.key("seed"), low=0),
            tolerance=fields.number("tolerance", low=0.0),
            final_accuracy=fields.numbers(
                "final_accuracy", low=0.0, high=1.0, names=named, required=True
            ),
            threads=None if threads is None else _integer(threads, fields.key("threads"), low=1),
        )


def _number(value: Any, key: str, low: float, high: float | None = None) -> float:
    """A finite JSON number in [low, high]."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise _BaselineError(f"{key} must be a number, got {json.dumps(value)}")
    if value < low or (high is not None and value > high):
        bounds = f">= {low:g}" if high is None else f"in [{low:g}, {high:g}]"
        raise _BaselineError(f"{key} must be {bounds}, got {value:g}")
    return float(value)


def _integer(value: Any, key: str, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise _BaselineError(f"{key} must be an integer >= {low}, got {json.dumps(value)}")
    return value


def _spec_fields(raw: dict[str, Any]) -> dict[str, Any]:
    fields = dict(raw)
    if "optimizers" in fields:
        fields["optimizers"] = tuple(fields["optimizers"])
    return fields


#: What a :class:`CheckRow` compares: the step-cost ratio to the reference (at most ``limit``),
#: absolute samples/s on a named device (at least ``lower``), or the final accuracy of a short
#: fixed-seed run (between ``lower`` and ``limit``).
METRICS = ("ratio", "samples/s", "accuracy")


@dataclass(frozen=True)
class CheckRow:
    """One optimizer in one suite: the baseline's value vs the measured one, and the allowed range.

    A value exactly at a bound passes; a NaN measurement (a run that did not finish) fails.
    """

    workload: str
    optimizer: str
    baseline: float
    measured: float
    limit: float | None  # the most allowed; None: no upper bound
    metric: str = "ratio"
    lower: float | None = None  # the least allowed; None: no lower bound

    @property
    def excess(self) -> float:
        """How far the measurement lies outside its range (<= 0 inside it; inf for NaN)."""
        if math.isnan(self.measured):
            return math.inf
        over = self.measured - self.limit if self.limit is not None else -math.inf
        under = self.lower - self.measured if self.lower is not None else -math.inf
        return max(over, under)

    @property
    def regressed(self) -> bool:
        """True when the measurement lies outside the allowed range."""
        return self.excess > 0


def compare(baseline: Baseline, reports: Sequence[BenchReport]) -> list[CheckRow]:
    """Rows for every optimizer the baseline knows, in baseline order (pure function): per suite
    its ratios, then its samples/s where the baseline records them (absolute mode)."""
    rows = []
    for expected, absolute, report in zip(
        baseline.ratios, baseline.absolute, reports, strict=True
    ):
        measured = {c.optimizer: c.ratio for c in report.costs}
        throughput = {c.optimizer: c.samples_per_second for c in report.costs}
        for name in (*expected, *(absolute.samples_per_second if absolute else ())):
            if name not in measured:
                raise ValueError(f"baseline names {name!r} but the suite did not measure it")
        for name, ratio in expected.items():
            rows.append(
                CheckRow(
                    workload=report.spec.workload,
                    optimizer=name,
                    baseline=ratio,
                    measured=measured[name],
                    limit=ratio * (1.0 + baseline.tolerance),
                )
            )
        if absolute is None:
            continue
        for name, samples in absolute.samples_per_second.items():
            rows.append(
                CheckRow(
                    workload=report.spec.workload,
                    optimizer=name,
                    baseline=samples,
                    measured=throughput[name],
                    limit=None,
                    metric="samples/s",
                    lower=samples * (1.0 - absolute.tolerance),
                )
            )
    return rows


def settle(first: Sequence[CheckRow], second: Sequence[CheckRow]) -> list[CheckRow]:
    """Per row, the milder of two measurements: a regression must show in both to count.

    One noisy moment on a shared machine can inflate one measurement; it rarely inflates two.
    The milder is the one nearer to (or further inside) its allowed range: the lower ratio, the
    higher samples/s.
    """
    return [min(a, b, key=lambda r: r.excess) for a, b in zip(first, second, strict=True)]


def check_baseline(
    baseline: Baseline,
    measure: Callable[[SuiteSpec], BenchReport],
    *,
    remeasuring: Callable[[list[str]], None] | None = None,
) -> list[CheckRow]:
    """Measure every suite of ``baseline`` and compare; suites that look regressed are measured
    once more and :func:`settle` keeps the milder result, so only a repeated regression fails.

    Args:
        baseline: the committed expectations.
        measure: times one suite (:func:`measure_suite`, or a wrapper that shows progress).
        remeasuring: told the workloads about to be measured again, before that starts.
    """
    reports = [measure(spec) for spec in baseline.suites]
    rows = compare(baseline, reports)
    suspects = sorted({row.workload for row in rows if row.regressed})
    if not suspects:
        return rows
    if remeasuring is not None:
        remeasuring(suspects)
    again = [
        measure(spec) if spec.workload in suspects else report
        for spec, report in zip(baseline.suites, reports, strict=True)
    ]
    return settle(rows, compare(baseline, again))


def baseline_from(
    reports: Sequence[BenchReport],
    tolerance: float,
    *,
    absolute_tolerances: Sequence[float | None] = (),
    accuracy: Sequence[AccuracyExpectation | None] = (),
) -> Baseline:
    """A new baseline from fresh measurements (``check --init``, ``check --update``).

    Args:
        reports: one measured suite each.
        tolerance: of the ratios.
        absolute_tolerances: per report, None or the tolerance of absolute mode (samples/s and
            the device name are taken from the report); empty: no absolute mode.
        accuracy: per report, None or its measured accuracy guard; empty: none.
    """
    env = reports[0].environment if reports else None
    absolute = tuple(
        None
        if tol is None
        else AbsoluteExpectation(
            device_name=report.environment.device_name,
            tolerance=tol,
            samples_per_second={c.optimizer: round(c.samples_per_second, 1) for c in report.costs},
        )
        for report, tol in zip(reports, absolute_tolerances or [None] * len(reports), strict=True)
    )
    return Baseline(
        suites=tuple(r.spec for r in reports),
        ratios=tuple({c.optimizer: round(c.ratio, 4) for c in r.costs} for r in reports),
        tolerance=tolerance,
        measured_on=asdict(env) if env is not None else {},
        absolute=absolute,
        accuracy=tuple(accuracy),
    )


# ---------------------------------------------------------------------- accuracy guard


def measure_accuracy(
    spec: SuiteSpec,
    steps: int,
    seed: int,
    *,
    threads: int | None = None,
    progress: Callable[[str, int, int], None] | None = None,
) -> dict[str, float]:
    """Train each optimizer of ``spec`` (reference first) for ``steps`` steps from ``seed`` and
    return its final test accuracy; NaN for a run that did not finish (diverged, out of memory).

    Same seed, same machine type, same versions and threads: on a CPU the numbers repeat bit for
    bit, so a changed one means the optimizer (or the training loop) computes something else.

    Args:
        threads: torch's CPU threads for these runs (restored afterwards); None: as they are.
        progress: called as ``progress(optimizer, step, total_steps)``.

    Raises:
        ValueError: the workload measures no accuracy (random data), or a bad setting.
    """
    info = get_workload_info(spec.workload)
    if not info.measures_accuracy:
        raise ValueError(
            f"{spec.workload} trains on random data and measures no accuracy: "
            "it cannot have an accuracy guard"
        )
    if steps < 1:
        raise ValueError(f"accuracy steps must be >= 1, got {steps}")
    if threads is not None and threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    workload = create_workload(
        spec.workload, data_dir=Path(spec.data_dir) if spec.data_dir else None
    )
    before = torch.get_num_threads()
    try:
        if threads is not None:
            torch.set_num_threads(threads)
        return _train_each(spec, steps, seed, workload, progress)
    finally:
        torch.set_num_threads(before)


def _train_each(
    spec: SuiteSpec,
    steps: int,
    seed: int,
    workload: Workload,
    progress: Callable[[str, int, int], None] | None,
) -> dict[str, float]:
    accuracies = {}
    for name in dict.fromkeys((spec.reference, *spec.optimizers)):
        config = _suite_config(spec, name, max_steps=steps, seed=seed)
        tell = None
        if progress is not None:
            tell = functools.partial(_tell, progress, name)
        result = run_training(config, workload=workload, progress=tell)
        final = result.final_accuracy if result.status == "ok" else None
        accuracies[name] = math.nan if final is None else final
    return accuracies


def _tell(
    progress: Callable[[str, int, int], None], name: str, step: int, total: int, _: object
) -> None:
    progress(name, step, total)


def compare_accuracy(
    baseline: Baseline, measured: Sequence[dict[str, float] | None]
) -> list[CheckRow]:
    """Accuracy rows of every suite with a guard (``measured`` aligned with the suites, None
    where a suite has none): each within baseline ± the guard's tolerance (pure function)."""
    rows = []
    for spec, guard, accuracies in zip(baseline.suites, baseline.accuracy, measured, strict=True):
        if guard is None:
            continue
        if accuracies is None:
            raise ValueError(f"the accuracy guard of {spec.workload} was not run")
        for name, expected in guard.final_accuracy.items():
            if name not in accuracies:
                raise ValueError(f"baseline names {name!r} but the accuracy runs did not train it")
            rows.append(
                CheckRow(
                    workload=spec.workload,
                    optimizer=name,
                    baseline=expected,
                    measured=accuracies[name],
                    limit=expected + guard.tolerance,
                    metric="accuracy",
                    lower=expected - guard.tolerance,
                )
            )
    return rows
