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
    # the headline is the 3 confirmation seeds: tests are made, not refused
    assert "too few seeds" not in result.output
    assert "Welch" in result.output
    assert html.read_text().lstrip().lower().startswith("<!doctype html")
    assert "| looksam |" in md.read_text()
    data = json.loads(js.read_text())
    assert [s["optimizer"] for s in data["studies"]] == ["sgd", "sam", "looksam"]
    assert sum(len(s["trials"]) for s in data["studies"]) == 12
    assert sum(len(s["confirmations"]) for s in data["studies"]) == 9
    board = {row["optimizer"]: row for row in data["leaderboard"]}
    assert list(board) == ["sgd", "sam", "looksam"]
    for row in board.values():
        assert row["seeds"] == 3
        assert row["confirmed"] is True
        low, high = row["accuracy_ci95"]
        assert low <= row["accuracy_mean"] <= high
        assert row["contended_trials"] >= 0
        assert set(row["best_params"]) >= {"lr"}
        if row["speed_vs_base"] is not None:  # every timing contended: no speed, said so
            assert row["speed_iqr"][0] <= row["speed_vs_base"] <= row["speed_iqr"][1]
            assert row["speed_method"].startswith("paired")
    assert board["sgd"]["speed_vs_base"] in (None, 1.0)  # the base against itself
    kinds = {f["kind"] for f in data["findings"]}
    assert kinds & {"difference", "no_difference"}
    assert all(set(f) == {"kind", "sentence", "p_value"} for f in data["findings"])


def test_terminal_leaderboard_never_splits_a_number_at_80_columns(
    tiny_sweep: tuple[SweepSpec, Path], tmp_path: Path
) -> None:
    from looksam.reports.leaderboard import leaderboard_rows
    from looksam.sweeps.results import load_sweep_data

    spec, _ = tiny_sweep
    result = runner.invoke(
        app,
        ["report", "--sweep", spec.name, "--storage", spec.storage,
         "--html", str(tmp_path / "r.html")],
        env={"COLUMNS": "80"},
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    words = result.output.split()
    for row in leaderboard_rows(load_sweep_data(spec)):
        for token in row["confirmed hyperparameters"].split():
            assert token in words, f"{token} was split across lines"


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
