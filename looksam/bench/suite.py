"""Step-cost benchmarks of whole training steps, and the CI regression check built on them.

A benchmark times the runner's own ``train_step`` for each optimizer on one workload, alternating
contenders in one process (see :mod:`looksam.bench.timing`), and reports each one's ratio to the
base optimizer next to its floor (forward-backward passes per step). The regression check compares
those *ratios* — never absolute times, which these shared machines do not keep stable — with a
committed baseline.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from looksam.bench.runner import (
    Environment,
    RunConfig,
    TrainingSession,
    environment,
    resolve_device,
)
from looksam.bench.timing import time_relative
from looksam.optim import DEFAULT_BASE, get_optimizer_info, list_optimizers


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
    k: int = 5
    batch_size: int | None = None
    device: str = "cpu"
    amp: str = "off"
    rounds: int = 20
    steps_per_round: int = 10
    warmup_steps: int = 10
    data_dir: str | None = None

    def __post_init__(self) -> None:
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


@dataclass(frozen=True)
class BenchReport:
    """A suite and what it measured, with the machine it was measured on."""

    spec: SuiteSpec
    batch_size: int
    costs: tuple[StepCost, ...]
    environment: Environment

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (overheads included for readers of the file)."""
        data = asdict(self)
        for cost, row in zip(self.costs, data["costs"], strict=True):
            row["overhead"] = cost.overhead
        return data


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
            RunConfig(
                workload=spec.workload,
                optimizer=name,
                hyperparameters=_hyperparameters(name, spec.k),
                batch_size=spec.batch_size,
                device=spec.device,
                amp=spec.amp,
                data_dir=spec.data_dir,
                epochs=10_000,  # the LR schedule must not reach zero while we time
            )
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
class Baseline:
    """Committed expectations: per suite, the ratio each optimizer had, and the tolerance."""

    suites: tuple[SuiteSpec, ...]
    ratios: tuple[dict[str, float], ...]  # aligned with suites
    tolerance: float  # relative: a ratio above baseline × (1 + tolerance) is a regression
    measured_on: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def read(cls, path: Path) -> Baseline:
        """Parse a baseline file; ValueError with the reason if it is not one."""
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise ValueError(f"baseline {path} does not exist") from None
        except json.JSONDecodeError as error:
            raise ValueError(f"baseline {path} is not valid JSON: {error}") from None
        try:
            tolerance = float(data["tolerance"])
            entries = data["suites"]
            suites = tuple(SuiteSpec(**_spec_fields(e["suite"])) for e in entries)
            ratios = tuple({k: float(v) for k, v in e["ratios"].items()} for e in entries)
        except (KeyError, TypeError) as error:
            raise ValueError(
                f"baseline {path} lacks {error}: expected "
                '{"tolerance": 0.1, "suites": [{"suite": {...}, "ratios": {...}}]}'
            ) from None
        if not tolerance >= 0:
            raise ValueError(f"baseline {path}: tolerance must be >= 0, got {tolerance}")
        return cls(suites, ratios, tolerance, data.get("measured_on", {}))

    def write(self, path: Path) -> None:
        """Write the baseline as indented JSON."""
        data = {
            "tolerance": self.tolerance,
            "suites": [
                {"suite": asdict(s), "ratios": r}
                for s, r in zip(self.suites, self.ratios, strict=True)
            ],
            "measured_on": self.measured_on,
        }
        path.write_text(json.dumps(data, indent=2) + "\n")


def _spec_fields(raw: dict[str, Any]) -> dict[str, Any]:
    fields = dict(raw)
    if "optimizers" in fields:
        fields["optimizers"] = tuple(fields["optimizers"])
    return fields


@dataclass(frozen=True)
class CheckRow:
    """One optimizer in one suite: baseline vs measured ratio."""

    workload: str
    optimizer: str
    baseline: float
    measured: float
    limit: float

    @property
    def regressed(self) -> bool:
        """True when the measured ratio exceeds the allowed limit."""
        return self.measured > self.limit


def compare(baseline: Baseline, reports: Sequence[BenchReport]) -> list[CheckRow]:
    """Rows for every optimizer the baseline knows, in baseline order (pure function)."""
    rows = []
    for expected, report in zip(baseline.ratios, reports, strict=True):
        measured = {c.optimizer: c.ratio for c in report.costs}
        for name, ratio in expected.items():
            if name not in measured:
                raise ValueError(f"baseline names {name!r} but the suite did not measure it")
            rows.append(
                CheckRow(
                    workload=report.spec.workload,
                    optimizer=name,
                    baseline=ratio,
                    measured=measured[name],
                    limit=ratio * (1.0 + baseline.tolerance),
                )
            )
    return rows


def settle(first: Sequence[CheckRow], second: Sequence[CheckRow]) -> list[CheckRow]:
    """Per row, the milder of two measurements: a regression must show in both to count.

    One noisy moment on a shared machine can inflate one measurement; it rarely inflates two.
    """
    return [min(a, b, key=lambda r: r.measured) for a, b in zip(first, second, strict=True)]


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


def baseline_from(reports: Sequence[BenchReport], tolerance: float) -> Baseline:
    """A new baseline from fresh measurements (``check --update``)."""
    env = reports[0].environment if reports else None
    return Baseline(
        suites=tuple(r.spec for r in reports),
        ratios=tuple({c.optimizer: round(c.ratio, 4) for c in r.costs} for r in reports),
        tolerance=tolerance,
        measured_on=asdict(env) if env is not None else {},
    )
