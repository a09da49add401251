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

from looksam.sweeps._budget import format_duration

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


#: In a log (stderr not a terminal), a progress line at least this often while work goes on.
LOG_EVERY_SECONDS = 30.0


def _clock() -> float:
    """The time the log lines are paced by (tests replace it with a fake clock)."""
    return time.monotonic()


class LogPacer:
    """When the next plain progress line is due in a log, and the time part of each line.

    Rich draws no live bar or spinner when the output is not a terminal (a CI log,
    ``make sweep | tee``): a long command there printed nothing for half an hour. Every command
    asks one pacer, so all of them say something at least every :data:`LOG_EVERY_SECONDS` and
    word the time spent and the ETA the same way.
    """

    def __init__(
        self, clock: Callable[[], float] | None = None, every: float = LOG_EVERY_SECONDS
    ) -> None:
        self._clock = clock
        self.every = every
        self.started = self.last = self.now()

    def now(self) -> float:
        return _clock() if self._clock is None else self._clock()

    def due(self) -> bool:
        """Whether :data:`LOG_EVERY_SECONDS` have passed since the last line."""
        return self.now() - self.last >= self.every

    def mark(self) -> float:
        """Count a line as printed now (the next is due in :data:`LOG_EVERY_SECONDS`)."""
        self.last = now = self.now()
        return now

    def stamp(self, done: float, total: float) -> str:
        """' · 1m20s spent · ETA 9m20s' (no ETA before anything is done), and a line is
        counted as printed now."""
        spent = self.mark() - self.started
        eta = f" · ETA {format_duration(spent / done * (total - done))}" if done else ""
        return f" · {format_duration(spent)} spent{eta}"


def in_a_log() -> bool:
    """Whether progress should be plain lines on stderr: stderr (where they go) or stdout (where
    the live bar would be drawn) is not a terminal, e.g. ``cmd 2>&1 | tee log`` or a CI job."""
    return not (console.is_terminal and err_console.is_terminal)


def log_line(text: str) -> None:
    """One plain line on stderr, as the log shows it (no markup, no wrapping)."""
    err_console.print(text, markup=False, highlight=False, soft_wrap=True)


class ProgressLog:
    """Progress for output that is not a terminal: ``phase: 3/20 unit · 40s spent · ETA 4m``
    on stderr at the start, after each ``1/parts`` of the total, at the end, and at least
    every :data:`LOG_EVERY_SECONDS` in between, so that a long measurement does not look hung.

    Called as ``log(done)`` (or ``log(done, total)`` when the total moves); ``parts=0``: only
    the paced lines and the last one.
    """

    def __init__(
        self, phase: str, total: int, unit: str = "", parts: int = 10, *, started: bool = True
    ) -> None:
        self.phase, self.total, self.unit, self.parts = phase, total, unit, parts
        self.pacer = LogPacer()
        if started:
            log_line(f"{phase}: started")

    def __call__(self, done: int, total: int | None = None) -> None:
        if total is not None:
            self.total = total
        every = max(1, self.total // self.parts) if self.parts else 0
        if (every and done % every == 0) or done >= self.total or self.pacer.due():
            unit = f" {self.unit}" if self.unit else ""
            stamp = self.pacer.stamp(done, self.total)
            log_line(f"{self.phase}: {done}/{self.total}{unit}{stamp}")


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
