"""Rich renderings of a sweep report: leaderboard, Pareto fronts, findings (pure: no printing)."""

from __future__ import annotations

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from looksam.reports.advice import (
    ADVICE_COLUMNS,
    Advice,
    advice_from,
    advice_rows,
    paste_line,
    sentence,
)
from looksam.reports.findings import Finding
from looksam.reports.grid import GridCell, GridTable, grid_tables
from looksam.reports.leaderboard import (
    contended_total,
    failure_rows,
    front_rows,
    leaderboard_rows,
)
from looksam.reports.model import SweepData

#: What fits 80 columns (the hyperparameters follow in a table of their own); the raw seconds,
#: trial counts and time to target are in the HTML, Markdown and JSON reports.
TERMINAL_COLUMNS = (
    "optimizer", "accuracy (95% CI)", "search best", "speed vs base (IQR)", "est. train s",
    "contended",
)  # fmt: skip


def rows_table(title: str, rows: list[dict[str, str]], columns: tuple[str, ...]) -> Table:
    """A Rich table of text rows (numbers right-aligned by column name).

    Cells wrap only between words: each column is at least as wide as its longest word, so a
    narrow terminal or CI log never splits a number such as ``lr=0.0356`` across lines.
    """
    table = Table(title=title, title_justify="left")
    numeric = {
        "est. train s", "raw train s", "time to target", "accuracy", "search best", "passes/step"
    }  # fmt: skip
    for column in columns:
        words = [w for row in rows for w in row.get(column, "").split()]
        table.add_column(
            column,
            justify="right" if column in numeric else "left",
            min_width=max((len(w) for w in words), default=1),
            overflow="fold",
        )
    for row in rows:
        table.add_row(*(row.get(c, "") for c in columns))
    return table


def _accuracy_text(cell: GridCell | None) -> str:
    if cell is None or cell.accuracy is None:
        return "-"
    ci = cell.accuracy.half_width
    return f"{100 * cell.accuracy.mean:.1f}" + ("" if ci is None else f" ±{100 * ci:.1f}")


def grid_table(table: GridTable) -> Table:
    """Mean accuracy (%) at each grid point, reference optimizers in the last columns."""
    out = Table(title=f"accuracy (%): {table.title}", title_justify="left")
    corner = table.row_param if table.by_optimizer else f"{table.row_param} \\ {table.col_param}"
    out.add_column(corner, justify="right", style="bold")
    for c in table.cols:
        out.add_column(str(c), justify="right")
    for name in table.references:
        out.add_column(name, justify="right", style="dim")
    for r in table.rows:
        cells = [_accuracy_text(table.cells.get((r, c))) for c in table.cols]
        refs = [_accuracy_text(ref.get(r)) for ref in table.references.values()]
        out.add_row(str(r), *cells, *refs)
    return out


#: advise's evidence in 80 characters; the spread and the hyperparameters get their own table.
ADVICE_TERMINAL_COLUMNS = tuple(
    c for c in ADVICE_COLUMNS if c not in ("hyperparameters", "× base IQR")
)


def advice_report(advice: Advice) -> RenderableType:
    """advise's answer in one sentence, the call to paste, then every candidate's evidence."""
    colour = {"variant": "green", "base": "green", "sam": "cyan"}.get(advice.verdict, "yellow")
    answer = Text.assemble((f"Answer ({advice.verdict}): ", f"bold {colour}"), sentence(advice))
    parts: list[RenderableType] = [answer]
    line = paste_line(advice)
    if line is not None:
        parts.append(Text(f"  {line}"))
    rows = advice_rows(advice)
    parts.append(
        rows_table(
            f"Confirmed on fresh seeds; p: non-inferior to {advice.reference} by "
            f"{100 * advice.margin:g} point(s) (α: its corrected level)",
            rows,
            ADVICE_TERMINAL_COLUMNS,
        )
    )
    confirmed = [row for row in rows if row.get("hyperparameters")]
    parts.append(
        rows_table(
            "Confirmed configurations (cost: paired, per sample)",
            confirmed,
            ("optimizer", "× base IQR", "hyperparameters"),
        )
    )
    return Group(*parts)


def terminal_report(data: SweepData, findings: list[Finding]) -> RenderableType:
    """advise's answer (for an advise run), the leaderboard, grid tables (or, for a search,
    each Pareto front) and the findings."""
    contended = contended_total(data)
    busy = f"; {contended} trial{'s' if contended != 1 else ''} contended" if contended else ""
    rows = leaderboard_rows(data)
    advice = advice_from(data)
    parts: list[RenderableType] = [] if advice is None else [advice_report(advice)]
    parts += [
        rows_table(
            f"Leaderboard: {data.name} on {data.workload} ({data.objective}; speed paired "
            f"against {data.reference}{busy})",
            rows,
            TERMINAL_COLUMNS,
        ),
        rows_table(
            "Confirmed hyperparameters (passes per step measured)",
            rows,
            ("optimizer", "passes/step", "confirmed hyperparameters"),
        ),
    ]
    grids = grid_tables(data)
    parts.extend(grid_table(g) for g in grids)
    for study in data.studies if not grids else ():  # a grid's table says more than fronts
        rows = front_rows(study, data)
        if rows:
            parts.append(
                rows_table(
                    f"Pareto front of {study.optimizer} (accuracy vs paired cost)",
                    rows,
                    ("trial", "accuracy", "est. train s", "hyperparameters"),
                )
            )
    failures = failure_rows(data)
    if failures:
        columns = ("optimizer", "failed", "reasons", "first failed")
        parts.append(rows_table("Failed trials", failures, columns))
    if findings:
        parts.append(Text("Findings", style="bold"))
        parts.extend(Text(f"• {finding.text}") for finding in findings)
    return Group(*parts)
