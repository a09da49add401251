"""`looksam-bench advise`: which SAM should I use on my model, within my time budget?"""

from __future__ import annotations

import logging
import shlex
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from looksam._json import write_json
from looksam._plugins import plugins_from_env
from looksam.bench.profile import format_bytes
from looksam.cli import _options as opt
from looksam.cli._console import (
    LogPacer,
    ProgressLog,
    check_writable,
    console,
    err_console,
    fail,
    in_a_log,
    log_line,
    startup_seconds,
)
from looksam.cli.report import REPORTS_DIR
from looksam.cli.sweep import INTERRUPTED
from looksam.reports.advice import LOOKS, Advice
from looksam.reports.terminal import advice_report
from looksam.sweeps._budget import BudgetClock, Plan, format_duration, parse_duration
from looksam.sweeps.advise import (
    AdviseRequest,
    AdviseResult,
    CostBench,
    QuietAdviseObserver,
    advise_name,
    result_payload,
    run_advise,
)
from looksam.sweeps.redact import redact_url
from looksam.sweeps.spec import DEFAULT_STORAGE, DEFAULT_TRACKING_URI, SpecError
from looksam.sweeps.study import TrialOutcome
from looksam.sweeps.tracking import tracker_for
from looksam.train.workloads import WorkloadDataError


class AdviseDisplay(QuietAdviseObserver):
    """Progress as lines (they read the same in a terminal and in a CI log): the phase, each
    finished trial with the elapsed time, the ETA and the budget left."""

    def __init__(self) -> None:
        self.budget: BudgetClock | None = None
        self.eta: float | None = None
        self._eta_at = 0.0  # the budget's elapsed seconds when the ETA was computed
        self._last_bench = 0
        self._phase = "advise"
        self.log = in_a_log()  # plain lines at least every 30 s
        self._pacer = LogPacer()
        self._bench_log: ProgressLog | None = None

    def phase(self, name: str, message: str) -> None:
        self._phase = name
        console.print(f"[bold]{name}[/]: {escape(message)}", highlight=False)

    def bench_round(self, done: int, total: int) -> None:
        """A line on stderr after each third of the cost bench's rounds (in a log, with the
        time spent and the ETA, and one at least every 30 s)."""
        if self.log:
            if self._bench_log is None:
                self._bench_log = ProgressLog("cost bench", total, "paired rounds", 3)
            self._bench_log(done, total)
        elif done == total or done - self._last_bench >= max(1, total // 3):
            self._last_bench = done
            err_console.print(f"[dim]cost bench: {done}/{total} paired rounds[/]")

    def epoch(self, optimizer: str, seed: int, step: int, total: int) -> None:
        """In a log, a line at least every 30 s while a run trains: its steps, the budget, the
        ETA."""
        if self.log and self._pacer.due():
            self._pacer.mark()
            times = self._times() or self._pacer.stamp(step, total).removeprefix(" · ")
            log_line(f"{self._phase}: {optimizer} seed {seed}: step {step}/{total} · {times}")

    def planned(self, plan: Plan, bench: CostBench, resumed: bool) -> None:
        console.print(cost_table(bench))
        for line in plan_lines(plan, bench, resumed):
            console.print(line, highlight=False)

    def replanned(self, before: int, after: int, pace: float) -> None:
        console.print(
            f"[yellow]re-planned[/]: {before} → {after} search trials per candidate (runs take "
            f"{pace:.2f}× the predicted time)",
            highlight=False,
        )

    def progress(self, budget: BudgetClock, eta: float) -> None:
        self.budget, self.eta, self._eta_at = budget, eta, budget.elapsed()

    def trial_finished(self, outcome: TrialOutcome, counted: int, budget: int) -> None:
        point = outcome.point
        what = (
            f"{100 * point.accuracy:.2f} %"
            if point.accuracy is not None
            else (outcome.failure_reason or outcome.state.lower())
        )
        seed = f" seed {point.seeds[0]}" if outcome.stage == "confirm" and point.seeds else ""
        console.print(
            f"{outcome.stage:<7} {outcome.optimizer:<12} #{outcome.number:<3}{seed:<8} "
            f"{what:>9}{self._clock()}",
            highlight=False,
        )

    def _clock(self) -> str:
        """'  1m4s spent · 3m56s left · ETA 3m30s', dimmed."""
        times = self._times(since=False)
        return f"  [dim]{times}[/]" if times else ""

    def _times(self, since: bool = True) -> str:
        """'1m4s spent · 3m56s left · ETA 3m30s': the budget spent and left, the predicted
        rest of the command ('' before the budget is known); ``since``: less the time since
        that prediction (a line while a run trains)."""
        if self.budget is None:
            return ""
        elapsed = self.budget.elapsed()
        eta = ""
        if self.eta is not None:
            rest = self.eta - (elapsed - self._eta_at if since else 0.0)
            eta = f" · ETA {format_duration(max(0.0, rest))}"
        spent = format_duration(elapsed)
        left = format_duration(max(0.0, self.budget.left()))
        return f"{spent} spent · {left} left{eta}"


def cost_table(bench: CostBench) -> Table:
    """The cost bench: every candidate's paired cost and predicted run, kept or dropped."""
    table = Table(
        title="Step cost against the base (paired rounds, this machine)", title_justify="left"
    )
    columns = ("candidate", "passes", "cost vs base (IQR)", "extra memory", "one run", "searched")
    for column in columns:
        table.add_column(
            column, justify="left" if column in ("candidate", "searched") else "right"
        )
    for name, cost in bench.costs.items():
        why = bench.dropped.get(name)
        table.add_row(
            name,
            f"{cost.passes:.2f}",
            f"{cost.ratio:.2f}× ({cost.q1:.2f}–{cost.q3:.2f})",
            format_bytes(cost.extra_bytes, signed=True),
            format_duration(cost.run_seconds)
            if cost.run_seconds >= 60
            else f"{cost.run_seconds:.1f}s",
            "yes" if why is None else f"no: {why}",
        )
    if bench.dropped:
        table.caption = (
            "not searched: a candidate that costs as much as the reference can never be the "
            "cheapest match, whatever its accuracy"
        )
    return table


def plan_lines(plan: Plan, bench: CostBench, resumed: bool) -> list[str]:
    """The plan in a few lines: trials, seeds, predicted time per phase, the ETA."""
    n = len(plan.run_seconds)
    head = "Resuming" if resumed else "Plan"
    return [
        f"[bold]{head}[/] for {format_duration(plan.budget_seconds)} "
        f"({format_duration(plan.spent_seconds)} spent on start-up and the cost bench):",
        f"  search        {plan.search_trials} trials × {n} candidates, taking turns  "
        f"~{format_duration(plan.search_seconds)}",
        f"  confirmation  {plan.confirm_seeds} fresh seeds × each finalist          "
        f"~{format_duration(plan.confirm_seconds)}",
        f"  extra seeds   up to {LOOKS[-1]} where they decide the answer    "
        f"~{format_duration(plan.extra_seconds)}",
        f"  ETA {format_duration(plan.predicted_seconds)}. Every candidate gets the same number "
        "of trials (AlgoPerf's rule): a cheap optimizer's savings are what is measured, not a "
        "bigger search.",
    ]


def print_advice(advice: Advice | None, result: AdviseResult) -> None:
    """The answer in one sentence, what to paste, then every candidate's evidence."""
    if advice is None:
        console.print("no answer yet: no confirmation run has finished")
        return
    console.print()
    console.print(advice_report(advice))
    for name, why in result.bench.dropped.items():
        console.print(f"not searched: {name}: {escape(why)}", highlight=False)


def advise(
    workload: Annotated[
        str,
        typer.Option(
            "--workload",
            "-w",
            help="Your model: a built-in workload, timm:MODEL or module:factory "
            "(see `workloads`).",
        ),
    ],
    budget: Annotated[
        str,
        typer.Option(
            help="Wall-clock on this machine, everything included: 90s, 20m, 2h or 1h30m. "
            "The answer is better with more; too little for the minimum is refused with what "
            "would do.",
        ),
    ],
    data_dir: opt.DataDir = None,
    data: opt.Data = None,
    num_classes: opt.NumClasses = None,
    img_size: opt.ImgSize = None,
    device: opt.Device = "auto",
    optimizers: Annotated[
        str | None,
        typer.Option(
            help="Comma-separated candidates \\[default: the base, the reference and every "
            "cheap SAM variant in the registry].",
        ),
    ] = None,
    reference: Annotated[
        str | None,
        typer.Option(help="What the candidates must match \\[default: the registry's full SAM]."),
    ] = None,
    base: opt.Base = None,
    margin: Annotated[
        float,
        typer.Option(help="Accuracy points a candidate may lose against the reference."),
    ] = 1.0,
    batch_size: opt.BatchSize = None,
    micro_batches: opt.Accumulate = 1,
    search_batch_size: Annotated[
        bool,
        typer.Option(
            "--search-batch-size",
            help="Also search half and twice the batch size (learning rate scaled by √).",
        ),
    ] = False,
    epochs: Annotated[
        int | None,
        typer.Option(help="Epochs per run \\[default: the workload's; never cut to fit]."),
    ] = None,
    name: Annotated[
        str | None,
        typer.Option(help="The stored run's name \\[default: advise-WORKLOAD]."),
    ] = None,
    storage: Annotated[
        str, typer.Option(help="Optuna storage: sqlite:///…, postgresql://… or journal:PATH.")
    ] = DEFAULT_STORAGE,
    tracking_uri: Annotated[
        str, typer.Option(help="MLflow tracking URI (sqlite:///… or http://…).")
    ] = DEFAULT_TRACKING_URI,
    no_mlflow: Annotated[
        bool, typer.Option("--no-mlflow", help="Do not track in MLflow.")
    ] = False,
    json_path: Annotated[
        Path | None, typer.Option("--json", help="Write the answer and its evidence as JSON.")
    ] = None,
    html: Annotated[
        Path | None, typer.Option(help="HTML report \\[default: reports/NAME.html].")
    ] = None,
    markdown: Annotated[
        Path | None, typer.Option(help="Markdown summary (a PR comment, a CI job summary).")
    ] = None,
    dry_run: Annotated[
        bool,
        typer.Option("--dry-run", help="Measure the costs, print the plan; create nothing."),
    ] = False,
) -> None:
    """Answer "which SAM should I use on my model, within my time budget?".

    Times every candidate against the base (paired), plans the budget, tunes each candidate
    with the same number of trials, confirms on fresh seeds the cheapest configuration within
    --margin of SAM's accuracy, adds seeds only where they decide, and answers by one rule: the
    cheapest of SAM and the candidates shown non-inferior to it (one-sided Welch, corrected
    for repeated looks and the number of candidates). Re-running the same command continues
    an interrupted run. Examples:

      looksam-bench advise -w digits-noisy --budget 5m --json advise.json
      looksam-bench advise -w timm:resnet18 --data-dir ~/data/imagenette --budget 2h
      looksam-bench advise -w my_model:make --budget 30m --dry-run
    """
    console.print(f"advise: {escape(workload)}, budget {escape(budget)}", highlight=False)
    try:
        seconds = parse_duration(budget)
    except ValueError as error:
        fail(str(error))
    if not 0 < margin < 100:
        fail(f"--margin is in accuracy points and must be between 0 and 100, got {margin:g}")
    for path, option in ((html, "--html"), (markdown, "--markdown"), (json_path, "--json")):
        check_writable(path, option)
    names = None
    if optimizers is not None:
        names = tuple(n.strip() for n in optimizers.split(",") if n.strip())
        if not names:
            fail("--optimizers needs at least one name (comma-separated)")
    request = AdviseRequest(
        workload=opt.workload_name(workload, data, num_classes, img_size),
        budget_seconds=seconds,
        optimizers=names,
        reference=reference,
        base=base or AdviseRequest.base,
        margin=margin / 100,
        batch_size=batch_size,
        search_batch_size=search_batch_size,
        epochs=epochs,
        device=device,
        data_dir=None if data_dir is None else str(data_dir),
        accumulate=micro_batches,
        storage=storage,
        tracking_uri=None if no_mlflow else tracking_uri,
        name=name,
        plugins=tuple(plugins_from_env()),  # `report --sweep` loads them again
    )
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    display = AdviseDisplay()
    report = html or REPORTS_DIR / f"{name or advise_name(request.workload)}.html"
    try:
        result = run_advise(
            request,
            observer=display,
            tracker_factory=tracker_for,
            started_ago=startup_seconds(),  # the budget counts the command's start-up
            dry_run=dry_run,
            outputs=() if dry_run else (report,),
        )
    except (SpecError, ValueError, WorkloadDataError) as error:
        fail(str(error))
    except KeyboardInterrupt:  # during the cost bench: nothing exists yet
        console.print("[yellow]interrupted[/] before anything was created")
        raise typer.Exit(INTERRUPTED) from None
    if dry_run:
        console.print("dry run: nothing was created or trained")
        return
    spec = result.spec
    if result.interrupted:
        console.print(
            "[yellow]interrupted[/]: the running trial is re-queued; run the same command "
            "again to continue (the time spent so far counts against the budget)"
        )
    print_advice(result.advice, result)
    used = 100 * result.elapsed_seconds / result.plan.budget_seconds
    console.print(
        f"spent {format_duration(result.elapsed_seconds)} of "
        f"{format_duration(result.plan.budget_seconds)} ({used:.0f} %)",
        highlight=False,
    )
    _write_outputs(result, report, markdown, json_path)
    stored = redact_url(spec.storage)
    console.print(
        f"stored as sweep {spec.name!r} in {stored}: `looksam-bench report --sweep "
        f"{shlex.quote(spec.name)} --storage {shlex.quote(stored)}` rebuilds this report",
        highlight=False,
    )
    if spec.tracking_uri is not None:
        console.print(
            f"MLflow: `looksam-bench ui --tracking-uri {redact_url(spec.tracking_uri)} "
            f"--sweep {shlex.quote(spec.name)}` compares its runs",
            highlight=False,
        )
    if result.interrupted:
        raise typer.Exit(INTERRUPTED)


def _write_outputs(
    result: AdviseResult, html: Path, markdown: Path | None, json_path: Path | None
) -> None:
    from looksam.sweeps.results import save_report

    written: list[Path] = []
    if result.data is not None:
        html.parent.mkdir(parents=True, exist_ok=True)
        written += save_report(result.data, html=html, markdown=markdown)
    if json_path is not None:
        write_json(result_payload(result), json_path)
        written.append(json_path)
    for path in written:
        console.print(f"wrote {path} ({path.stat().st_size:,} bytes)")
