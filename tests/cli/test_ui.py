"""`looksam-bench ui`: the MLflow UI command it runs, and the mistakes it refuses."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from looksam.cli.ui import ui

runner = CliRunner()
app = typer.Typer()
app.command()(ui)


def test_dry_run_prints_a_loopback_mlflow_ui_command(tmp_path: Path) -> None:
    db = tmp_path / "mlflow.db"
    db.touch()
    uri = f"sqlite:///{db}"
    result = runner.invoke(
        app, ["--tracking-uri", uri, "--port", "5123", "--dry-run"], env={"COLUMNS": "500"}
    )
    assert result.exit_code == 0, result.output
    assert "-m mlflow ui" in result.output
    assert f"--backend-store-uri {uri}" in result.output
    assert "--host 127.0.0.1" in result.output
    assert "--port 5123" in result.output


def test_dry_run_hides_a_database_password() -> None:
    uri = "postgresql://optuna:hunter2@db:5432/mlflow"
    result = runner.invoke(app, ["--tracking-uri", uri, "--dry-run"], env={"COLUMNS": "500"})
    assert result.exit_code == 0, result.output
    assert "postgresql://optuna:***@db:5432/mlflow" in result.output
    assert "hunter2" not in result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--tracking-uri", "sqlite:///{tmp}/missing.db"], "no MLflow database"),
        ([], "no MLflow database"),  # the default store, in an empty working directory
        (["--tracking-uri", "http://u:pw@127.0.0.1:5000"], "already an MLflow server"),
        (["--tracking-uri", "sqlite:///{tmp}/x.db", "--port", "0"], "--port"),
    ],
)
def test_user_errors_exit_2_with_one_line(
    args: list[str], message: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "x.db").touch()
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    result = runner.invoke(app, [*args, "--dry-run"], env={"COLUMNS": "500"})
    assert result.exit_code == 2, result.output
    assert "error:" in result.output
    assert message in result.output
    assert "Traceback" not in result.output
    assert ":pw@" not in result.output


@pytest.mark.slow
def test_serves_the_ui_until_ctrl_c_then_exits_0(tmp_path: Path) -> None:
    """One real process: the UI answers on 127.0.0.1, and SIGINT stops it and its server."""
    db = tmp_path / "mlflow.db"
    db.touch()  # an empty sqlite file: MLflow creates its tables on start
    uri = f"sqlite:///{db}"
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    code = (
        "import typer; from looksam.cli.ui import ui; "
        "app = typer.Typer(); app.command()(ui); app()"
    )
    log = tmp_path / "ui.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-c", code, "--tracking-uri", uri, "--port", str(port)],
            cwd=tmp_path, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while not _answers(f"http://127.0.0.1:{port}/"):
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.skip(f"mlflow ui did not come up: {log.read_text(errors='replace')[-500:]}")
            with contextlib.suppress(subprocess.TimeoutExpired):  # exits, or time to poll again
                proc.wait(timeout=0.25)
        os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in the terminal sends
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    output = log.read_text(errors="replace")
    assert f"http://127.0.0.1:{port}" in output
    assert "Compare" in output
    assert "MLflow UI stopped" in output
    assert "Traceback" not in output
    assert not _answers(f"http://127.0.0.1:{port}/")  # the server went with it


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False
