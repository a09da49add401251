"""The one Rich console every command prints through, and the user-error exit."""

from __future__ import annotations

from typing import NoReturn

import typer
from rich.console import Console

console = Console()
err_console = Console(stderr=True)

#: Exit status for input the user can fix (bad option, unknown name): argparse's convention.
USAGE_ERROR = 2


def fail(message: str) -> NoReturn:
    """Print one red line on stderr and exit 2: no traceback for mistakes the user can fix."""
    err_console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(USAGE_ERROR)
