"""`looksam-bench bench` (step cost per optimizer) and `looksam-bench check` (CI regressions)."""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import statistics
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import torch
import typer
from rich.progress import Progress, TaskID
from rich.table import Table

from looksam.bench.check_summary import (
    format_allowed,
    format_change,
    format_row_value,
    summary_dict,
    summary_markdown,
)
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
    baseline_from,
    check_baseline,
    compare_accuracy,
    default_optimizers,
    measure_accuracy,
    measure_suite,
)
from looksam.cli import _options as opt
from looksam.cli._console import check_writable, console, err_console, fail, logged_progress
from looksam.optim import LINEUPS
from looksam.train.distributed import launch_from_env
from looksam.train.runner import AMP_MODES, environment, resolve_device
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
        if console.is_terminal:
            tell = functools.partial(_advance, progress, task)
        else:  # a log: the live bar is not drawn there
            tell = logged_progress(f"{description} (paired rounds)", spec.rounds)
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
        typer.Option(
            "--optimizer", "-o", help="Optimizer(s) to time \\[default: the SAM family]."
        ),
    ] = None,
    k: Annotated[int, typer.Option("--k", "-k", help="k for the k-step variants.")] = 5,
    batch_size: opt.BatchSize = None,
    device: opt.Device = "auto",
    amp: opt.Amp = "off",
    rounds: Annotated[int, typer.Option(help="Paired rounds; ratios are their median.")] = 20,
    data_dir: opt.DataDir = None,
    data: opt.Data = None,
    num_classes: opt.NumClasses = None,
    img_size: opt.ImgSize = None,
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


def build_check_table(rows: list[CheckRow], tolerance: float) -> Table:
    """Baseline vs measured value per optimizer (and metric), regressions in red."""
    with_metric = any(row.metric != "ratio" for row in rows)
    title = "Check vs baseline" if with_metric else "Step-cost ratios vs baseline"
    table = Table(title=f"{title} (tolerance +{100 * tolerance:.0f} %)", title_justify="left")
    columns = ("workload", "optimizer", *(("metric",) if with_metric else ()))
    for column in (*columns, "baseline", "measured", "change", "limit", "verdict"):
        table.add_column(column, justify="left" if column in columns else "right")
    for row in rows:
        verdict = "[bold red]REGRESSION[/]" if row.regressed else "[green]ok[/]"
        table.add_row(
            row.workload,
            row.optimizer,
            *((row.metric,) if with_metric else ()),
            format_row_value(row, row.baseline),
            format_row_value(row, row.measured),
            format_change(row),
            format_allowed(row),
            verdict,
        )
    return table


#: Where ``check`` looks for its baseline when --baseline is not given.
DEFAULT_BASELINE = Path("bench/baselines/cpu.json")
#: Defaults of ``check --init``: ratio tolerance, absolute (samples/s) tolerance, and the
#: accuracy tolerance off the CPU (on the CPU it is 0: the runs repeat bit for bit).
INIT_TOLERANCE = 0.1
INIT_ABSOLUTE_TOLERANCE = 0.1
INIT_ACCURACY_TOLERANCE_ACCELERATOR = 0.01
#: The seed of the accuracy guard's runs (recorded in the baseline; edit it there).
ACCURACY_SEED = 0


def _accuracy(
    spec: SuiteSpec, steps: int, seed: int, threads: int | None = None
) -> dict[str, float]:
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task(f"accuracy runs on {spec.workload}", total=None)

        def tell(name: str, step: int, total: int) -> None:
            description = f"{spec.workload}: {name}, {steps} steps"
            progress.update(task, description=description, completed=step, total=total)

        try:
            return measure_accuracy(spec, steps, seed, threads=threads, progress=tell)
        except (ValueError, WorkloadDataError) as error:
            fail(str(error))


def _fresh_accuracy(
    spec: SuiteSpec, steps: int, seed: int, tolerance: float
) -> AccuracyExpectation:
    """Record an accuracy guard (with this CPU's torch threads, which the check will use);
    a run that does not finish cannot be one (exit 2)."""
    threads = torch.get_num_threads() if spec.device == "cpu" else None
    accuracies = _accuracy(spec, steps, seed, threads)
    for name, value in accuracies.items():
        if math.isnan(value):
            fail(
                f"the {steps}-step accuracy run of {name} on {spec.workload} did not finish "
                "(diverged or out of memory): choose other --accuracy-steps or settings"
            )
    return AccuracyExpectation(
        steps=steps, seed=seed, tolerance=tolerance, final_accuracy=accuracies, threads=threads
    )


def _print_accuracy(guard: AccuracyExpectation) -> None:
    values = ", ".join(f"{name} {value:.4f}" for name, value in guard.final_accuracy.items())
    threads = "" if guard.threads is None else f", {guard.threads} CPU threads"
    console.print(
        f"final accuracy after {guard.steps} steps (seed {guard.seed}{threads}, tolerance "
        f"±{guard.tolerance:g}): {values}"
    )


def _measure_sound(spec: SuiteSpec) -> BenchReport:
    """Measure a suite a baseline will record. A ratio below its pass floor cannot come from a
    correct timing: the suite is measured once more, and a second one refuses (exit 2), so no
    contended ratio is ever written as a baseline."""
    report = _measure(spec)
    if not report.floor_violations():
        return report
    console.print(f"[yellow]{report.floor_violations()[0]}: re-measuring")
    report = _measure(spec)
    violations = report.floor_violations()
    if violations:
        fail(
            f"{violations[0]}, twice: the machine is too busy to time; nothing was written "
            "(retry when it is quieter)"
        )
    return report


def _init(
    path: Path,
    *,
    force: bool,
    workload: str | None,
    optimizer: list[str] | None,
    k: int | None,
    batch_size: int | None,
    device: str | None,
    amp: str | None,
    rounds: int | None,
    data_dir: Path | None,
    tolerance: float | None,
    absolute: bool,
    absolute_tolerance: float | None,
    accuracy_steps: int | None,
    accuracy_tolerance: float | None,
) -> None:
    """``check --init``: measure one suite and write a new baseline; every refusal comes
    before any measuring."""
    if path.exists() and not force:
        fail(f"baseline {path} exists; pass --force to overwrite it (--update re-measures it)")
    check_writable(path, "--init")
    if absolute_tolerance is not None and not absolute:
        fail("--absolute-tolerance only applies with --absolute")
    if accuracy_tolerance is not None and accuracy_steps is None:
        fail("--accuracy-tolerance only applies with --accuracy-steps")
    tolerance = INIT_TOLERANCE if tolerance is None else tolerance
    if not tolerance >= 0:
        fail(f"--tolerance must be >= 0, got {tolerance}")
    abs_tol = INIT_ABSOLUTE_TOLERANCE if absolute_tolerance is None else absolute_tolerance
    if not 0 <= abs_tol < 1:
        fail(f"--absolute-tolerance must be in [0, 1), got {abs_tol}")
    name = workload or "synthetic-mlp"
    try:
        info = get_workload_info(name)
        spec = SuiteSpec(
            workload=name,
            optimizers=tuple(optimizer or default_optimizers()),
            k=5 if k is None else k,
            batch_size=batch_size,
            # Recorded resolved: a baseline made on a GPU is checked on a GPU, not on a CPU.
            device=resolve_device(device or "auto").type,
            amp=amp or "off",
            rounds=20 if rounds is None else rounds,
            data_dir=str(data_dir) if data_dir else None,
        )
    except ValueError as error:
        fail(str(error))
    if spec.amp not in AMP_MODES:
        fail(f"unknown --amp {spec.amp!r}; choose one of: {', '.join(AMP_MODES)}")
    if accuracy_steps is not None:
        if not info.measures_accuracy:
            fail(
                f"{name} trains on random data and measures no accuracy: the accuracy guard "
                "needs a workload with real data (leave out --accuracy-steps)"
            )
        if accuracy_steps < 1:
            fail(f"--accuracy-steps must be >= 1, got {accuracy_steps}")
    default_acc_tol = 0.0 if spec.device == "cpu" else INIT_ACCURACY_TOLERANCE_ACCELERATOR
    acc_tol = default_acc_tol if accuracy_tolerance is None else accuracy_tolerance
    if not acc_tol >= 0:
        fail(f"--accuracy-tolerance must be >= 0, got {acc_tol}")
    report = _measure_sound(spec)
    guard = None
    if accuracy_steps is not None:
        guard = _fresh_accuracy(spec, accuracy_steps, ACCURACY_SEED, acc_tol)
    fresh = baseline_from(
        [report],
        tolerance,
        absolute_tolerances=[abs_tol if absolute else None],
        accuracy=[guard],
    )
    fresh.write(path)
    console.print(build_bench_table(report))
    if guard is not None:
        _print_accuracy(guard)
    if absolute:
        console.print(
            f"absolute mode: samples/s on {report.environment.device_name!r}, "
            f"tolerance -{100 * abs_tol:g} %"
        )
    console.print(f"wrote {path}")


def _update(baseline: Baseline, path: Path) -> None:
    """``check --update``: re-measure everything the baseline records, keeping its settings."""
    reports = [_measure_sound(spec) for spec in baseline.suites]
    guards = [
        None if guard is None else _fresh_accuracy(spec, guard.steps, guard.seed, guard.tolerance)
        for spec, guard in zip(baseline.suites, baseline.accuracy, strict=True)
    ]
    fresh = baseline_from(
        reports,
        baseline.tolerance,
        absolute_tolerances=[None if a is None else a.tolerance for a in baseline.absolute],
        accuracy=guards,
    )
    fresh.write(path)
    for report in reports:
        console.print(build_bench_table(report))
    for guard in guards:
        if guard is not None:
            _print_accuracy(guard)
    console.print(f"updated {path}")


def _preflight(baseline: Baseline, path: Path) -> None:
    """Refuse (exit 2) what cannot be checked here, before measuring anything: absolute
    samples/s from another device, an accuracy guard on a workload without accuracy."""
    for spec, absolute, guard in zip(
        baseline.suites, baseline.absolute, baseline.accuracy, strict=True
    ):
        try:
            info = get_workload_info(spec.workload)
            here = environment(resolve_device(spec.device)).device_name if absolute else ""
        except ValueError as error:
            fail(str(error))
        if absolute is not None and here != absolute.device_name:
            fail(
                f"baseline {path} holds absolute samples/s of {spec.workload} measured on "
                f"{absolute.device_name!r}, but this {spec.device} is {here!r}: check on that "
                "device, or record a baseline here with check --init"
            )
        if guard is not None and not info.measures_accuracy:
            fail(
                f"baseline {path} has an accuracy guard on {spec.workload}, which trains on "
                "random data and measures no accuracy"
            )


def _write_summaries(
    rows: list[CheckRow],
    baseline: Baseline,
    path: Path,
    json_path: Path | None,
    markdown: Path | None,
) -> None:
    if json_path is None and markdown is None:
        return
    env = None
    if baseline.suites:
        env = dataclasses.asdict(environment(resolve_device(baseline.suites[0].device)))
    what: dict[str, Any] = {
        "baseline": str(path),
        "tolerance": baseline.tolerance,
        "environment": env,
    }
    if json_path is not None:
        json_path.write_text(json.dumps(summary_dict(rows, **what), indent=2) + "\n")
        console.print(f"wrote {json_path}")
    if markdown is not None:
        text = summary_markdown(rows, **what)
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
            help="With --init: k of the k-step variants \\[default: 5].",
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
    if init is None:
        stray = [name for name, value in given.items() if value is not None]
        if stray:
            verb = "applies" if len(stray) == 1 else "apply"
            fail(f"{', '.join(stray)} only {verb} with --init PATH")
    else:
        if update:
            fail("--init writes a new baseline and --update re-measures an existing one: give one")
        if baseline_path is not None:
            fail("--init PATH names the baseline to write: leave out --baseline")
    if (init is not None or update) and (json_path is not None or markdown is not None):
        fail("--json and --markdown record a check: leave them out with --init and --update")
    if init is not None:
        _init(
            init,
            force=force,
            workload=opt.workload_name(workload or "synthetic-mlp", data, num_classes, img_size),
            optimizer=optimizer,
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
        return
    path = DEFAULT_BASELINE if baseline_path is None else baseline_path
    try:
        baseline = Baseline.read(path)
    except ValueError as error:
        fail(str(error))
    if update:
        _update(baseline, path)
        return
    check_writable(json_path, "--json")
    if markdown is not None and str(markdown) != "-":
        check_writable(markdown, "--markdown")
    _preflight(baseline, path)
    try:
        rows = check_baseline(
            baseline,
            _measure,
            remeasuring=lambda names: console.print(
                f"[yellow]possible regression in {', '.join(names)}: re-measuring"
            ),
        )
        accuracies = [
            None if guard is None else _accuracy(spec, guard.steps, guard.seed, guard.threads)
            for spec, guard in zip(baseline.suites, baseline.accuracy, strict=True)
        ]
        rows += compare_accuracy(baseline, accuracies)
    except ValueError as error:
        fail(f"baseline {path}: {error}")
    console.print(build_check_table(rows, baseline.tolerance))
    _write_summaries(rows, baseline, path, json_path, markdown)
    failed = [row for row in rows if row.regressed]
    if failed:
        metrics = sorted({row.metric for row in failed})
        console.print(
            f"[bold red]regression[/]: {len(failed)} value(s) outside their limit "
            f"({', '.join(metrics)})"
        )
        raise typer.Exit(1)
    console.print("[green]no regression[/]")
