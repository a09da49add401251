"""The `looksam-bench` command: one Typer app composed from one module per command group."""

from __future__ import annotations

from typing import Annotated

import typer

from looksam.cli import bench, diagnose, optimizers, report, run, sweep, ui

app = typer.Typer(
    name="looksam-bench",
    help=(
        "Measure what Sharpness-Aware Minimization (SAM) costs and buys on your model, and which "
        "cheap variant (SAM-k, LookSAM, Look-LayerSAM) gets SAM's accuracy at near-SGD speed."
    ),
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)
app.command("sweep")(sweep.sweep)
app.command("report")(report.report)
app.command("run")(run.run)
app.command("workloads")(run.workloads)
app.command("optimizers")(optimizers.optimizers)
app.command("bench")(bench.bench)
app.command("check")(bench.check)
app.command("ui")(ui.ui)
app.command("diagnose")(diagnose.diagnose)


def _print_version(value: bool) -> None:
    if value:
        from looksam import __version__

        typer.echo(f"looksam-bench {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_print_version, is_eager=True, help="Print the version."
        ),
    ] = False,
) -> None:
    """Measure what SAM costs and buys on your model."""


def main() -> None:
    """Console-script entry point."""
    app()
