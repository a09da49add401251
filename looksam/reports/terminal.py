"""Rich renderings of a sweep report: leaderboard, Pareto fronts, findings (pure: no printing)."""

from __future__ import annotations

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from looksam.reports.leaderboard import COLUMNS, front_rows, leaderboard_rows
from looksam.reports.model import SweepData

#: The terminal leaves out samples/s (speed vs base says it relatively) to fit 80 columns.
TERMINAL_COLUMNS = tuple(c for c in COLUMNS if c != "samples/s")


def rows_table(title: str, rows: list[dict[str, str]], columns: tuple[str, ...]) -> Table:
    """A Rich table of text rows (numbers right-aligned by column name)."""
    table = Table(title=title, title_justify="left")
    numeric = {"train s", "samples/s", "speed vs base", "time to target", "accuracy"}
    for column in columns:
        table.add_column(
            column,
            justify="right" if column in numeric else "left",
            overflow="fold" if "hyperparameters" in column else "ellipsis",
        )
    for row in rows:
        table.add_row(*(row.get(c, "") for c in columns))
    return table


def terminal_report(data: SweepData, findings: list[str]) -> RenderableType:
    """Leaderboard, each optimizer's Pareto front (accuracy vs seconds) and the findings."""
    parts: list[RenderableType] = [
        rows_table(
            f"Leaderboard: {data.name} on {data.workload} ({data.objective})",
            leaderboard_rows(data),
            TERMINAL_COLUMNS,
        )
    ]
    for study in data.studies:
        rows = front_rows(study)
        if rows:
            parts.append(
                rows_table(
                    f"Pareto front of {study.optimizer} (accuracy vs training seconds)",
                    rows,
                    ("trial", "accuracy", "train s", "hyperparameters"),
                )
            )
    if findings:
        parts.append(Text("Findings", style="bold"))
        parts.extend(Text(f"• {sentence}") for sentence in findings)
    return Group(*parts)
