"""`looksam-bench run` and `looksam-bench workloads`: one measured training run."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from looksam.bench.runner import EpochRecord, RunConfig, RunResult, run_training, validate_config
from looksam.bench.workloads import WorkloadDataError, list_workloads
from looksam.cli import _options as opt
from looksam.cli._console import check_writable, console, fail


def hyperparameters(**values: Any) -> dict[str, Any]:
    """Only the hyperparameters the user actually gave (the rest take registry defaults)."""
    return {key: value for key, value in values.items() if value is not None}


def _fmt_pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.2f} %"


def build_result_table(result: RunResult) -> Table:
    """Rich summary of one run."""
    c = result.config
    hp = ", ".join(f"{k}={v}" for k, v in sorted(c.hyperparameters.items()))
    table = Table(title="Run summary", title_justify="left", show_header=False)
    table.add_column(style="bold")
    table.add_column()
    status_style = "green" if result.status == "ok" else "red"
    rows = [
        ("workload", c.workload),
        ("optimizer", f"{c.optimizer}" + (f" (base {c.base})" if c.base else "") + f" {hp}"),
        ("status", f"[{status_style}]{result.status}[/] {result.message}"),
        (
            "final / best test acc",
            f"{_fmt_pct(result.final_accuracy)} / {_fmt_pct(result.best_accuracy)}",
        ),
        ("train time (eval excluded)", f"{result.train_seconds:.2f} s"),
        ("throughput", f"{result.samples_per_second:,.0f} samples/s"),
        ("median step", f"{result.median_step_seconds * 1e3:.2f} ms"),
        ("steps / fwd-bwd passes", f"{result.steps} / {result.forward_backward_passes}"),
        (
            "time to target",
            "-"
            if result.time_to_target_seconds is None
            else f"{result.time_to_target_seconds:.2f} s",
        ),
        ("device", f"{result.environment.device} ({result.environment.device_name})"),
    ]
    for key, value in rows:
        table.add_row(key, value)
    return table


def run(
    workload: opt.Workload = "digits-noisy",
    optimizer: Annotated[
        str, typer.Option("--optimizer", "-o", help="Optimizer (see `looksam-bench optimizers`).")
    ] = "looksam",
    base: opt.Base = None,
    rho: opt.Rho = None,
    k: opt.K = None,
    alpha: opt.Alpha = None,
    lr: opt.Lr = None,
    batch_size: opt.BatchSize = None,
    epochs: Annotated[int | None, typer.Option(help="Epochs [default: workload's].")] = None,
    max_steps: Annotated[int | None, typer.Option(help="Stop after this many steps.")] = None,
    seed: opt.Seed = 0,
    device: opt.Device = "auto",
    amp: opt.Amp = "off",
    compile_model: Annotated[
        bool, typer.Option("--compile", help="torch.compile the model.")
    ] = False,
    channels_last: Annotated[bool, typer.Option(help="Channels-last memory format.")] = False,
    grad_clip: Annotated[float | None, typer.Option(help="Clip the gradient norm.")] = None,
    data_dir: opt.DataDir = None,
    json_path: opt.JsonOut = None,
) -> None:
    """Train one optimizer on one workload and report accuracy against wall-clock time.

    Training time excludes evaluation and the first few warm-up steps are timed apart;
    the device is synchronised before every clock read. Example:

      looksam-bench run -w digits-noisy -o looksam --rho 0.5 --k 5 --alpha 0.7
    """
    config = RunConfig(
        workload=workload,
        optimizer=optimizer,
        base=base,
        hyperparameters=hyperparameters(rho=rho, k=k, alpha=alpha),
        lr=lr,
        batch_size=batch_size,
        epochs=epochs,
        max_steps=max_steps,
        seed=seed,
        device=device,
        amp=amp,
        compile=compile_model,
        channels_last=channels_last,
        grad_clip=grad_clip,
        data_dir=str(data_dir) if data_dir is not None else None,
    )
    try:
        validate_config(config)
    except (ValueError, WorkloadDataError) as error:
        fail(str(error))
    check_writable(json_path, "--json")
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[status]}"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console, transient=True) as progress:
        task = progress.add_task(f"{optimizer} on {workload}", total=None, status="")

        def report(step: int, total: int, record: EpochRecord | None) -> None:
            progress.update(task, completed=step, total=total)
            if record is not None:
                acc = "" if record.test_accuracy is None else f" acc {record.test_accuracy:.3f}"
                status = f"epoch {record.epoch} loss {record.train_loss:.3f}{acc}"
                progress.update(task, status=status)

        try:
            result = run_training(config, progress=report)
        except (ValueError, WorkloadDataError) as error:  # found only once data is loaded
            fail(str(error))
    console.print(build_result_table(result))
    if json_path is not None:
        result.write_json(json_path)
        console.print(f"wrote {json_path}")
    if result.status != "ok":
        raise typer.Exit(1)


def workloads() -> None:
    """List the workloads: what they train, their defaults, whether they need --data-dir."""
    table = Table(title="Registered workloads", title_justify="left")
    for column in ("name", "what it is", "epochs", "batch", "target acc", "data"):
        table.add_column(column)
    for info in list_workloads():
        target = "-" if info.target_accuracy is None else f"{100 * info.target_accuracy:.0f} %"
        data = "--data-dir" if info.needs_data_dir else "built in"
        if not info.measures_accuracy:
            data = "random (speed only)"
        table.add_row(
            f"[bold cyan]{info.name}[/]",
            info.summary,
            str(info.default_epochs),
            str(info.default_batch_size),
            target,
            data,
        )
    console.print(table)
