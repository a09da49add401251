"""Untrusted text in Markdown (job summaries, pull-request comments): shown, never interpreted.

Optimizer, workload and sweep names come from specs and plugins. In the HTML report they are
escaped; in Markdown they would otherwise reach the reader as raw HTML (``<script>``,
``<img onerror=…>``), links, images or emphasis. :func:`md_text` escapes a value for running text
or a table cell, :func:`md_code` wraps it in a code span that no backtick in it can close.
"""

from __future__ import annotations

import re

# HTML's three as entities (no tag, no autolink, no entity of the author's); Markdown's link,
# image, code, emphasis and heading characters and the table's '|' with a backslash; line breaks
# as spaces, so a value never starts a block of its own.
_ESCAPES = str.maketrans(
    {
        "&": "&amp;",
        "<": "&lt;",
        ">": "&gt;",
        "\\": "\\\\",
        "`": "\\`",
        "*": "\\*",
        "_": "\\_",
        "~": "\\~",
        "[": "\\[",
        "]": "\\]",
        "#": "\\#",
        "|": "\\|",
        "\r": " ",
        "\n": " ",
    }
)
_BACKTICKS = re.compile(r"`+")


def md_text(value: object) -> str:
    """``value`` as literal Markdown text, safe in a table cell."""
    return str(value).translate(_ESCAPES)


def md_code(value: object) -> str:
    """``value`` in a code span (literal, HTML included) that no backtick inside it can close;
    its '|' escaped, so it may stand in a table cell too."""
    text = " ".join(str(value).splitlines()).replace("|", "\\|")
    fence = "`" * (1 + max((len(run) for run in _BACKTICKS.findall(text)), default=0))
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"
