"""`looksam-bench report` on a real stored sweep: files written, errors exit 2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from looksam.cli.app import app
from looksam.sweeps.spec import SweepSpec

runner = CliRunner()
WIDE = {"COLUMNS": "220"}


def test_report_by_sweep_name_writes_html_markdown_and_json(
    tiny_sweep: tuple[SweepSpec, Path], tmp_path: Path
) -> None:
    spec, _ = tiny_sweep
    html, md, js = tmp_path / "r.html", tmp_path / "r.md", tmp_path / "r.json"
    result = runner.invoke(
        app,
        ["report", "--sweep", spec.name, "--storage", spec.storage, "--html", str(html),
         "--markdown", str(md), "--json", str(js)],
        env=WIDE,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "Leaderboard: tiny on digits-noisy" in result.output
    assert "Pareto front of looksam" in result.output
    assert "2 seeds: too few" not in result.output  # 2 seeds: CI shown, tests refused
    assert "too few seeds (2 and 2)" in result.output
    assert html.read_text().lstrip().lower().startswith("<!doctype html")
    assert "| looksam |" in md.read_text()
    data = json.loads(js.read_text())
    assert [s["optimizer"] for s in data["studies"]] == ["sgd", "sam", "looksam"]
    assert sum(len(s["trials"]) for s in data["studies"]) == 12


def test_report_never_shows_a_password() -> None:
    bad = runner.invoke(
        app, ["report", "--sweep", "x", "--storage", "postgresql://u:hunter2@127.0.0.1:9/db"]
    )
    assert bad.exit_code == 2
    assert "hunter2" not in bad.output


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--sweep", "no-such-sweep"], "no sweep named 'no-such-sweep'"),
        (["--html", "{file}/r.html"], "cannot write"),
        (["--margin", "0"], "--margin is in accuracy points"),
        (["--margin", "150"], "between 0 and 100"),
    ],
)
def test_report_errors_exit_2(
    tiny_sweep: tuple[SweepSpec, Path], tmp_path: Path, args: list[str], needle: str
) -> None:
    spec, _ = tiny_sweep
    a_file = tmp_path / "a-file"
    a_file.write_text("not a folder")
    args = [a.replace("{file}", str(a_file)) for a in args]
    result = runner.invoke(
        app, ["report", "--sweep", spec.name, "--storage", spec.storage, *args], env=WIDE
    )
    assert result.exit_code == 2, result.output
    assert needle in result.output


def test_report_of_a_sweep_without_finished_trials_exits_2(tmp_path: Path) -> None:
    import optuna

    storage = f"sqlite:///{tmp_path}/o.db"
    optuna.create_study(study_name="empty/digits-noisy/sgd", storage=storage,
                        directions=["maximize", "minimize"])  # fmt: skip
    result = runner.invoke(app, ["report", "--sweep", "empty", "--storage", storage])
    assert result.exit_code == 2, result.output
    assert "no finished trial" in result.output


def test_report_output_into_a_missing_folder_fails_before_rendering(
    tiny_sweep: tuple[SweepSpec, Path], tmp_path: Path
) -> None:
    spec, _ = tiny_sweep
    missing = tmp_path / "no" / "such" / "r.json"
    result = runner.invoke(
        app, ["report", "--sweep", spec.name, "--storage", spec.storage, "--json", str(missing)]
    )
    assert result.exit_code == 2, result.output
    assert "does not exist" in result.output
    assert "Leaderboard" not in result.output  # refused before any work
