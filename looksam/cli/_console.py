"""The one Rich console every command prints through, and the user-error exit."""

from __future__ import annotations

import os
from pathlib import Path
from typing import NoReturn

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

console = Console()
err_console = Console(stderr=True)

#: Exit status for input the user can fix (bad option, unknown name): argparse's convention.
USAGE_ERROR = 2


def fail(message: str) -> NoReturn:
    """Print one red line on stderr and exit 2: no traceback for mistakes the user can fix."""
    err_console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(USAGE_ERROR)


def check_writable(path: Path | None, option: str) -> None:
    """Fail (exit 2) before any work if ``path`` could not be written once the work is done."""
    if path is None:
        return
    if path.is_dir():
        fail(f"{option} {path} is a directory; give a file path")
    parent = path.parent
    if not parent.exists():
        fail(f"{option} {path}: directory {parent} does not exist")
    if not parent.is_dir() or not os.access(parent, os.W_OK):
        fail(f"{option} {path}: cannot write under {parent}")


def training_progress() -> Progress:
    """The bar of one training run: description, steps done, a status field, time left."""
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[status]}"),
        TimeRemainingColumn(),
        console=console,
        transient=True,
    )
