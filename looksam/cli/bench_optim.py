"""`looksam-bench bench-optim`: each optimizer's step cost relative to plain SGD, on CPU."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import Progress
from rich.table import Table

from looksam.bench.optim_overhead import DEFAULT_CONTENDERS, MODELS, OverheadRow, measure_overhead
from looksam.cli._console import console, fail
from looksam.optim import list_optimizers


def build_overhead_table(rows: list[OverheadRow], k: int) -> Table:
    """Ratio to the base, its floor and the overhead beyond it, per model and optimizer."""
    table = Table(title=f"Optimizer step cost relative to SGD (CPU, k={k})", title_justify="left")
    for column, justify in [
        ("model", "left"),
        ("optimizer", "left"),
        ("median step", "right"),
        ("ratio (IQR)", "right"),
        ("floor", "right"),
        ("overhead", "right"),
    ]:
        table.add_column(column, justify=justify)  # type: ignore[arg-type]
    for row in rows:
        t = row.timing
        table.add_row(
            f"{row.model} ({row.params / 1e3:.0f}k)",
            row.optimizer,
            f"{t.median_step_seconds * 1e3:.2f} ms",
            f"{t.ratio:.3f} ({t.ratio_q1:.3f}–{t.ratio_q3:.3f})",
            f"{row.floor:.2f}",
            f"{row.overhead:+.3f}",
        )
    return table


def bench_optim(
    model: Annotated[
        list[str] | None, typer.Option("--model", "-m", help="Model(s): mlp, convnet.")
    ] = None,
    optimizer: Annotated[
        list[str] | None,
        typer.Option("--optimizer", "-o", help="Optimizer(s) to time against sgd."),
    ] = None,
    k: Annotated[
        int, typer.Option("--k", "-k", help="Look interval for the k-step variants.")
    ] = 5,
    rounds: Annotated[int, typer.Option(help="Paired rounds; the ratio is their median.")] = 30,
    json_path: Annotated[
        Path | None, typer.Option("--json", help="Also write the rows as JSON here.")
    ] = None,
) -> None:
    """Time one training step of each optimizer against plain SGD on small CPU models.

    Contenders alternate in one process after warm-up; the ratio is the median of per-round
    ratios. [bold]floor[/] is the forward-backward passes per step (SAM 2, k-step variants
    1 + 1/k); [bold]overhead[/] is what the optimizer's own arithmetic adds on top.
    """
    models = tuple(model or MODELS)
    names = tuple(optimizer or DEFAULT_CONTENDERS)
    if bad := sorted(set(models) - set(MODELS)):
        fail(f"unknown model(s) {', '.join(bad)}; choose from: {', '.join(MODELS)}")
    valid = [info.name for info in list_optimizers()]
    if bad := sorted(set(names) - set(valid)):
        fail(f"unknown optimizer(s) {', '.join(bad)}; choose from: {', '.join(valid)}")
    if k < 1:
        fail(f"--k must be an integer >= 1, got {k}")
    if rounds < 1:
        fail(f"--rounds must be >= 1, got {rounds}")
    with Progress(console=console, transient=True) as progress:
        tasks = {m: progress.add_task(f"timing {m}", total=rounds) for m in models}
        rows = measure_overhead(
            models,
            names,
            k=k,
            rounds=rounds,
            progress=lambda m, r: progress.update(tasks[m], completed=r),
        )
    console.print(build_overhead_table(rows, k))
    if json_path is not None:
        payload = [asdict(row) | {"overhead": row.overhead} for row in rows]
        json_path.write_text(json.dumps(payload, indent=2) + "\n")
        console.print(f"wrote {json_path}")
