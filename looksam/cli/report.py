"""`looksam-bench report`: a sweep's leaderboard, fronts and findings; HTML, Markdown, JSON."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from looksam.cli._console import check_writable, console, fail
from looksam.reports.findings import EQUIVALENCE_MARGIN, findings
from looksam.reports.leaderboard import has_results
from looksam.reports.model import SweepData
from looksam.reports.terminal import terminal_report
from looksam.sweeps.results import discover_spec, load_sweep_data, save_report
from looksam.sweeps.spec import DEFAULT_STORAGE, SpecError, SweepSpec, load_spec

DEFAULT_SPEC = Path("sweeps/quick.toml")
REPORTS_DIR = Path("reports")


def print_and_save(
    data: SweepData,
    *,
    html: Path | None,
    markdown: Path | None = None,
    json_path: Path | None = None,
    margin: float = EQUIVALENCE_MARGIN,
) -> None:
    """Terminal report, then the files; shared by `report` and the end of `sweep`."""
    console.print(terminal_report(data, findings(data, margin)))
    written = save_report(data, html=html, markdown=markdown, json_path=json_path, margin=margin)
    for path in written:
        console.print(f"wrote {path} ({path.stat().st_size:,} bytes)")


def report(
    spec_path: Annotated[
        Path | None,
        typer.Argument(metavar="[SPEC]", help="The sweep's spec \\[default: sweeps/quick.toml]."),
    ] = None,
    sweep_name: Annotated[
        str | None, typer.Option("--sweep", help="Report a stored sweep by name instead.")
    ] = None,
    storage: Annotated[str | None, typer.Option(help="Optuna storage of the sweep.")] = None,
    html: Annotated[
        Path | None, typer.Option(help="HTML file \\[default: reports/SWEEP.html].")
    ] = None,
    markdown: Annotated[Path | None, typer.Option(help="Also write a Markdown summary.")] = None,
    json_path: Annotated[
        Path | None, typer.Option("--json", help="Also write the data behind the report.")
    ] = None,
    margin: Annotated[
        float,
        typer.Option(
            help="Accuracy points within which a cheap variant 'matches' SAM: the findings say "
            "so only when an equivalence test (TOST, 5 %) shows the gap is smaller.",
        ),
    ] = 100 * EQUIVALENCE_MARGIN,
) -> None:
    """Report a finished (or running) sweep from its stores; never re-trains anything.

    Prints the leaderboard (best accuracy with a 95 % CI over seeds, time, throughput, speed
    against the base optimizer), each optimizer's Pareto front and plain-language findings, and
    writes one self-contained HTML file that opens offline.
    """
    if not 0 < margin < 100:
        fail(f"--margin is in accuracy points and must be between 0 and 100, got {margin:g}")
    for path, option in ((html, "--html"), (markdown, "--markdown"), (json_path, "--json")):
        check_writable(path, option)
    try:
        spec: SweepSpec
        if sweep_name is not None:
            spec = discover_spec(sweep_name, storage or DEFAULT_STORAGE)
        else:
            spec = load_spec(spec_path or DEFAULT_SPEC, {"storage": storage, "no_mlflow": True})
        data = load_sweep_data(spec)
    except (SpecError, ValueError) as error:
        fail(str(error))
    if not has_results(data):
        fail(f"sweep {spec.name!r} has no finished trial yet: nothing to report")
    if html is None:
        REPORTS_DIR.mkdir(exist_ok=True)  # the default place; an explicit --html must exist
    target = html or REPORTS_DIR / f"{spec.name}.html"
    check_writable(target, "--html")
    print_and_save(data, html=target, markdown=markdown, json_path=json_path, margin=margin / 100)
