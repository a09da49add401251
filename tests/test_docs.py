"""The README is a front door and docs/ the reference: short, linked, and true to the registry.

* The README stays at most 300 lines and keeps the two set-up commands, ``make sweep`` and
  ``make test``.
* Every relative link in README.md and docs/*.md points to a file that exists, and a link to a
  heading of a Markdown page (``page.md#anchor``) to a heading that exists.
* Every default in docs/optimizers.md's table (``LookSAM(base, rho=0.05, k=5, alpha=0.7)``) is the
  registry's, and every optimizer that wraps a base has a row: the defaults are written in the
  classes, the registry and this table, and tests tie all three (the classes to the registry:
  ``tests/optim/test_public_face.py``).
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
import torch

from looksam.optim import (
    LossTermMethod,
    SharpnessAwareOptimizer,
    create_optimizer,
    list_optimizers,
)

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
DOCS = REPO / "docs"
PAGES = [README, *sorted(DOCS.glob("*.md"))]

#: Constructor arguments that are not hyperparameters (test_public_face.py's list).
NOT_HYPERPARAMETERS = {"base", "total_steps", "scalars", "sync_gv"}

LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```.*?^```", re.S | re.M)
ROW = re.compile(r"^\| `(\w+)\(base(?:, ([^`]*))?\)` \|", re.M)


def _prose(text: str) -> str:
    """The page without its code blocks (a ``[x](y)`` in code is not a link)."""
    return FENCE.sub("", text)


def _anchors(page: Path) -> set[str]:
    """GitHub's anchors for a page's headings: lower case, punctuation dropped, spaces -> '-'."""
    anchors = set()
    for heading in re.findall(r"^#+ (.+)$", _prose(page.read_text()), re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        anchors.add(slug)
    return anchors


def _relative_links(page: Path) -> list[tuple[str, Path, str]]:
    """``(link as written, the file it names, its anchor)`` for every relative link on a page."""
    found = []
    for target in LINK.findall(_prose(page.read_text())):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # https:, mailto: ...
            continue
        path, _, anchor = target.partition("#")
        found.append((target, (page.parent / path).resolve() if path else page, anchor))
    return found


# ------------------------------------------------------------------ the front door


def test_the_readme_is_a_front_door_of_at_most_300_lines() -> None:
    lines = README.read_text().splitlines()
    assert len(lines) <= 300, f"README.md has {len(lines)} lines; move reference text to docs/"


def test_the_readme_keeps_the_two_set_up_commands() -> None:
    text = README.read_text()
    block = text[text.index("## Quick start") :]
    block = block[block.index("```bash\n") : block.index("```\n", block.index("```bash\n") + 1)]
    commands = [line.split("#")[0].strip() for line in block.splitlines()[1:]]
    assert commands == ["make sweep", "make test"]


def test_the_readme_links_every_docs_page() -> None:
    linked = {path for _, path, _ in _relative_links(README)}
    missing = [p.name for p in DOCS.glob("*.md") if p.resolve() not in linked]
    assert missing == []


# ------------------------------------------------------------------ links


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_every_relative_link_points_to_something_that_exists(page: Path) -> None:
    links = _relative_links(page)
    broken = [target for target, path, _ in links if not path.exists()]
    assert broken == [], f"{page.relative_to(REPO)}: links to nothing: {broken}"
    bad_anchors = [
        target
        for target, path, anchor in links
        if anchor and path.suffix == ".md" and anchor not in _anchors(path)
    ]
    assert bad_anchors == [], f"{page.relative_to(REPO)}: no such heading: {bad_anchors}"


def test_the_link_check_catches_a_broken_link(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    (tmp_path / "there.md").write_text("# There\n\n## A heading\n")
    page.write_text(
        "[ok](there.md#a-heading) [gone](missing.md) [web](https://example.org)\n"
        "```\n[in code](not-a-link.md)\n```\n"
    )
    links = _relative_links(page)
    assert [t for t, p, _ in links if not p.exists()] == ["missing.md"]
    assert _anchors(tmp_path / "there.md") == {"there", "a-heading"}


# ------------------------------------------------------------------ defaults against the registry


def _documented_defaults(text: str) -> dict[str, dict[str, str]]:
    """``{class name: {argument: value as written}}`` from the table's first column."""
    table: dict[str, dict[str, str]] = {}
    for cls, args in ROW.findall(text):
        pairs = [a.split("=", 1) for a in args.split(", ")] if args else []
        assert all(len(p) == 2 for p in pairs), f"{cls}: unreadable arguments {args!r}"
        table[cls] = {name.strip(): value.strip() for name, value in pairs}
    return table


def _registry_by_class() -> dict[str, dict[str, object]]:
    """``{class name: {hyperparameter: default}}`` for every registered optimizer with a base."""
    by_class = {}
    for info in list_optimizers():
        if not info.wraps_base:
            continue
        base = "adamw" if info.name == "msam" else None  # MSAM needs a momentum
        opt = create_optimizer(info.name, [torch.nn.Parameter(torch.zeros(2))], base=base,
                               total_steps=100)  # fmt: skip
        assert isinstance(opt, SharpnessAwareOptimizer | LossTermMethod)
        by_class[type(opt).__name__] = {hp.name: hp.default for hp in info.hyperparameters}
    return by_class


def _mismatches(documented: dict[str, dict[str, str]]) -> list[str]:
    registry = _registry_by_class()
    wrong = [f"{cls}: not a registered optimizer" for cls in documented if cls not in registry]
    wrong += [f"{cls}: no row in the table" for cls in registry if cls not in documented]
    for cls, args in documented.items():
        for name, written in args.items():
            if name in NOT_HYPERPARAMETERS or cls not in registry:
                continue
            if name not in registry[cls]:
                wrong.append(f"{cls}({name}=…): not a hyperparameter in the registry")
                continue
            value = ast.literal_eval(written)
            default = registry[cls][name]
            if (value, isinstance(value, bool)) != (default, isinstance(default, bool)):
                wrong.append(f"{cls}: {name}={written} in the docs, {default!r} in the registry")
    return wrong


def test_the_documented_defaults_are_the_registry_defaults() -> None:
    documented = _documented_defaults((DOCS / "optimizers.md").read_text())
    assert documented, "docs/optimizers.md has no table of classes and defaults"
    assert _mismatches(documented) == []


def test_the_defaults_check_catches_a_changed_number() -> None:
    text = (DOCS / "optimizers.md").read_text()
    assert "`LookSAM(base, rho=0.05, k=5, alpha=0.7)`" in text
    changed = text.replace(
        "`LookSAM(base, rho=0.05, k=5, alpha=0.7)`", "`LookSAM(base, rho=0.05, k=5, alpha=0.5)`"
    )
    assert _mismatches(_documented_defaults(changed)) == [
        "LookSAM: alpha=0.5 in the docs, 0.7 in the registry"
    ]
    dropped = re.sub(r"^\| `MSAM\(.*\n", "", text, flags=re.M)
    assert _mismatches(_documented_defaults(dropped)) == ["MSAM: no row in the table"]
