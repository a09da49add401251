"""`looksam-bench optimizers`: what is registered, what it takes, what a step costs."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from looksam.cli._console import console, fail
from looksam.optim import HyperParameter, list_optimizers


def _format_hp(hp: HyperParameter) -> str:
    default = str(hp.default).lower() if hp.kind == "bool" else f"{hp.default:g}"
    return f"{hp.name}={default} [dim]{hp.short_range()}[/]"


def build_optimizers_table(k: int) -> Table:
    """Rich table of the registry, with the cost per step evaluated at ``k``."""
    table = Table(title=f"Registered optimizers (cost at k={k})", title_justify="left")
    table.add_column("name", style="bold cyan", no_wrap=True)
    table.add_column("hyperparameters", no_wrap=True)
    table.add_column("passes/step", justify="right", no_wrap=True)
    table.add_column("what it is")
    for info in list_optimizers():
        own = info.hyperparameters if info.wraps_base else info.all_hyperparameters()
        hps = [_format_hp(hp) for hp in own]
        if info.wraps_base:
            hps.append(f"base={' | '.join(info.accepted_bases())}")
        table.add_row(
            info.name,
            "\n".join(hps),
            f"{info.cost_formula} = {info.passes_per_step({'k': k}):.2f}",
            info.summary,
        )
    return table


def optimizers(
    k: Annotated[
        int, typer.Option("--k", "-k", help="Evaluate the per-step cost at this look interval.")
    ] = 5,
) -> None:
    """List the optimizers, their hyperparameters and their cost in forward-backward passes.

    Cost is in forward-backward passes per step: SAM pays 2, the k-step variants 1 + 1/k. The SAM
    family wraps a base optimizer (base=sgd|adamw|lamb), whose own hyperparameters (lr, momentum,
    weight_decay…) are listed on the base's row.
    """
    if k < 1:
        fail(f"--k must be an integer >= 1, got {k}")
    console.print(build_optimizers_table(k))
