"""A short Markdown summary (leaderboard + findings) for CI job summaries and PR comments."""

from __future__ import annotations

from looksam.reports.advice import ADVICE_COLUMNS, advice_from, advice_rows, paste_line, sentence
from looksam.reports.findings import Finding
from looksam.reports.leaderboard import COLUMNS, leaderboard_rows
from looksam.reports.model import SweepData


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _table(columns: tuple[str, ...], rows: list[dict[str, str]]) -> list[str]:
    return [
        "| " + " | ".join(columns) + " |",
        "|" + "|".join("---" for _ in columns) + "|",
        *("| " + " | ".join(_cell(row.get(c, "")) for c in columns) + " |" for row in rows),
    ]


def render_markdown(data: SweepData, findings: list[Finding]) -> str:
    """Markdown text: advise's answer (for an advise run), a title line, the leaderboard table
    and the findings as bullets."""
    lines: list[str] = []
    advice = advice_from(data)
    if advice is not None:
        lines += [
            f"### Which SAM should I use on `{_cell(data.workload)}`?",
            "",
            f"**{advice.verdict}**: {_cell(sentence(advice))}",
            "",
        ]
        line = paste_line(advice)
        if line is not None:
            lines += ["```python", line, "```", ""]
        lines += [*_table(ADVICE_COLUMNS, advice_rows(advice)), ""]
    lines += [
        f"### looksam-bench sweep `{data.name}` on `{data.workload}` ({data.objective})",
        "",
        *_table(COLUMNS, leaderboard_rows(data)),
    ]
    if findings:
        lines += ["", *(f"- {_cell(f.text)}" for f in findings)]
    lines += ["", f"_generated {data.generated_at}_", ""]
    return "\n".join(lines)
