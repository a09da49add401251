"""A short Markdown summary (leaderboard + findings) for CI job summaries and PR comments."""

from __future__ import annotations

from looksam._markdown import md_code, md_text
from looksam.reports.advice import ADVICE_COLUMNS, advice_from, advice_rows, paste_line, sentence
from looksam.reports.findings import Finding
from looksam.reports.leaderboard import COLUMNS, leaderboard_rows
from looksam.reports.model import SweepData


def _table(columns: tuple[str, ...], rows: list[dict[str, str]]) -> list[str]:
    return [
        "| " + " | ".join(md_text(c) for c in columns) + " |",
        "|" + "|".join("---" for _ in columns) + "|",
        *("| " + " | ".join(md_text(row.get(c, "")) for c in columns) + " |" for row in rows),
    ]


def render_markdown(data: SweepData, findings: list[Finding]) -> str:
    """Markdown text: advise's answer (for an advise run), a title line, the leaderboard table
    and the findings as bullets."""
    lines: list[str] = []
    advice = advice_from(data)
    if advice is not None:
        lines += [
            f"### Which SAM should I use on {md_code(data.workload)}?",
            "",
            f"**{md_text(advice.verdict)}**: {md_text(sentence(advice))}",
            "",
        ]
        line = paste_line(advice)
        if line is not None:
            lines += ["```python", line, "```", ""]
        lines += [*_table(ADVICE_COLUMNS, advice_rows(advice)), ""]
    lines += [
        f"### looksam-bench sweep {md_code(data.name)} on {md_code(data.workload)} "
        f"({md_text(data.objective)})",
        "",
        *_table(COLUMNS, leaderboard_rows(data)),
    ]
    if findings:
        lines += ["", *(f"- {md_text(f.text)}" for f in findings)]
    lines += ["", f"_generated {md_text(data.generated_at)}_", ""]
    return "\n".join(lines)
