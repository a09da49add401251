"""`looksam-bench optimizers`: what is registered, what it takes, what a step costs."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from looksam.cli import _options as opt
from looksam.cli._console import console, fail
from looksam.optim import HyperParameter, OptimizerInfo, list_optimizers


def _format_hp(hp: HyperParameter) -> str:
    default = str(hp.default).lower() if hp.kind == "bool" else f"{hp.default:g}"
    searched = ""
    if hp.search is not None:  # what `registry = true` in a sweep spec searches
        low, high = hp.search
        searched = f" · {low:g}–{high:g}{' log' if hp.log else ''}"
    return f"{hp.name}={default} [dim]{hp.short_range()}{searched}[/]"


def _format_passes(info: OptimizerInfo, k: int) -> str:
    low, high = info.pass_range({"k": k} if info.takes_k else None)
    value = f"{low:.2f}" if low == high else f"{low:.2f}–{high:.2f}"
    return value if info.cost_formula in (value, f"{low:g}") else f"{info.cost_formula} = {value}"


#: Below this width the description moves under the name: four columns would squeeze it to a
#: few characters a line (an 80-column CI log or terminal).
WIDE = 120


def build_optimizers_table(k: int, width: int = WIDE) -> Table:
    """Rich table of the registry, with the cost per step evaluated at ``k``; laid out for a
    console ``width`` columns wide (narrower than :data:`WIDE`: three columns, not four)."""
    table = Table(title=f"Registered optimizers (cost at k={k})", title_justify="left")
    wide = width >= WIDE
    if wide:
        table.add_column("name", style="bold cyan", no_wrap=True)
    else:
        table.add_column("name · what it is · paper", ratio=3, min_width=24)
    table.add_column("hyperparameters", no_wrap=wide, overflow="fold", ratio=3)
    table.add_column("passes/step", justify="right", no_wrap=True)
    if wide:
        table.add_column("what it is · paper")
    for info in list_optimizers():
        hps = [_format_hp(hp) for hp in info.hyperparameters]
        if info.wraps_base:
            hps.append(f"base={' | '.join(info.accepted_bases())}")
        about = escape(info.summary)
        if info.paper:
            about += f"\n[dim]{escape(info.paper)}[/]"
        if info.loop_needs:
            about += f"\n[dim]needs: {escape(', '.join(info.loop_needs))}[/]"
        if info.memory_formula:
            about += f"\n[dim]keeps: {escape(info.memory_formula)}[/]"
        passes = _format_passes(info, k)
        if wide:
            table.add_row(info.name, "\n".join(hps), passes, about)
        else:
            named = f"[bold cyan]{escape(info.name)}[/]\n{about}"
            table.add_row(named, "\n".join(hps), passes, end_section=True)
    return table


def optimizers(
    k: Annotated[
        int, typer.Option("--k", "-k", help="Evaluate the per-step cost at this look interval.")
    ] = opt.DEFAULT_K,
) -> None:
    """List the optimizers, their hyperparameters and their cost in forward-backward passes.

    Cost is in forward-backward passes per step: SAM pays 2, the k-step variants 1 + 1/k, the
    adaptive ones a range (runs report what they measured). The SAM family wraps a base optimizer,
    whose own hyperparameters (lr, momentum, weight_decay…) are listed on the base's row. Each
    hyperparameter shows its default, its valid range and, after ·, the range a sweep searches
    when its spec says `registry = true`. Set any
    of them with `run --hp NAME=VALUE`; add your own optimizers with `--plugin MODULE`.
    """
    if k < 1:
        fail(f"--k must be an integer >= 1, got {k}")
    console.print(build_optimizers_table(k, console.width))
