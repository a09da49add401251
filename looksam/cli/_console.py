"""The one Rich console every command prints through, and the user-error exit."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

console = Console()
err_console = Console(stderr=True)

#: Exit status for input the user can fix (bad option, unknown name): argparse's convention.
USAGE_ERROR = 2
#: When this process started, on the monotonic clock; set only when it runs as the command.
_launched_at: float | None = None


def mark_launch() -> None:
    """Called by the command's entry point: its start-up (interpreter, imports) counts from
    the process's start (Linux; elsewhere from now)."""
    global _launched_at
    _launched_at = time.monotonic() - _process_age()


def startup_seconds() -> float:
    """Seconds since the command started; 0 when the CLI is called in-process (tests)."""
    return 0.0 if _launched_at is None else time.monotonic() - _launched_at


def _process_age() -> float:
    try:
        with open("/proc/self/stat") as stat, open("/proc/uptime") as uptime:
            fields = stat.read().rsplit(")", 1)[1].split()
            started = int(fields[19]) / os.sysconf("SC_CLK_TCK")
            return max(0.0, float(uptime.read().split()[0]) - started)
    except (OSError, ValueError, IndexError):
        return 0.0


def fail(message: str) -> NoReturn:
    """Print one red line on stderr and exit 2: no traceback for mistakes the user can fix.

    ``message`` is plain text, shown as it is: a spec's "[fixed.sam]" or a name with brackets
    is not read as console markup.
    """
    err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
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


def logged_progress(description: str, total: int) -> Callable[[int], None]:
    """Progress for output that is not a terminal (a CI log, a pipe), where Rich's live bar is
    not drawn: one line on stderr at the start and after each tenth of ``total``, with the time
    so far, so that a long measurement does not look hung."""
    started = time.monotonic()
    every = max(1, total // 10)
    err_console.print(f"{description}: started", highlight=False)

    def update(done: int) -> None:
        if done % every == 0 or done == total:
            elapsed = time.monotonic() - started
            err_console.print(f"{description}: {done}/{total} ({elapsed:.0f} s)", highlight=False)

    return update


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
