"""A short Markdown summary (leaderboard + findings) for CI job summaries and PR comments."""

from __future__ import annotations

from looksam.reports.findings import Finding
from looksam.reports.leaderboard import COLUMNS, leaderboard_rows
from looksam.reports.model import SweepData


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render_markdown(data: SweepData, findings: list[Finding]) -> str:
    """Markdown text: a title line, the leaderboard table and the findings as bullets."""
    lines = [
        f"### looksam-bench sweep `{data.name}` on `{data.workload}` ({data.objective})",
        "",
        "| " + " | ".join(COLUMNS) + " |",
        "|" + "|".join("---" for _ in COLUMNS) + "|",
    ]
    lines += [
        "| " + " | ".join(_cell(row[c]) for c in COLUMNS) + " |" for row in leaderboard_rows(data)
    ]
    if findings:
        lines += ["", *(f"- {_cell(f.text)}" for f in findings)]
    lines += ["", f"_generated {data.generated_at}_", ""]
    return "\n".join(lines)
