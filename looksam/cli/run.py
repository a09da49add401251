"""`looksam-bench run` and `looksam-bench workloads`: one measured training run.

``run`` also trains data-parallel: under torchrun every rank runs this command and only rank 0
prints and writes; ``--nproc N`` starts such a launch on this machine itself and turns a failed
rank into one line.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from looksam.bench.profile import format_bytes
from looksam.cli import _options as opt
from looksam.cli._console import (
    USAGE_ERROR,
    check_writable,
    console,
    err_console,
    fail,
    training_progress,
)
from looksam.optim import DEFAULT_OPTIMIZER, parse_hyperparameters
from looksam.train.distributed import (
    RESULT_FILE_VARIABLE,
    LaunchError,
    check_local_devices,
    launch_from_env,
    launch_locally,
    launched_world_size,
)
from looksam.train.runner import (
    EpochRecord,
    RunConfig,
    RunResult,
    resolve_device,
    run_training,
    validate_config,
)
from looksam.train.workloads import WorkloadDataError, list_workloads

#: Options ``--nproc`` does not hand on to the ranks it starts (they get the result path by env).
_NOT_FORWARDED = frozenset({"nproc", "json_path"})


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
        ("steps / fwd-bwd passes", f"{result.steps} / {result.forward_backward_passes:.6g}"),
        ("second-pass steps", _fmt_pct(result.second_pass_fraction)),
        *_parallel_rows(result),
        *_memory_rows(result),
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


def _memory_rows(result: RunResult) -> list[tuple[str, str]]:
    """What the method keeps beyond the base optimizer (SAF's bank, MESA's EMA model)."""
    if not result.method_memory:
        return []
    parts = [f"{name} {format_bytes(size)}" for name, size in result.method_memory.items()]
    if result.method_bytes_per_example:
        parts.append(f"{format_bytes(result.method_bytes_per_example)} per training example")
    return [("method memory", ", ".join(parts))]


def _parallel_rows(result: RunResult) -> list[tuple[str, str]]:
    if result.world_size == 1:
        return []
    per_rank = ", ".join(f"{rate:,.0f}" for rate in result.per_rank_samples_per_second)
    return [
        (
            "processes",
            f"{result.world_size} ({result.environment.backend}, "
            f"{result.config.perturbation} perturbation)",
        ),
        ("per-rank throughput", f"{per_rank} samples/s"),
    ]


def run(
    ctx: typer.Context,
    workload: opt.Workload = "digits-noisy",
    optimizer: Annotated[
        str, typer.Option("--optimizer", "-o", help="Optimizer (see `looksam-bench optimizers`).")
    ] = DEFAULT_OPTIMIZER,
    base: opt.Base = None,
    rho: opt.Rho = None,
    k: opt.K = None,
    alpha: opt.Alpha = None,
    hp: opt.Hp = None,
    lr: opt.Lr = None,
    batch_size: opt.BatchSize = None,
    epochs: Annotated[int | None, typer.Option(help="Epochs \\[default: workload's].")] = None,
    max_steps: Annotated[int | None, typer.Option(help="Stop after this many steps.")] = None,
    seed: opt.Seed = 0,
    device: opt.Device = "auto",
    amp: opt.Amp = "off",
    compile_model: Annotated[
        bool, typer.Option("--compile", help="torch.compile the model.")
    ] = False,
    compile_mode: Annotated[
        str,
        typer.Option(
            help="torch.compile mode (implies --compile): default, max-autotune-no-cudagraphs; "
            "reduce-overhead and max-autotune capture CUDA graphs, which only optimizers that "
            "keep the weights in place (the base optimizers) allow."
        ),
    ] = "default",
    channels_last: Annotated[bool, typer.Option(help="Channels-last memory format.")] = False,
    grad_clip: Annotated[float | None, typer.Option(help="Clip the gradient norm.")] = None,
    warmup: Annotated[
        float, typer.Option(help="Share of steps with linear LR warm-up, in [0, 1).")
    ] = RunConfig.warmup_fraction,
    rho_warmup: Annotated[
        float,
        typer.Option(
            help="Share of steps over which ρ ramps up from 0, in [0, 1) (large batches)."
        ),
    ] = 0.0,
    data_dir: opt.DataDir = None,
    data: opt.Data = None,
    num_classes: opt.NumClasses = None,
    img_size: opt.ImgSize = None,
    json_path: opt.JsonOut = None,
    perturbation: opt.Perturbation = "global",
    replica_check_every: Annotated[
        int,
        typer.Option(
            min=0,
            help="Data-parallel debugging: compare the replicas' weights every N steps (0: off).",
        ),
    ] = 0,
    nproc: opt.NProc = 1,
    micro_batches: opt.Accumulate = 1,
) -> None:
    """Train one optimizer on one workload and report accuracy against wall-clock time.

    Training time excludes evaluation and the first few warm-up steps are timed apart;
    the device is synchronised before every clock read. Example:

      looksam-bench run -w digits-noisy -o looksam --rho 0.5 --k 5 --alpha 0.7

    Data-parallel: --nproc 2 here, or torchrun --nproc-per-node 2 -m looksam run ...
    """
    workload = opt.workload_name(workload, data, num_classes, img_size)
    try:
        launch = launch_from_env()
    except ValueError as error:
        fail(str(error))
    main = launch is None or launch.rank == 0
    try:
        given_hyperparameters = {
            **parse_hyperparameters(optimizer, base, hp or ()),
            **hyperparameters(rho=rho, k=k, alpha=alpha),
        }
    except ValueError as error:
        fail(str(error))
    if not main:
        console.quiet = err_console.quiet = True  # rank 0 speaks for the run
    config = RunConfig(
        workload=workload,
        optimizer=optimizer,
        base=base,
        hyperparameters=given_hyperparameters,
        lr=lr,
        batch_size=batch_size,
        epochs=epochs,
        max_steps=max_steps,
        seed=seed,
        device=device,
        amp=amp,
        compile=compile_model or compile_mode != "default",
        compile_mode=compile_mode,
        channels_last=channels_last,
        grad_clip=grad_clip,
        warmup_fraction=warmup,
        rho_warmup_fraction=rho_warmup,
        data_dir=str(data_dir) if data_dir is not None else None,
        perturbation=perturbation,
        replica_check_every=replica_check_every,
        micro_batches=micro_batches,
    )
    if nproc > 1 and launch is not None:
        fail("--nproc starts its own processes: leave it out under torchrun (--nproc-per-node)")
    try:
        validate_config(config, nproc if nproc > 1 else launched_world_size())
        if nproc > 1:
            check_local_devices(resolve_device(device), nproc)
    except (ValueError, WorkloadDataError) as error:
        fail(str(error))
    check_writable(json_path, "--json")
    if nproc > 1:
        _launch_locally(ctx, nproc, json_path)
        return
    result_file = os.environ.get(RESULT_FILE_VARIABLE) if launch is not None else None
    with training_progress() as progress:
        task = progress.add_task(f"{optimizer} on {workload}", total=None, status="")

        def report(step: int, total: int, record: EpochRecord | None) -> None:
            progress.update(task, completed=step, total=total)
            if record is not None:
                acc = "" if record.test_accuracy is None else f" acc {record.test_accuracy:.3f}"
                status = f"epoch {record.epoch} loss {record.train_loss:.3f}{acc}"
                progress.update(task, status=status)

        try:
            result = run_training(config, progress=report if main else None)
        except (ValueError, WorkloadDataError) as error:  # found only once data is loaded
            fail(str(error))
    if not result.is_main:
        return  # the other ranks trained; rank 0 reports and writes
    console.print(build_result_table(result))
    if result_file is not None:  # started by --nproc: the parent moves it into place
        result.write_json(Path(result_file))
        return
    if json_path is not None:
        result.write_json(json_path)
        console.print(f"wrote {json_path}")
    if result.status != "ok":
        raise typer.Exit(1)


def _forwarded_args(ctx: typer.Context) -> list[str]:
    """This command line, rebuilt from the parsed options (so it works however we were called)."""
    args = ["run"]
    for param in ctx.command.params:
        name = param.name
        if name is None or name in _NOT_FORWARDED or name not in ctx.params:
            continue
        value = ctx.params[name]
        long = next((o for o in param.opts if o.startswith("--")), param.opts[0])
        if isinstance(value, bool):
            secondary = getattr(param, "secondary_opts", [])
            if value:
                args.append(long)
            elif secondary:
                args.append(secondary[0])
        elif isinstance(value, list | tuple):  # a repeatable option: once per value
            for item in value:
                args += [long, str(item)]
        elif value is not None:
            args += [long, str(value)]
    return args


def _launch_locally(ctx: typer.Context, nproc: int, json_path: Path | None) -> None:
    """Run this command on ``nproc`` local ranks (:func:`launch_locally`); exit as the run did."""
    try:
        status = launch_locally(_forwarded_args(ctx), nproc, json_path)
    except KeyboardInterrupt:
        err_console.print("[bold red]interrupted:[/] no result was written", highlight=False)
        raise typer.Exit(130) from None
    except LaunchError as error:
        err_console.print(
            f"[bold red]error:[/] {escape(error.message)}", highlight=False, soft_wrap=True
        )
        raise typer.Exit(USAGE_ERROR if error.users_fault else 1) from None
    if json_path is not None:
        console.print(f"wrote {json_path}")
    if status != "ok":
        raise typer.Exit(1)


def workloads() -> None:
    """List the workloads: what they train, their defaults, whether they need --data-dir."""
    table = Table(
        title="Registered workloads",
        title_justify="left",
        caption="Also: timm:MODEL, any timm model (--data synthetic, or --data-dir with an "
        "ImageFolder tree or CIFAR-10; --img-size, --num-classes), and MODULE:FUNCTION, a "
        "function of yours returning a Workload (looksam.train.workloads.custom_workload).",
        caption_justify="left",
    )
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
