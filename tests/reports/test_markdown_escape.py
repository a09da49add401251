"""Names in Markdown summaries are text: no raw HTML, link, image, code or table break gets out."""

from __future__ import annotations

import dataclasses
import re

import pytest
from test_advice_reports import _data

from looksam._markdown import md_code, md_text
from looksam.bench.check_summary import summary_markdown
from looksam.bench.suite import CheckRow
from looksam.reports.findings import findings
from looksam.reports.markdown import render_markdown

HOSTILE = [
    "<script>alert(1)</script>",
    '<img src=x onerror="alert(1)">',
    "[click](javascript:alert(1))",
    "![pixel](https://evil.example/p.png)",
    "a|b",
    "`x` *bold* _it_ ~~gone~~ # head",
    "line\nbreak",
    "&lt;escaped&gt;",
]


@pytest.mark.parametrize("name", HOSTILE)
def test_md_text_leaves_no_markup(name: str) -> None:
    out = md_text(name)
    for raw in ("<", ">", "\n"):
        assert raw not in out
    assert not re.search(r"(?<!\\)\]\(", out)  # no "](" that Markdown would read as a link
    assert md_text("<") == "&lt;"
    assert md_text("&lt;") == "&amp;lt;"  # the author's own entity is shown, not decoded
    assert all(out.count(f"\\{c}") == name.count(c) for c in "|*_[]`#~")


@pytest.mark.parametrize(
    ("value", "span"),
    [
        ("digits-noisy", "`digits-noisy`"),
        ("a`b", "``a`b``"),
        ("``x", "``` ``x ```"),
        ("<script>", "`<script>`"),  # literal inside a code span
        ("a|b", "`a\\|b`"),
    ],
)
def test_md_code_cannot_be_closed_from_inside(value: str, span: str) -> None:
    assert md_code(value) == span


def test_a_sweep_report_escapes_every_name() -> None:
    data = dataclasses.replace(
        _data(), name="<script>alert(1)</script>", workload='<img onerror="x">'
    )
    markdown = render_markdown(data, findings(data))
    assert "<script>" not in markdown.replace("`<script>alert(1)</script>`", "")
    assert '`<img onerror="x">`' in markdown  # in code spans: shown, not run
    body = markdown.replace(md_code(data.name), "").replace(md_code(data.workload), "")
    assert "<" not in body


def test_a_check_summary_escapes_suite_and_optimizer_names() -> None:
    row = CheckRow("<b>w</b>", "[x](javascript:y)", 1.0, 1.2, 1.1)
    text = summary_markdown([row], baseline="b`ase<>.json", tolerance=0.1)
    assert "<b>" not in text
    assert not re.search(r"(?<!\\)\]\(", text)
    assert "\\[x\\]" in text
    assert "``b`ase<>.json``" in text
