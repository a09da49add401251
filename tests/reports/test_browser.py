"""The HTML report as a person sees it: headless Chromium opens the file offline and draws it.

Needs Debian's ``chromium`` (``.ci/chromium.sh`` installs it) and Playwright for Python, which
drives that binary directly (``playwright install`` is never run). Without them the test is
skipped with the reason; under CI (``$CI`` set) it fails instead, so CI cannot silently lose it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from looksam.reports.findings import Finding
from looksam.reports.html import render_html
from looksam.reports.model import SweepData

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACT = Path(__file__).resolve().parents[2] / "test-artifacts" / "report.png"
# Playwright adds --headless itself; these keep the browser from reaching out on its own.
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def _unavailable() -> str | None:
    """Why the browser test cannot run here, or None."""
    if not CHROMIUM.is_file():
        return "no Chromium: apt-get install chromium (.ci/chromium.sh does)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "no Playwright for Python: pip install -e '.[test]'"
    return None


@pytest.fixture(scope="session")
def chromium() -> Path:
    """The browser binary; skips before the (slow) tiny sweep runs for nothing, except in CI."""
    reason = _unavailable()
    if reason is not None and not os.environ.get("CI"):
        pytest.skip(reason)
    return CHROMIUM


def test_report_renders_offline_in_chromium(
    chromium: Path, tiny_sweep_data: SweepData, tmp_path: Path
) -> None:
    reason = _unavailable()
    if reason is not None:  # only reached with $CI set
        pytest.fail(f"{reason} — CI is set, so this test must run")
    from PIL import Image
    from playwright.sync_api import ConsoleMessage, Request, sync_playwright

    data = tiny_sweep_data
    report = tmp_path / "report.html"
    report.write_text(
        render_html(data, findings=[Finding("speed", "A finding, to see the list drawn.")]),
        encoding="utf-8",
    )
    url = report.as_uri()
    errors: list[str] = []
    requests: list[str] = []

    def on_console(message: ConsoleMessage) -> None:
        if message.type == "error":
            errors.append(message.text)

    def on_request(request: Request) -> None:
        requests.append(request.url)

    with sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            str(tmp_path / "profile"),  # a fresh --user-data-dir
            executable_path=str(chromium),
            headless=True,
            args=ARGS,
            viewport={"width": 1200, "height": 900},
        )
        try:
            context.on("request", on_request)
            page = context.new_page()
            page.on("console", on_console)
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto(url, wait_until="load")

            with_accuracy = [t for s in data.studies for t in s.trials if t.accuracy is not None]
            points = page.locator("#scatter .point")
            assert points.count() == len(with_accuracy)
            assert points.first.is_visible()
            assert "trial" in (points.first.locator("title").text_content() or "")
            # Hover the point painted last: it is on top whatever the data, so no neighbour
            # (points may overlap) takes the pointer; the hover style shows the page reacts.
            topmost = points.last
            topmost.hover()
            assert topmost.evaluate("e => getComputedStyle(e).strokeWidth") == "2.5px"
            box = page.locator("#scatter svg").bounding_box()
            assert box is not None
            assert box["width"] > 600

            with_curve = [s for s in data.studies if any(t.curve for t in s.complete)]
            assert page.locator("#curves polyline").count() == len(with_curve)
            sensitivity = json.loads(page.locator("#data-sensitivity").text_content() or "")
            assert page.locator("#sensitivity .dot").count() == sum(
                len(p["points"]) for p in sensitivity["panels"]
            )
            assert page.locator("#importances .bar").count() == sum(
                len(s.importances) for s in data.studies
            )
            assert page.locator("#leaderboard tbody tr").count() == len(data.studies)
            assert page.locator("#findings li").count() == 1

            ARTIFACT.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(ARTIFACT), full_page=True)
        finally:
            context.close()

    assert errors == []
    assert url in requests
    assert [u for u in requests if u != url and not u.startswith("data:")] == []
    with Image.open(ARTIFACT) as shot:
        assert shot.width >= 1200
        colours = shot.convert("RGB").getcolors(maxcolors=1 << 20)
    assert colours is not None
    assert len(colours) > 50  # text, axes and coloured points, not a blank page
