"""The `looksam-bench` command: one Typer app composed from one module per command group."""

from __future__ import annotations

import os
from typing import Annotated, Any, NoReturn

import typer
from typer.core import TyperCommand, TyperGroup

from looksam._plugins import (
    ENTRY_POINT_GROUPS,
    ENV_VARIABLE,
    PluginError,
    load_entry_points,
    load_plugins,
    plugins_from_env,
)
from looksam.cli import advise, bench, diagnose, optimizers, report, run, sweep, ui
from looksam.cli._console import fail, mark_launch

#: Click's usage error as Typer's own copy of Click raises it (Typer exports only its subclass
#: BadParameter): an unknown option or command, a missing or bad value, an extra argument.
_UsageError: type[Exception] = next(
    c for c in typer.BadParameter.__mro__ if c.__name__ == "UsageError"
)


def _one_line(error: Any, ctx: Any) -> NoReturn:
    """Click's usage error (an unknown option or command, a bad or missing value) as
    :func:`fail`'s one red line and exit 2, naming where the help is."""
    path = ctx.command_path if ctx is not None else "looksam-bench"
    fail(f"{error.format_message()} (see '{path} --help')")


class OneLineErrors(TyperCommand):
    """A command whose unusable arguments (``--k 1.5``, ``--nproc 0``, ``--bogus``) end as one red
    line and exit 2, like every other mistake the user can fix, instead of Click's usage box."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:  # Any: Click's own Context
        """Parse as Click does; whatever Click rejects becomes one line."""
        try:
            return super().parse_args(ctx, args)
        except _UsageError as error:
            _one_line(error, ctx)


class OneLineGroup(TyperGroup):
    """The top-level command: an unknown option or command is one line and exit 2 too."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        try:
            return super().parse_args(ctx, args)
        except _UsageError as error:
            _one_line(error, ctx)

    def resolve_command(self, ctx: Any, args: list[str]) -> Any:
        try:
            return super().resolve_command(ctx, args)
        except _UsageError as error:
            _one_line(error, ctx)


app = typer.Typer(
    name="looksam-bench",
    help=(
        "Measure what Sharpness-Aware Minimization (SAM) costs and buys on your model, and which "
        "cheap variant (SAM-k, LookSAM, MSAM, AE-SAM, late-phase SAM, ...; see `optimizers`) "
        "gets SAM's accuracy at near-SGD speed. Bring your own optimizer with --plugin, your own "
        "model with -w timm:MODEL or -w module:function."
    ),
    no_args_is_help=True,
    cls=OneLineGroup,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)
app.command("advise", cls=OneLineErrors)(advise.advise)
app.command("sweep", cls=OneLineErrors)(sweep.sweep)
app.command("report", cls=OneLineErrors)(report.report)
app.command("run", cls=OneLineErrors)(run.run)
app.command("workloads", cls=OneLineErrors)(run.workloads)
app.command("optimizers", cls=OneLineErrors)(optimizers.optimizers)
app.command("bench", cls=OneLineErrors)(bench.bench)
app.command("check", cls=OneLineErrors)(bench.check)
app.command("ui", cls=OneLineErrors)(ui.ui)
app.command("diagnose", cls=OneLineErrors)(diagnose.diagnose)


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
    plugins: Annotated[
        list[str] | None,
        typer.Option(
            "--plugin",
            metavar="MODULE",
            help="Import MODULE (on PYTHONPATH or in the current directory) before the command, "
            "so the optimizers and workloads it registers can be used; repeatable. Plugins "
            f"named in {ENV_VARIABLE} (separated by '{os.pathsep}') and installed entry points "
            f"({' and '.join(ENTRY_POINT_GROUPS)}) load too; every plugin loaded is added to "
            f"{ENV_VARIABLE}, so the processes a command starts load it as well.",
        ),
    ] = None,
) -> None:
    """Measure what SAM costs and buys on your model."""
    try:
        load_entry_points()
        load_plugins([*plugins_from_env(), *(plugins or [])])
    except PluginError as error:
        fail(str(error))


def main() -> None:
    """Console-script entry point."""
    mark_launch()
    app()
