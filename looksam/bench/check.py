"""The regression check as a library: its three modes, each a function returning what it did.

``check --init`` measures one suite and writes a new baseline, ``check --update`` re-measures
every suite a baseline records, and the check itself re-measures them and compares. Every mode
refuses what it cannot do with :class:`CheckRefusedError` (the CLI's exit 2), before measuring
where it can; how a suite is measured (with a progress bar, a log line) is the caller's: it passes
:class:`Measurers`, so this module prints nothing and a test can script the measurements.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import torch

from looksam.bench import suite
from looksam.bench.check_summary import summary_dict, summary_markdown
from looksam.bench.suite import AccuracyExpectation, Baseline, BenchReport, CheckRow, SuiteSpec
from looksam.optim import shared_hyperparameter
from looksam.train.runner import AMP_MODES, environment, resolve_device
from looksam.train.workloads import get_workload_info

#: Where ``check`` looks for its baseline when --baseline is not given.
DEFAULT_BASELINE = Path("bench/baselines/cpu.json")
#: Defaults of ``check --init``: ratio tolerance, absolute (samples/s) tolerance, and the
#: accuracy tolerance off the CPU (on the CPU it is 0: the runs repeat bit for bit).
INIT_TOLERANCE = 0.1
INIT_ABSOLUTE_TOLERANCE = 0.1
INIT_ACCURACY_TOLERANCE_ACCELERATOR = 0.01
#: The seed of the accuracy guard's runs (recorded in the baseline; edit it there).
ACCURACY_SEED = 0

Mode = Literal["init", "update", "check"]


class CheckRefusedError(ValueError):
    """A request the check cannot carry out; the message says why, in one line."""


@dataclass(frozen=True)
class Measurers:
    """How the caller measures: a suite, and the accuracy runs of a guard
    (``accuracy(spec, steps, seed, threads)``); ``note`` hears "…: re-measuring" before a
    suite is measured again."""

    suite: Callable[[SuiteSpec], BenchReport]
    accuracy: Callable[[SuiteSpec, int, int, int | None], dict[str, float]]
    note: Callable[[str], None] = lambda _message: None


def choose_mode(
    *, init: Path | None, update: bool, baseline_given: bool, records: bool, stray: Sequence[str]
) -> Mode:
    """Which mode the options ask for; CheckRefusedError when they mix two.

    Args:
        init: the path of ``--init``, if given.
        update: ``--update``.
        baseline_given: ``--baseline`` was given.
        records: ``--json`` or ``--markdown`` was given.
        stray: the ``--init``-only options given (their names).
    """
    if init is None:
        if stray:
            verb = "applies" if len(stray) == 1 else "apply"
            raise CheckRefusedError(f"{', '.join(stray)} only {verb} with --init PATH")
    else:
        if update:
            raise CheckRefusedError(
                "--init writes a new baseline and --update re-measures an existing one: give one"
            )
        if baseline_given:
            raise CheckRefusedError(
                "--init PATH names the baseline to write: leave out --baseline"
            )
    if (init is not None or update) and records:
        raise CheckRefusedError(
            "--json and --markdown record a check: leave them out with --init and --update"
        )
    return "init" if init is not None else "update" if update else "check"


# ---------------------------------------------------------------------- --init and --update


@dataclass(frozen=True)
class InitRequest:
    """``check --init``'s options as given (None: not given, the default applies)."""

    path: Path
    force: bool = False
    workload: str = "synthetic-mlp"
    optimizers: Sequence[str] | None = None
    k: int | None = None
    batch_size: int | None = None
    device: str | None = None
    amp: str | None = None
    rounds: int | None = None
    data_dir: Path | None = None
    tolerance: float | None = None
    absolute: bool = False
    absolute_tolerance: float | None = None
    accuracy_steps: int | None = None
    accuracy_tolerance: float | None = None


@dataclass(frozen=True)
class InitPlan:
    """A checked ``--init`` request: the suite it measures, with the tolerances resolved
    (the defaults of options not given filled in)."""

    path: Path
    spec: SuiteSpec
    tolerance: float
    absolute_tolerance: float | None  # None: no absolute mode
    accuracy_steps: int | None
    accuracy_tolerance: float


@dataclass(frozen=True)
class Written:
    """A baseline written by ``--init`` or ``--update``, with what was measured for it."""

    path: Path
    baseline: Baseline
    reports: tuple[BenchReport, ...]
    guards: tuple[AccuracyExpectation | None, ...]


def plan_init(
    request: InitRequest, check_path: Callable[[Path, str], None] | None = None
) -> InitPlan:
    """Every refusal of ``--init``, before anything is measured.

    Args:
        check_path: refuses a path that could not be written (raising); called right after
            the path's existence is checked, so the refusals come in the order they always did.
    """
    path = request.path
    if path.exists() and not request.force:
        raise CheckRefusedError(
            f"baseline {path} exists; pass --force to overwrite it (--update re-measures it)"
        )
    if check_path is not None:
        check_path(path, "--init")
    if request.absolute_tolerance is not None and not request.absolute:
        raise CheckRefusedError("--absolute-tolerance only applies with --absolute")
    if request.accuracy_tolerance is not None and request.accuracy_steps is None:
        raise CheckRefusedError("--accuracy-tolerance only applies with --accuracy-steps")
    tolerance = INIT_TOLERANCE if request.tolerance is None else request.tolerance
    if not tolerance >= 0:
        raise CheckRefusedError(f"--tolerance must be >= 0, got {tolerance}")
    abs_tol = request.absolute_tolerance
    abs_tol = INIT_ABSOLUTE_TOLERANCE if abs_tol is None else abs_tol
    if not 0 <= abs_tol < 1:
        raise CheckRefusedError(f"--absolute-tolerance must be in [0, 1), got {abs_tol}")
    name = request.workload
    try:
        info = get_workload_info(name)
        spec = SuiteSpec(
            workload=name,
            optimizers=tuple(request.optimizers or suite.default_optimizers()),
            k=int(shared_hyperparameter("k").default) if request.k is None else request.k,
            batch_size=request.batch_size,
            # Recorded resolved: a baseline made on a GPU is checked on a GPU, not on a CPU.
            device=resolve_device(request.device or "auto").type,
            amp=request.amp or "off",
            rounds=20 if request.rounds is None else request.rounds,
            data_dir=str(request.data_dir) if request.data_dir else None,
        )
    except ValueError as error:
        raise CheckRefusedError(str(error)) from None
    if spec.amp not in AMP_MODES:
        choices = ", ".join(AMP_MODES)
        raise CheckRefusedError(f"unknown --amp {spec.amp!r}; choose one of: {choices}")
    steps = request.accuracy_steps
    if steps is not None:
        if not info.measures_accuracy:
            raise CheckRefusedError(
                f"{name} trains on random data and measures no accuracy: the accuracy guard "
                "needs a workload with real data (leave out --accuracy-steps)"
            )
        if steps < 1:
            raise CheckRefusedError(f"--accuracy-steps must be >= 1, got {steps}")
    default_acc_tol = 0.0 if spec.device == "cpu" else INIT_ACCURACY_TOLERANCE_ACCELERATOR
    acc_tol = default_acc_tol if request.accuracy_tolerance is None else request.accuracy_tolerance
    if not acc_tol >= 0:
        raise CheckRefusedError(f"--accuracy-tolerance must be >= 0, got {acc_tol}")
    return InitPlan(path, spec, tolerance, abs_tol if request.absolute else None, steps, acc_tol)


def init_baseline(plan: InitPlan, measurers: Measurers) -> Written:
    """``check --init``: measure the planned suite (and its accuracy guard) and write it."""
    report = measure_sound(plan.spec, measurers)
    guard = None
    if plan.accuracy_steps is not None:
        guard = fresh_accuracy(
            plan.spec, plan.accuracy_steps, ACCURACY_SEED, plan.accuracy_tolerance, measurers
        )
    fresh = suite.baseline_from(
        [report],
        plan.tolerance,
        absolute_tolerances=[plan.absolute_tolerance],
        accuracy=[guard],
    )
    fresh.write(plan.path)
    return Written(plan.path, fresh, (report,), (guard,))


def update_baseline(baseline: Baseline, path: Path, measurers: Measurers) -> Written:
    """``check --update``: re-measure everything the baseline records, keeping its settings."""
    reports = [measure_sound(spec, measurers) for spec in baseline.suites]
    guards = [
        None
        if guard is None
        else fresh_accuracy(spec, guard.steps, guard.seed, guard.tolerance, measurers)
        for spec, guard in zip(baseline.suites, baseline.accuracy, strict=True)
    ]
    fresh = suite.baseline_from(
        reports,
        baseline.tolerance,
        absolute_tolerances=[None if a is None else a.tolerance for a in baseline.absolute],
        accuracy=guards,
    )
    fresh.write(path)
    return Written(path, fresh, tuple(reports), tuple(guards))


def measure_sound(spec: SuiteSpec, measurers: Measurers) -> BenchReport:
    """Measure a suite a baseline will record. A ratio below its pass floor cannot come from a
    correct timing: the suite is measured once more, and a second one is refused, so no
    contended ratio is ever written as a baseline."""
    report = measurers.suite(spec)
    if not report.floor_violations():
        return report
    measurers.note(f"{report.floor_violations()[0]}: re-measuring")
    report = measurers.suite(spec)
    violations = report.floor_violations()
    if violations:
        raise CheckRefusedError(
            f"{violations[0]}, twice: the machine is too busy to time; nothing was written "
            "(retry when it is quieter)"
        )
    return report


def fresh_accuracy(
    spec: SuiteSpec, steps: int, seed: int, tolerance: float, measurers: Measurers
) -> AccuracyExpectation:
    """Record an accuracy guard (with this CPU's torch threads, which the check will use);
    a run that does not finish cannot be one (refused)."""
    threads = torch.get_num_threads() if spec.device == "cpu" else None
    accuracies = measurers.accuracy(spec, steps, seed, threads)
    for name, value in accuracies.items():
        if math.isnan(value):
            raise CheckRefusedError(
                f"the {steps}-step accuracy run of {name} on {spec.workload} did not finish "
                "(diverged or out of memory): choose other --accuracy-steps or settings"
            )
    return AccuracyExpectation(
        steps=steps, seed=seed, tolerance=tolerance, final_accuracy=accuracies, threads=threads
    )


# ---------------------------------------------------------------------- the check


@dataclass(frozen=True)
class CheckResult:
    """What a check measured against which baseline: its rows decide the verdict."""

    path: Path
    baseline: Baseline
    rows: list[CheckRow]

    @property
    def failed(self) -> list[CheckRow]:
        """The rows outside their allowed range (empty: no regression)."""
        return [row for row in self.rows if row.regressed]

    def _context(self) -> dict[str, Any]:
        env = None
        if self.baseline.suites:
            device = resolve_device(self.baseline.suites[0].device)
            env = asdict(environment(device))
        return {"baseline": str(self.path), "tolerance": self.baseline.tolerance,
                "environment": env}  # fmt: skip

    def to_dict(self) -> dict[str, Any]:
        """``--json``: the verdict, the rows and where they were measured."""
        return summary_dict(self.rows, **self._context())

    def markdown(self) -> str:
        """``--markdown``: the same as a job summary or pull-request comment."""
        return summary_markdown(self.rows, **self._context())


def preflight(baseline: Baseline, path: Path) -> None:
    """Refuse what cannot be checked here, before measuring anything: absolute samples/s from
    another device, an accuracy guard on a workload without accuracy."""
    for spec, absolute, guard in zip(
        baseline.suites, baseline.absolute, baseline.accuracy, strict=True
    ):
        try:
            info = get_workload_info(spec.workload)
            here = environment(resolve_device(spec.device)).device_name if absolute else ""
        except ValueError as error:
            raise CheckRefusedError(str(error)) from None
        if absolute is not None and here != absolute.device_name:
            raise CheckRefusedError(
                f"baseline {path} holds absolute samples/s of {spec.workload} measured on "
                f"{absolute.device_name!r}, but this {spec.device} is {here!r}: check on that "
                "device, or record a baseline here with check --init"
            )
        if guard is not None and not info.measures_accuracy:
            raise CheckRefusedError(
                f"baseline {path} has an accuracy guard on {spec.workload}, which trains on "
                "random data and measures no accuracy"
            )


def run_check(baseline: Baseline, path: Path, measurers: Measurers) -> CheckResult:
    """The check: refuse what cannot be checked here, re-measure every suite (a suite that
    looks regressed once more) and every accuracy guard, and compare with the baseline."""
    preflight(baseline, path)
    try:
        rows = suite.check_baseline(
            baseline,
            measurers.suite,
            remeasuring=lambda names: measurers.note(
                f"possible regression in {', '.join(names)}: re-measuring"
            ),
        )
        accuracies = [
            None
            if guard is None
            else measurers.accuracy(spec, guard.steps, guard.seed, guard.threads)
            for spec, guard in zip(baseline.suites, baseline.accuracy, strict=True)
        ]
        rows += suite.compare_accuracy(baseline, accuracies)
    except ValueError as error:
        raise CheckRefusedError(f"baseline {path}: {error}") from None
    return CheckResult(path, baseline, rows)
