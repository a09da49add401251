"""`looksam-bench bench` (step cost per optimizer) and `looksam-bench check` (CI regressions)."""

from __future__ import annotations

import dataclasses
import json
import statistics
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import Progress
from rich.table import Table

from looksam.bench.distributed import launch_from_env
from looksam.bench.runner import AMP_MODES
from looksam.bench.scaling import (
    ScalingRow,
    ScalingSpec,
    measure_scaling,
    measure_scaling_under_torchrun,
)
from looksam.bench.suite import (
    Baseline,
    BenchReport,
    CheckRow,
    SuiteSpec,
    baseline_from,
    check_baseline,
    default_optimizers,
    measure_suite,
)
from looksam.bench.workloads import WorkloadDataError, get_workload_info
from looksam.cli import _options as opt
from looksam.cli._console import check_writable, console, err_console, fail
from looksam.optim import LINEUPS


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


def build_scaling_table(spec: ScalingSpec, rows: list[ScalingRow]) -> Table:
    """Global samples/s with 1 and N processes, each rank's share, and the efficiency."""
    table = Table(
        title=(
            f"Data-parallel scaling on {spec.workload} (global batch {spec.batch_size}, "
            f"{spec.nproc} processes vs 1, {spec.device}, median of {spec.repeats} pairs)"
        ),
        title_justify="left",
        caption="efficiency = samples/s with N processes ÷ (N × samples/s with one); 1.00 is "
        "linear scaling",
        caption_justify="left",
    )
    for column in ("optimizer", "1 process", f"{spec.nproc} processes", "per rank", "efficiency"):
        table.add_column(column, justify="left" if column == "optimizer" else "right")
    for row in rows:
        table.add_row(
            row.optimizer,
            f"{statistics.median(row.single):,.0f}",
            f"{statistics.median(row.parallel):,.0f}",
            " / ".join(f"{v:,.0f}" for v in row.per_rank),
            f"{row.efficiency:.2f}",
        )
    return table


def _scaling(spec: ScalingSpec, json_path: Path | None, under_torchrun: bool) -> None:
    measure = measure_scaling_under_torchrun if under_torchrun else measure_scaling
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task(f"1 vs {spec.nproc} processes", total=None)
        try:
            rows = measure(
                spec,
                progress=lambda done, total: progress.update(task, completed=done, total=total),
            )
        except (RuntimeError, ValueError, WorkloadDataError) as error:
            fail(f"a scaling run failed: {error}")
    if not rows:
        return  # a rank other than 0 under torchrun: rank 0 reports
    console.print(build_scaling_table(spec, rows))
    if json_path is not None:
        payload = {"spec": dataclasses.asdict(spec), "rows": [row.to_dict() for row in rows]}
        json_path.write_text(json.dumps(payload, indent=2) + "\n")
        console.print(f"wrote {json_path}")


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
    nproc: Annotated[
        int | None,
        typer.Option(
            help="Measure data-parallel scaling instead: N processes under torchrun against one "
            "(per-rank samples/s and efficiency).",
        ),
    ] = None,
    steps: Annotated[
        int, typer.Option(help="With --nproc: training steps per run (warm-up excluded).")
    ] = 200,
    repeats: Annotated[
        int, typer.Option(help="With --nproc: alternating 1-process / N-process pairs.")
    ] = 3,
) -> None:
    """Time a training step of each optimizer against its base on one workload (speed only).

    Contenders alternate in one process after warm-up and each ratio is the median of per-round
    ratios, so drift on a shared machine cancels. [bold]floor[/] is the forward-backward passes
    per step the timed steps took, counted (SAM 2, k-step variants 1 + 1/k, adaptive ones what
    their rule decided); [bold]overhead[/] is what the optimizer's own arithmetic costs beyond it,
    in steps of the base optimizer.

    With [bold]--nproc N[/] it measures data-parallel scaling instead: each optimizer trains
    --steps steps as one process and as N processes under torchrun (the global batch split N
    ways), alternately, --repeats times, and reports global and per-rank samples/s and the
    efficiency, samples/s with N ÷ (N × samples/s with one). Launched by torchrun itself
    (torchrun --nproc-per-node N -m looksam bench ..., one node or several) it does the same
    with the launch as the N-process side; rank 0 runs the one-process side on its own.
    """
    try:
        launch = launch_from_env()
    except ValueError as error:
        fail(str(error))
    world = launch.world_size if launch is not None else 1
    under_torchrun = world > 1
    if under_torchrun and nproc is not None:
        fail("--nproc starts torchrun itself: under torchrun leave it out")
    if under_torchrun or nproc is not None:
        if launch is not None and launch.rank != 0:
            console.quiet = err_console.quiet = True  # rank 0 reports
        try:
            get_workload_info(workload)
            scaling = ScalingSpec(
                workload=workload,
                optimizers=tuple(optimizer or LINEUPS["scaling"]),
                nproc=world if under_torchrun else int(nproc or 0),
                batch_size=batch_size or 1024,
                steps=steps,
                repeats=repeats,
                k=k,
                device=device,
                data_dir=str(data_dir) if data_dir else None,
            )
        except ValueError as error:
            fail(str(error))
        check_writable(json_path, "--json")
        _scaling(scaling, json_path, under_torchrun)
        return
    names = tuple(optimizer or default_optimizers())
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
    if update:
        reports = [_measure(spec) for spec in baseline.suites]
        fresh = baseline_from(reports, baseline.tolerance)
        fresh.write(baseline_path)
        for report in reports:
            console.print(build_bench_table(report))
        console.print(f"updated {baseline_path}")
        return
    rows = check_baseline(
        baseline,
        _measure,
        remeasuring=lambda names: console.print(
            f"[yellow]possible regression in {', '.join(names)}: re-measuring"
        ),
    )
    console.print(build_check_table(rows, baseline.tolerance))
    if any(row.regressed for row in rows):
        console.print("[bold red]performance regression[/]: a ratio exceeds its limit")
        raise typer.Exit(1)
    console.print("[green]no regression[/]")
