"""`looksam-bench sweep`: Optuna studies per optimizer, tracked in MLflow, shown live."""

from __future__ import annotations

import logging
import shlex
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Group
from rich.live import Live
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from looksam.cli import _options as opt
from looksam.cli._console import LogPacer, console, fail, in_a_log, log_line
from looksam.cli.report import REPORTS_DIR, print_and_save
from looksam.reports.leaderboard import format_params, has_results
from looksam.reports.model import TrialPoint
from looksam.reports.summary import best_trial
from looksam.sweeps._storage import open_storage
from looksam.sweeps.plan import plan_sweep
from looksam.sweeps.redact import redact_url
from looksam.sweeps.results import load_sweep_data
from looksam.sweeps.spec import SpecError, SweepSpec, load_spec, parse_spec
from looksam.sweeps.study import TrialOutcome, run_sweep, validate_for_workload
from looksam.sweeps.tracking import tracker_for
from looksam.sweeps.validate import check_outputs, validate_trial_space
from looksam.train.workloads import WorkloadDataError

DEFAULT_SPEC = Path("sweeps/quick.toml")
#: Exit status after Ctrl-C, as shells report SIGINT.
INTERRUPTED = 130


def plan_table(spec: SweepSpec) -> Table:
    """--dry-run: the studies, their spaces and the estimated cost in forward-backward passes."""
    table = Table(title=f"Sweep plan: {spec.name} on {spec.workload.name}", title_justify="left")
    columns = (
        "study",
        "trials × seeds",
        "confirm runs",
        "search space",
        "passes/step",
        "est. fwd-bwd passes",
    )
    for column in columns:
        table.add_column(column, overflow="fold")
    for row in plan_sweep(spec):
        table.add_row(
            row.study,
            f"{row.trials} × {row.seeds_per_trial}",
            str(row.confirm_runs),
            row.space,
            row.describe_passes(),
            f"{row.search_passes + row.confirm_passes:,.0f}",
        )
    return table


class LiveDisplay:
    """Per-study trial bars, the running trial's progress and a best-so-far table.

    Rich draws none of it when the output is not a terminal (a CI log, ``make sweep | tee``),
    so there it also prints plain lines on stderr: one per finished trial, and one at least every
    30 s while a trial trains (:class:`~looksam.cli._console.LogPacer`), each with the trials
    done and an ETA.
    """

    def __init__(self, spec: SweepSpec, clock: Callable[[], float] | None = None) -> None:
        self.spec = spec
        self.log = in_a_log()
        self.pacer = LogPacer(clock)
        self.studies = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[unit]}"),
            TimeRemainingColumn(),
        )
        self.current = Progress(
            TextColumn("  {task.description}"), BarColumn(), MofNCompleteColumn()
        )
        self._tasks: dict[tuple[str, str], TaskID] = {}
        self._trial_task = self.current.add_task("waiting", total=None)
        self._points: dict[str, list[TrialPoint]] = {}
        # Transient: the leaderboard printed at the end replaces the live view.
        self.live = Live(self._render(), console=console, refresh_per_second=4, transient=True)

    def _render(self) -> Group:
        table = Table(title="best so far (search)", title_justify="left", show_edge=False)
        for column in ("optimizer", "acc", "trial", "params"):
            table.add_column(column)
        for name, points in self._points.items():
            b = best_trial(points, self.spec.objective)
            if b is not None:
                acc = f"{100 * (b.accuracy or 0.0):.2f} %"
                table.add_row(name, acc, f"#{b.number}", format_params(b.searched_params))
        return Group(self.studies, self.current, table)

    def study_started(self, optimizer: str, stage: str, counted: int, budget: int) -> None:
        key = (optimizer, stage)
        if key not in self._tasks:
            label = optimizer if stage == "search" else f"{optimizer} confirm"
            unit = "trials" if stage == "search" else "seeds"
            self._tasks[key] = self.studies.add_task(label, total=budget, unit=unit)
        self.studies.update(self._tasks[key], completed=min(counted, budget))

    def trial_started(self, optimizer: str, number: int, params: dict[str, Any]) -> None:
        self.current.update(
            self._trial_task, description=f"{optimizer} #{number} {format_params(params)}",
            completed=0, total=None,
        )  # fmt: skip

    def epoch(self, optimizer: str, seed: int, step: int, total: int) -> None:
        self.current.update(self._trial_task, completed=step, total=total)
        if self.log and self.pacer.due():
            self._line(f"{optimizer} seed {seed}: step {step}/{total}")

    def _line(self, what: str) -> None:
        """One plain progress line on stderr: what happened, trials done, time spent, ETA."""
        tasks = self.studies.tasks
        done = sum(t.completed for t in tasks)
        total = sum(t.total or 0 for t in tasks)
        stamp = self.pacer.stamp(done, total)
        counts = f"{done:.0f}/{total:.0f} trials and seeds"
        log_line(f"sweep {self.spec.name}: {what} · {counts}{stamp}")

    def trial_finished(self, outcome: TrialOutcome, counted: int, budget: int) -> None:
        task = self._tasks.get((outcome.optimizer, outcome.stage))
        if task is not None:
            self.studies.update(task, completed=min(counted, budget))
        if outcome.stage == "search":
            self._points.setdefault(outcome.optimizer, []).append(outcome.point)
        self.live.update(self._render())
        if self.log:
            result = outcome.failure_reason or outcome.state.lower()
            if outcome.point.accuracy is not None:
                result = f"{100 * outcome.point.accuracy:.2f} %"
            label = "" if outcome.stage == "search" else f" {outcome.stage}"
            self._line(f"{outcome.optimizer}{label} #{outcome.number} {result}")


def sweep(
    spec_path: Annotated[
        Path | None,
        typer.Argument(
            metavar="[SPEC]", help="Sweep spec (TOML) \\[default: sweeps/quick.toml if present]."
        ),
    ] = None,
    n_trials: Annotated[
        int | None, typer.Option(help="Trials per optimizer (a grid runs all its points).")
    ] = None,
    timeout: Annotated[float | None, typer.Option(help="Seconds per optimizer study.")] = None,
    seeds: Annotated[
        int | None, typer.Option(help="Seeds per trial (mean is the objective).")
    ] = None,
    workload: Annotated[str | None, typer.Option("--workload", "-w", help="Workload.")] = None,
    epochs: Annotated[int | None, typer.Option(help="Epochs per run.")] = None,
    batch_size: opt.BatchSize = None,
    accumulate: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Gradient accumulation: every trial runs each batch as N micro-batches "
            "([workload] accumulate).",
        ),
    ] = None,
    optimizer: Annotated[
        list[str] | None, typer.Option("--optimizer", "-o", help="Optimizers to compare.")
    ] = None,
    base: opt.Base = None,
    objective: Annotated[
        str | None, typer.Option(help="pareto (default), accuracy or time-to-target.")
    ] = None,
    sampler: Annotated[
        str | None,
        typer.Option(help="tpe, random, nsga2, gp, or grid (every listed value: choices only)."),
    ] = None,
    pruner: Annotated[str | None, typer.Option(help="none, median or hyperband.")] = None,
    storage: Annotated[
        str | None,
        typer.Option(help="Optuna storage: sqlite:///…, postgresql://…, or journal:PATH."),
    ] = None,
    tracking_uri: Annotated[
        str | None, typer.Option(help="MLflow tracking URI (sqlite:///… or http://…).")
    ] = None,
    no_mlflow: Annotated[
        bool, typer.Option("--no-mlflow", help="Do not track in MLflow.")
    ] = False,
    device: Annotated[str | None, typer.Option(help="auto, cpu, cuda or mps.")] = None,
    data_dir: opt.DataDir = None,
    order: Annotated[
        str | None,
        typer.Option(
            help="interleaved (default: the studies take turns, one trial each, so they "
            "progress together) or sequential (one study after another)."
        ),
    ] = None,
    confirm_seeds: Annotated[
        int | None,
        typer.Option(
            "--confirm-seeds",
            help="Fresh seeds on which each optimizer's best configuration is re-run after the "
            "search; the headline accuracy is their mean ± 95 % CI (0: no confirmation).",
        ),
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Validate and print the plan; train nothing.")
    ] = False,
) -> None:
    """Tune every optimizer with the same budget and compare accuracy against paired cost.

    One Optuna study per optimizer, taking turns trial by trial (resumable: re-running continues
    it; several processes or machines on one storage share the budget), every trial logged to
    MLflow. Each trial times its own steps against the base optimizer in interleaved rounds, so
    speeds stay true on a busy machine (trials the load disturbed are flagged contended); then
    each optimizer's best configuration is re-run on fresh seeds, and the leaderboard's accuracy
    is their mean ± 95 % CI. Every value a trial could draw is checked first. Flags override the
    spec's keys. Examples:

      looksam-bench sweep                               # sweeps/quick.toml
      looksam-bench sweep --dry-run                     # the plan and its cost; trains nothing
      looksam-bench sweep sweeps/quick.toml --n-trials 20 --confirm-seeds 5
      looksam-bench sweep sweeps/quick.toml --storage journal:runs/journal.log   # one per worker
    """
    overrides = {
        "n_trials": n_trials, "timeout": timeout, "seeds": seeds, "workload": workload,
        "epochs": epochs, "batch_size": batch_size, "optimizers": optimizer, "base": base,
        "objective": objective, "sampler": sampler, "pruner": pruner, "storage": storage,
        "tracking_uri": tracking_uri, "no_mlflow": no_mlflow, "device": device,
        "data_dir": str(data_dir) if data_dir else None, "order": order,
        "confirm_seeds": confirm_seeds, "accumulate": accumulate,
    }  # fmt: skip
    try:
        if spec_path is None and not DEFAULT_SPEC.exists():
            spec = parse_spec({"sweep": {"name": "quick"}}, "built-in defaults", overrides)
        else:
            spec = load_spec(spec_path or DEFAULT_SPEC, overrides)
        validate_for_workload(spec)
        validate_trial_space(spec)  # every value a trial could draw, before anything exists
        report_path = REPORTS_DIR / f"{spec.name}.html"
        check_outputs(spec, report_path)  # stores and report: writable before any training
        if dry_run:
            console.print(plan_table(spec))
            console.print(f"storage: {redact_url(spec.storage)}")
            console.print(
                f"tracking: {redact_url(spec.tracking_uri) if spec.tracking_uri else 'off'}"
            )
            return
        open_storage(spec.storage)  # an unreachable database: one line, before MLflow exists
        tracker = tracker_for(spec)
    except (SpecError, ValueError, WorkloadDataError) as error:
        fail(str(error))
    logging.getLogger("mlflow").setLevel(logging.WARNING)  # its table-creation chatter
    display = LiveDisplay(spec)
    interrupted = False
    try:
        with display.live:
            result = run_sweep(spec, observer=display, tracker=tracker)
        console.print(f"sweep finished in {result.wall_seconds:.1f} s")
    except KeyboardInterrupt:
        interrupted = True
        console.print("[yellow]interrupted[/]: the running trial is marked failed and re-queued")
    except (SpecError, ValueError, WorkloadDataError) as error:
        fail(str(error))
    data = load_sweep_data(spec)
    attached: list[Path] = []  # to each study's MLflow parent run
    if has_results(data):
        print_and_save(data, html=report_path)  # every trial failed: the report says why
        attached.append(report_path)
    else:
        console.print("no trial has finished yet: no report")
    if spec.source is not None and Path(spec.source).is_file():
        attached.append(Path(spec.source))  # uploaded with any URL password masked
    tracker.log_artifacts(attached)
    console.print(f"Optuna storage: {redact_url(spec.storage)}")
    if spec.tracking_uri is not None:
        console.print(
            f"MLflow: {redact_url(spec.tracking_uri)}; open it with "
            f"`looksam-bench ui --tracking-uri {redact_url(spec.tracking_uri)} "
            f"--sweep {shlex.quote(spec.name)}`"
        )
    if interrupted:
        raise typer.Exit(INTERRUPTED)
