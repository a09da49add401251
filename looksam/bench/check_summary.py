"""What ``check`` writes for a CI job: a JSON record and a Markdown summary of its rows.

Both are pure functions of the rows, so what a job summary (``$GITHUB_STEP_SUMMARY``) or a pull
request comment shows is exactly what decided the exit status.
"""

from __future__ import annotations

import math
from typing import Any

from looksam._markdown import md_code, md_text
from looksam.bench.suite import CheckRow


def _finite(value: float | None) -> float | None:
    return None if value is None or math.isnan(value) else value


def row_dict(row: CheckRow) -> dict[str, Any]:
    """One row for JSON: the allowed range as ``min``/``max`` (null: unbounded on that side);
    a measurement that could not be taken (a run that diverged) is null and fails."""
    return {
        "workload": row.workload,
        "optimizer": row.optimizer,
        "metric": row.metric,
        "baseline": row.baseline,
        "measured": _finite(row.measured),
        "min": row.lower,
        "max": row.limit,
        "passed": not row.regressed,
    }


def summary_dict(
    rows: list[CheckRow],
    *,
    baseline: str,
    tolerance: float,
    environment: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The whole check as a JSON-ready dict: verdict, rows, and where it was measured."""
    failed = [row for row in rows if row.regressed]
    return {
        "baseline": baseline,
        "passed": not failed,
        "regressions": len(failed),
        "tolerance": tolerance,
        "rows": [row_dict(row) for row in rows],
        "environment": environment or {},
    }


def accuracy_digits(row: CheckRow) -> int:
    """Decimals that tell apart every distinct value of an accuracy row (at least 4): a guard
    with tolerance 0 fails on the last bit, and the table must show which one moved."""
    values = {
        v for v in (row.baseline, row.measured, row.lower, row.limit) if _finite(v) is not None
    }
    for digits in range(4, 18):
        if len({f"{v:.{digits}f}" for v in values}) == len(values):
            return digits
    return 17


def format_value(metric: str, value: float | None, digits: int = 4) -> str:
    """A baseline or measured value as the tables print it ("-" when there is none);
    ``digits`` are the decimals of an accuracy."""
    if value is None or math.isnan(value):
        return "-"
    if metric == "samples/s":
        return f"{value:,.0f}"
    if metric == "accuracy":
        return f"{value:.{digits}f}"
    return f"{value:.3f}"


def format_row_value(row: CheckRow, value: float | None) -> str:
    """:func:`format_value` with as many decimals as the row needs."""
    digits = accuracy_digits(row) if row.metric == "accuracy" else 4
    return format_value(row.metric, value, digits)


def format_change(row: CheckRow) -> str:
    """Relative change for ratios and samples/s, percentage points for accuracy."""
    if math.isnan(row.measured):
        return "-"
    if row.metric == "accuracy":
        decimals = max(2, accuracy_digits(row) - 2)
        return f"{100 * (row.measured - row.baseline):+.{decimals}f} pp"
    if row.baseline == 0:
        return "-"
    return f"{100 * (row.measured / row.baseline - 1.0):+.1f} %"


def format_allowed(row: CheckRow) -> str:
    """The allowed range: "≤ max", "≥ min", "= value" (tolerance 0) or "min – max"."""
    low, high = row.lower, row.limit
    if low is not None and high is not None:
        if low == high:
            return f"= {format_row_value(row, high)}"
        return f"{format_row_value(row, low)} – {format_row_value(row, high)}"
    if high is not None:
        return f"≤ {format_row_value(row, high)}"
    if low is not None:
        return f"≥ {format_row_value(row, low)}"
    return "-"


def summary_markdown(
    rows: list[CheckRow],
    *,
    baseline: str,
    tolerance: float,
    environment: dict[str, Any] | None = None,
) -> str:
    """A Markdown section: the verdict, one table row per suite, optimizer and metric, and a
    list naming each regression."""
    failed = [row for row in rows if row.regressed]
    verdict = (
        f"❌ {len(failed)} regression{'s' if len(failed) != 1 else ''}"
        if failed
        else "✅ no regression"
    )
    lines = [f"### looksam-bench check: {verdict}", ""]
    where = ""
    if environment:
        device, name = environment.get("device"), environment.get("device_name")
        where = f" · measured on {md_text(device)} ({md_text(name)})"
    lines += [
        f"Baseline {md_code(baseline)} · ratio tolerance +{100 * tolerance:g} %{where}",
        "",
        "| suite | optimizer | metric | baseline | measured | change | allowed | result |",
        "|:--|:--|:--|--:|--:|--:|:--|:--|",
    ]
    for row in rows:
        cells = (
            row.workload,
            row.optimizer,
            row.metric,
            format_row_value(row, row.baseline),
            format_row_value(row, row.measured),
            format_change(row),
            format_allowed(row),
            "❌ REGRESSION" if row.regressed else "✅ ok",
        )
        lines.append("| " + " | ".join(md_text(c) for c in cells) + " |")
    if failed:
        lines += ["", "**Regressions:**", ""]
        for row in failed:
            lines.append(
                f"- {md_text(row.workload)} · {md_text(row.optimizer)} · {row.metric}: measured "
                f"{format_row_value(row, row.measured)}, allowed {format_allowed(row)} "
                f"(baseline {format_row_value(row, row.baseline)})"
            )
    return "\n".join(lines) + "\n"
