"""`looksam-bench bench` (step cost per optimizer) and `looksam-bench check` (CI regressions)."""

from __future__ import annotations

import dataclasses
import functools
import json
import statistics
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.progress import Progress, TaskID
from rich.table import Table

from looksam.bench.check import (
    DEFAULT_BASELINE,
    CheckResult,
    InitPlan,
    InitRequest,
    Measurers,
    Written,
    choose_mode,
    init_baseline,
    plan_init,
    run_check,
    update_baseline,
)
from looksam.bench.check_summary import format_allowed, format_change, format_row_value
from looksam.bench.profile import format_bytes, profile_suite
from looksam.bench.scaling import (
    ScalingRow,
    ScalingSpec,
    measure_scaling,
    measure_scaling_under_torchrun,
)
from looksam.bench.suite import (
    AccuracyExpectation,
    Baseline,
    BenchReport,
    CheckRow,
    SuiteSpec,
    default_optimizers,
    measure_accuracy,
    measure_suite,
)
from looksam.cli import _options as opt
from looksam.cli._console import (
    ProgressLog,
    check_writable,
    console,
    err_console,
    fail,
    in_a_log,
)
from looksam.cli.optimizers import WIDE
from looksam.optim import LINEUPS, option_help
from looksam.train.distributed import launch_from_env
from looksam.train.runner import AMP_MODES
from looksam.train.workloads import WorkloadDataError, get_workload_info


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


def build_profile_table(report: BenchReport) -> Table:
    """What a step is made of: ops and passes over |θ| of its own code, and its extra memory."""
    table = Table(
        title=(
            f"What a step does on {report.spec.workload} beyond the forward-backward passes: "
            "ATen ops, passes over the parameters' memory (|θ|), and peak memory over "
            f"{report.spec.reference}'s"
        ),
        title_justify="left",
    )
    columns = ("optimizer", "ops plain", "ops look", "|θ| plain", "|θ| look", "extra memory")
    for column in columns:
        table.add_column(column, justify="left" if column == "optimizer" else "right")
    for p in report.profiles:
        table.add_row(
            p.optimizer,
            _count(p.plain_ops),
            _count(p.look_ops),
            _count(p.plain_passes, "{:.1f}"),
            _count(p.look_passes, "{:.1f}"),
            format_bytes(p.extra_bytes, signed=True),
        )
    return table


def _count(value: float | None, pattern: str = "{:d}") -> str:
    return "—" if value is None else pattern.format(value)


def _advance(progress: Progress, task: TaskID, done: int) -> None:
    progress.update(task, completed=done)


def _measure(spec: SuiteSpec) -> BenchReport:
    description = f"timing {spec.workload}"
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task(description, total=spec.rounds)
        tell: Callable[[int], None]
        if not in_a_log():
            tell = functools.partial(_advance, progress, task)
        else:  # a log: the live bar is not drawn there
            tell = ProgressLog(f"{description} (paired rounds)", spec.rounds)
        try:
            return measure_suite(spec, progress=tell)
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
    log = None
    if in_a_log():  # plain lines on stderr: the live bar is not drawn in a log
        runs = 2 * spec.repeats * len(spec.optimizers)
        log = ProgressLog(f"1 vs {spec.nproc} processes", runs, "runs")
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task(f"1 vs {spec.nproc} processes", total=None)

        def tell(done: int, total: int) -> None:
            progress.update(task, completed=done, total=total)
            if log is not None:
                log(done, total)

        try:
            rows = measure(spec, progress=tell)
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
        typer.Option(
            "--optimizer", "-o", help="Optimizer(s) to time \\[default: the SAM family]."
        ),
    ] = None,
    k: Annotated[int, typer.Option("--k", "-k", help=option_help("k"))] = opt.DEFAULT_K,
    batch_size: opt.BatchSize = None,
    device: opt.Device = "auto",
    amp: opt.Amp = "off",
    rounds: Annotated[int, typer.Option(help="Paired rounds; ratios are their median.")] = 20,
    data_dir: opt.DataDir = None,
    data: opt.Data = None,
    num_classes: opt.NumClasses = None,
    img_size: opt.ImgSize = None,
    json_path: opt.JsonOut = None,
    micro_batches: opt.Accumulate = 1,
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
    workload = opt.workload_name(workload, data, num_classes, img_size)
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
            micro_batches=micro_batches,
        )
    except ValueError as error:
        fail(str(error))
    if spec.amp not in AMP_MODES:
        fail(f"unknown --amp {amp!r}; choose one of: {', '.join(AMP_MODES)}")
    check_writable(json_path, "--json")
    report = _measure(spec)
    with console.status("counting what each step does (ops, passes, memory)"):
        report = dataclasses.replace(report, profiles=profile_suite(spec))
    console.print(build_bench_table(report))
    console.print(build_profile_table(report))
    for line in report.floor_violations():
        console.print(
            f"[yellow]contended[/]: {line}; the machine was busy while timing, so this ratio "
            "supports no claim"
        )
    if json_path is not None:
        json_path.write_text(json.dumps(report.to_dict(), indent=2) + "\n")
        console.print(f"wrote {json_path}")


def build_check_table(rows: list[CheckRow], tolerance: float, width: int = WIDE) -> Table:
    """Baseline vs measured value per optimizer (and metric), regressions in red; laid out for
    a console ``width`` columns wide (narrower than :data:`WIDE`: the workload heads its rows
    and the metric goes under the optimizer, so no number is squeezed at 80 columns)."""
    with_metric = any(row.metric != "ratio" for row in rows)
    title = "Check vs baseline" if with_metric else "Step-cost ratios vs baseline"
    table = Table(title=f"{title} (tolerance +{100 * tolerance:.0f} %)", title_justify="left")
    wide = width >= WIDE
    if wide:
        columns: tuple[str, ...] = ("workload", "optimizer", *(("metric",) if with_metric else ()))
    else:
        columns = ("workload · optimizer · metric" if with_metric else "workload · optimizer",)
    values = ("baseline", "measured", "change", "limit", "verdict")
    for column in (*columns, *values):
        table.add_column(column, justify="left" if column in columns else "right")
    workload = None
    for row in rows:
        if not wide and row.workload != workload:
            workload = row.workload
            table.add_row(f"[bold]{escape(workload)}[/]", *("",) * len(values))
        named = [row.workload, row.optimizer, *((row.metric,) if with_metric else ())]
        if not wide:
            metric = f" [dim]{row.metric}[/]" if with_metric else ""
            named = [f"  {escape(row.optimizer)}{metric}"]
        table.add_row(
            *named,
            format_row_value(row, row.baseline),
            format_row_value(row, row.measured),
            format_change(row),
            format_allowed(row),
            "[bold red]REGRESSION[/]" if row.regressed else "[green]ok[/]",
        )
    return table


def _accuracy(
    spec: SuiteSpec, steps: int, seed: int, threads: int | None = None
) -> dict[str, float]:
    names = tuple(dict.fromkeys((spec.reference, *spec.optimizers)))
    log = None
    if in_a_log():  # plain lines on stderr: the live bar is not drawn in a log
        log = ProgressLog(f"accuracy runs on {spec.workload}", steps * len(names), "steps")
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task(f"accuracy runs on {spec.workload}", total=None)

        def tell(name: str, step: int, total: int) -> None:
            description = f"{spec.workload}: {name}, {steps} steps"
            progress.update(task, description=description, completed=step, total=total)
            if log is not None:
                log(names.index(name) * steps + step)

        try:
            return measure_accuracy(spec, steps, seed, threads=threads, progress=tell)
        except (ValueError, WorkloadDataError) as error:
            fail(str(error))


#: How ``check`` measures: with a bar on a terminal, log lines elsewhere; "re-measuring" in
#: yellow.
MEASURERS = Measurers(
    suite=_measure,
    accuracy=_accuracy,
    note=lambda message: console.print(f"[yellow]{message}"),
)


def _print_accuracy(guard: AccuracyExpectation) -> None:
    values = ", ".join(f"{name} {value:.4f}" for name, value in guard.final_accuracy.items())
    threads = "" if guard.threads is None else f", {guard.threads} CPU threads"
    console.print(
        f"final accuracy after {guard.steps} steps (seed {guard.seed}{threads}, tolerance "
        f"±{guard.tolerance:g}): {values}"
    )


def _print_written(written: Written, plan: InitPlan | None = None) -> None:
    """What ``--init`` (``plan``) or ``--update`` measured and wrote."""
    for report in written.reports:
        console.print(build_bench_table(report))
    for guard in written.guards:
        if guard is not None:
            _print_accuracy(guard)
    if plan is None:
        console.print(f"updated {written.path}")
        return
    if plan.absolute_tolerance is not None:
        console.print(
            f"absolute mode: samples/s on {written.reports[0].environment.device_name!r}, "
            f"tolerance -{100 * plan.absolute_tolerance:g} %"
        )
    console.print(f"wrote {written.path}")


def _write_summaries(result: CheckResult, json_path: Path | None, markdown: Path | None) -> None:
    if json_path is not None:
        json_path.write_text(json.dumps(result.to_dict(), indent=2) + "\n")
        console.print(f"wrote {json_path}")
    if markdown is not None:
        text = result.markdown()
        if str(markdown) == "-":
            typer.echo(text, nl=False)
        else:
            markdown.write_text(text)
            console.print(f"wrote {markdown}")


def check(
    baseline_path: Annotated[
        Path | None,
        typer.Option(
            "--baseline",
            help="Baseline JSON (suites, ratios, tolerance) "
            "\\[default: bench/baselines/cpu.json].",
        ),
    ] = None,
    update: Annotated[
        bool, typer.Option("--update", help="Rewrite the baseline with fresh measurements.")
    ] = False,
    init: Annotated[
        Path | None,
        typer.Option(
            "--init",
            metavar="PATH",
            help="Measure one suite (-w, -o, ...) and write it as a new baseline to PATH.",
            rich_help_panel="--init",
        ),
    ] = None,
    force: Annotated[
        bool,
        typer.Option(
            "--force", help="With --init: overwrite an existing file.", rich_help_panel="--init"
        ),
    ] = False,
    workload: Annotated[
        str | None,
        typer.Option(
            "--workload",
            "-w",
            help="With --init: the workload \\[default: synthetic-mlp].",
            rich_help_panel="--init",
        ),
    ] = None,
    optimizer: Annotated[
        list[str] | None,
        typer.Option(
            "--optimizer",
            "-o",
            help="With --init: optimizer(s) to time \\[default: the SAM family].",
            rich_help_panel="--init",
        ),
    ] = None,
    k: Annotated[
        int | None,
        typer.Option(
            "--k",
            "-k",
            help=f"With --init: k of the k-step variants \\[default: {opt.DEFAULT_K}].",
            rich_help_panel="--init",
        ),
    ] = None,
    batch_size: Annotated[
        int | None,
        typer.Option(
            "--batch-size",
            "-b",
            help="With --init: batch size \\[default: workload's].",
            rich_help_panel="--init",
        ),
    ] = None,
    device: Annotated[
        str | None,
        typer.Option(
            help="With --init: auto, cpu, cuda or mps \\[default: auto], recorded resolved.",
            rich_help_panel="--init",
        ),
    ] = None,
    amp: Annotated[
        str | None,
        typer.Option(
            help="With --init: off, bf16 or fp16 \\[default: off].", rich_help_panel="--init"
        ),
    ] = None,
    rounds: Annotated[
        int | None,
        typer.Option(help="With --init: paired rounds \\[default: 20].", rich_help_panel="--init"),
    ] = None,
    data_dir: Annotated[
        Path | None,
        typer.Option(
            "--data-dir",
            help="With --init: where the workload's data lives.",
            rich_help_panel="--init",
        ),
    ] = None,
    data: Annotated[
        str | None,
        typer.Option(
            help="With --init, timm:MODEL workloads: synthetic (random tensors, speed only).",
            rich_help_panel="--init",
        ),
    ] = None,
    num_classes: Annotated[
        int | None,
        typer.Option(
            min=2, help="With --init, timm:MODEL workloads: outputs.", rich_help_panel="--init"
        ),
    ] = None,
    img_size: Annotated[
        int | None,
        typer.Option(
            min=1, help="With --init, timm:MODEL workloads: input side.", rich_help_panel="--init"
        ),
    ] = None,
    tolerance: Annotated[
        float | None,
        typer.Option(
            help="With --init: a ratio above baseline × (1 + T) fails \\[default: 0.1].",
            rich_help_panel="--init",
        ),
    ] = None,
    absolute: Annotated[
        bool,
        typer.Option(
            "--absolute",
            help="With --init: also record samples/s and the device name (fixed hardware; a "
            "check on another device is refused).",
            rich_help_panel="--init",
        ),
    ] = False,
    absolute_tolerance: Annotated[
        float | None,
        typer.Option(
            help="With --absolute: samples/s below baseline × (1 - T) fail \\[default: 0.1].",
            rich_help_panel="--init",
        ),
    ] = None,
    accuracy_steps: Annotated[
        int | None,
        typer.Option(
            help="With --init: also record each optimizer's final accuracy after N steps from a "
            "fixed seed (the accuracy guard; not on synthetic workloads).",
            rich_help_panel="--init",
        ),
    ] = None,
    accuracy_tolerance: Annotated[
        float | None,
        typer.Option(
            help="With --accuracy-steps: allowed difference in accuracy \\[default: 0 on cpu, "
            "i.e. bit for bit; 0.01 elsewhere].",
            rich_help_panel="--init",
        ),
    ] = None,
    json_path: Annotated[
        Path | None,
        typer.Option("--json", help="Also write the check's rows and verdict as JSON."),
    ] = None,
    markdown: Annotated[
        Path | None,
        typer.Option(
            "--markdown",
            help="Also write a Markdown summary (e.g. $GITHUB_STEP_SUMMARY); - prints it on "
            "stdout after the table.",
        ),
    ] = None,
) -> None:
    """Re-measure the suites a baseline names and fail (exit 1) if a ratio regressed.

    Only ratios to the base optimizer measured in one process are compared, never absolute
    times. A suite that looks regressed is measured once more and fails only if it regresses
    again, so one noisy moment on a shared machine does not fail CI.

    A baseline made with [bold]--absolute[/] also holds samples/s on a named device (fixed
    hardware): each must stay above baseline × (1 - its tolerance), and a check on another
    device is refused. One made with [bold]--accuracy-steps N[/] also holds each optimizer's
    final accuracy after N steps from a fixed seed, which the check trains again and compares
    (bit for bit on a CPU). [bold]--init PATH[/] writes a new baseline for your own workload.
    """
    given = {
        "--force": force or None,
        "--workload": workload,
        "--optimizer": optimizer,
        "--k": k,
        "--batch-size": batch_size,
        "--device": device,
        "--amp": amp,
        "--rounds": rounds,
        "--data-dir": data_dir,
        "--data": data,
        "--num-classes": num_classes,
        "--img-size": img_size,
        "--tolerance": tolerance,
        "--absolute": absolute or None,
        "--absolute-tolerance": absolute_tolerance,
        "--accuracy-steps": accuracy_steps,
        "--accuracy-tolerance": accuracy_tolerance,
    }
    try:
        mode = choose_mode(
            init=init,
            update=update,
            baseline_given=baseline_path is not None,
            records=json_path is not None or markdown is not None,
            stray=[name for name, value in given.items() if value is not None],
        )
        if init is not None:
            request = InitRequest(
                init,
                force=force,
                workload=opt.workload_name(
                    workload or "synthetic-mlp", data, num_classes, img_size
                ),
                optimizers=optimizer,
                k=k,
                batch_size=batch_size,
                device=device,
                amp=amp,
                rounds=rounds,
                data_dir=data_dir,
                tolerance=tolerance,
                absolute=absolute,
                absolute_tolerance=absolute_tolerance,
                accuracy_steps=accuracy_steps,
                accuracy_tolerance=accuracy_tolerance,
            )
            plan = plan_init(request, check_path=check_writable)
            _print_written(init_baseline(plan, MEASURERS), plan)
            return
        path = DEFAULT_BASELINE if baseline_path is None else baseline_path
        baseline = Baseline.read(path)
        if mode == "update":
            _print_written(update_baseline(baseline, path, MEASURERS))
            return
        check_writable(json_path, "--json")
        if markdown is not None and str(markdown) != "-":
            check_writable(markdown, "--markdown")
        result = run_check(baseline, path, MEASURERS)
    except ValueError as error:  # CheckRefusedError, an unreadable baseline
        fail(str(error))
    console.print(build_check_table(result.rows, baseline.tolerance, console.width))
    _write_summaries(result, json_path, markdown)
    if result.failed:
        metrics = sorted({row.metric for row in result.failed})
        console.print(
            f"[bold red]regression[/]: {len(result.failed)} value(s) outside their limit "
            f"({', '.join(metrics)})"
        )
        raise typer.Exit(1)
    console.print("[green]no regression[/]")
