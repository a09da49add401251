"""`looksam-bench bench` (step cost per optimizer) and `looksam-bench check` (CI regressions)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import Progress
from rich.table import Table

from looksam.bench.runner import AMP_MODES
from looksam.bench.suite import (
    DEFAULT_OPTIMIZERS,
    Baseline,
    BenchReport,
    CheckRow,
    SuiteSpec,
    baseline_from,
    compare,
    measure_suite,
)
from looksam.bench.workloads import WorkloadDataError, get_workload_info
from looksam.cli import _options as opt
from looksam.cli._console import check_writable, console, fail


def build_bench_table(report: BenchReport) -> Table:
    """Step time, throughput, ratio to the reference, floor and overhead per optimizer."""
    spec = report.spec
    table = Table(
        title=(
            f"Step cost on {spec.workload} (batch {report.batch_size}, k={spec.k}, "
            f"{report.environment.device}: {report.environment.device_name}, "
            f"median of {spec.rounds} paired rounds)"
        ),
        title_justify="left",
    )
    for column in ("optimizer", "median step", "samples/s", "ratio (IQR)", "floor", "overhead"):
        table.add_column(column, justify="left" if column == "optimizer" else "right")
    for cost in report.costs:
        table.add_row(
            cost.optimizer,
            f"{cost.median_step_seconds * 1e3:.2f} ms",
            f"{cost.samples_per_second:,.0f}",
            f"{cost.ratio:.3f} ({cost.ratio_q1:.3f}–{cost.ratio_q3:.3f})",
            f"{cost.floor:.2f}",
            f"{cost.overhead:+.3f}",
        )
    return table


def _measure(spec: SuiteSpec) -> BenchReport:
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task(f"timing {spec.workload}", total=spec.rounds)
        try:
            return measure_suite(spec, progress=lambda r: progress.update(task, completed=r))
        except (ValueError, WorkloadDataError) as error:
            fail(str(error))


def bench(
    workload: opt.Workload = "synthetic-mlp",
    optimizer: Annotated[
        list[str] | None,
        typer.Option("--optimizer", "-o", help="Optimizer(s) to time [default: the SAM family]."),
    ] = None,
    k: Annotated[int, typer.Option("--k", "-k", help="k for the k-step variants.")] = 5,
    batch_size: opt.BatchSize = None,
    device: opt.Device = "auto",
    amp: opt.Amp = "off",
    rounds: Annotated[int, typer.Option(help="Paired rounds; ratios are their median.")] = 20,
    data_dir: opt.DataDir = None,
    json_path: opt.JsonOut = None,
) -> None:
    """Time a training step of each optimizer against its base on one workload (speed only).

    Contenders alternate in one process after warm-up and each ratio is the median of per-round
    ratios, so drift on a shared machine cancels. [bold]floor[/] is the forward-backward passes
    per step (SAM 2, k-step variants 1 + 1/k); [bold]overhead[/] is what the optimizer's own
    arithmetic costs beyond it, in steps of the base optimizer.
    """
    names = tuple(optimizer or DEFAULT_OPTIMIZERS)
    try:
        get_workload_info(workload)
        spec = SuiteSpec(
            workload=workload,
            optimizers=names,
            k=k,
            batch_size=batch_size,
            device=device,
            amp=amp,
            rounds=rounds,
            data_dir=str(data_dir) if data_dir else None,
        )
    except ValueError as error:
        fail(str(error))
    if spec.amp not in AMP_MODES:
        fail(f"unknown --amp {amp!r}; choose one of: {', '.join(AMP_MODES)}")
    check_writable(json_path, "--json")
    report = _measure(spec)
    console.print(build_bench_table(report))
    if json_path is not None:
        json_path.write_text(json.dumps(report.to_dict(), indent=2) + "\n")
        console.print(f"wrote {json_path}")


def build_check_table(rows: list[CheckRow], tolerance: float) -> Table:
    """Baseline vs measured ratio per optimizer, regressions in red."""
    table = Table(
        title=f"Step-cost ratios vs baseline (tolerance +{100 * tolerance:.0f} %)",
        title_justify="left",
    )
    for column in ("workload", "optimizer", "baseline", "measured", "change", "limit", "verdict"):
        table.add_column(
            column, justify="left" if column in ("workload", "optimizer") else "right"
        )
    for row in rows:
        change = row.measured / row.baseline - 1.0
        verdict = "[bold red]REGRESSION[/]" if row.regressed else "[green]ok[/]"
        table.add_row(
            row.workload,
            row.optimizer,
            f"{row.baseline:.3f}",
            f"{row.measured:.3f}",
            f"{100 * change:+.1f} %",
            f"{row.limit:.3f}",
            verdict,
        )
    return table


def check(
    baseline_path: Annotated[
        Path, typer.Option("--baseline", help="Baseline JSON (suites, ratios, tolerance).")
    ] = Path("bench/baselines/cpu.json"),
    update: Annotated[
        bool, typer.Option("--update", help="Rewrite the baseline with fresh measurements.")
    ] = False,
) -> None:
    """Re-measure the suites a baseline names and fail (exit 1) if a ratio regressed.

    Only ratios to the base optimizer measured in one process are compared, never absolute
    times. A suite that looks regressed is measured once more and fails only if it regresses
    again, so one noisy moment on a shared machine does not fail CI.
    """
    try:
        baseline = Baseline.read(baseline_path)
    except ValueError as error:
        fail(str(error))
    reports = [_measure(spec) for spec in baseline.suites]
    if update:
        fresh = baseline_from(reports, baseline.tolerance)
        fresh.write(baseline_path)
        for report in reports:
            console.print(build_bench_table(report))
        console.print(f"updated {baseline_path}")
        return
    rows = compare(baseline, reports)
    suspects = {row.workload for row in rows if row.regressed}
    if suspects:
        console.print(
            f"[yellow]possible regression in {', '.join(sorted(suspects))}: re-measuring"
        )
        reports = [
            _measure(spec) if spec.workload in suspects else report
            for spec, report in zip(baseline.suites, reports, strict=True)
        ]
        second = compare(baseline, reports)
        # A regression must show in both measurements; report the milder one.
        rows = [min(a, b, key=lambda r: r.measured) for a, b in zip(rows, second, strict=True)]
    console.print(build_check_table(rows, baseline.tolerance))
    if any(row.regressed for row in rows):
        console.print("[bold red]performance regression[/]: a ratio exceeds its limit")
        raise typer.Exit(1)
    console.print("[green]no regression[/]")
