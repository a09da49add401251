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
from rich.console import Console
from typer.testing import CliRunner

import looksam.cli.ui as ui_module
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
    assert result.output.startswith(f"MLFLOW_BACKEND_STORE_URI={uri} ")  # not an argument
    assert "--backend-store-uri" not in result.output
    assert "--host 127.0.0.1" in result.output
    assert "--port 5123" in result.output


def test_dry_run_hides_a_database_password() -> None:
    uri = "postgresql://optuna:hunter2@db:5432/mlflow"
    result = runner.invoke(app, ["--tracking-uri", uri, "--dry-run"], env={"COLUMNS": "500"})
    assert result.exit_code == 0, result.output
    assert "postgresql://***@db:5432/mlflow" in result.output
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
            # as a background job of a script starts it: Ctrl-C must still stop it
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while not _answers(f"http://127.0.0.1:{port}/"):
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.skip(f"mlflow ui did not come up: {log.read_text(errors='replace')[-500:]}")
            with contextlib.suppress(subprocess.TimeoutExpired):  # exits, or time to poll again
                proc.wait(timeout=0.25)
        os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in the terminal sends
        try:
            code = proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            ps = subprocess.run(
                ["ps", "-eo", "pid,pgid,stat,args"], capture_output=True, text=True
            )
            pytest.fail(
                f"still running 30 s after SIGINT; log:\n{log.read_text()[-1500:]}\n"
                f"{ps.stdout[-3000:]}"
            )
        assert code == 0
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


@pytest.mark.parametrize(
    ("host", "warned"),
    [
        ("0.0.0.0", True),
        ("::", True),
        ("192.168.1.20", True),
        ("mlflow.example.org", True),
        ("127.0.0.1", False),
        ("127.0.0.2", False),  # all of 127.0.0.0/8 is loopback
        ("::1", False),
        ("localhost", False),
    ],
)
def test_a_non_loopback_host_is_warned_about_in_one_yellow_line(
    host: str, warned: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a colour terminal 80 columns wide: the warning must be yellow and still one line
    terminal = Console(force_terminal=True, color_system="standard", width=80)
    monkeypatch.setattr(ui_module, "console", terminal)
    db = tmp_path / "mlflow.db"
    db.touch()
    result = runner.invoke(app, ["--tracking-uri", f"sqlite:///{db}", "--host", host, "--dry-run"])
    assert result.exit_code == 0, result.output
    lines = [line for line in result.output.splitlines() if "no login" in line]
    if not warned:
        assert lines == []
        return
    assert len(lines) == 1
    assert "\x1b[33m" in lines[0]  # yellow
    assert f"{host}:5000" in lines[0]
    assert f"--host {host}" in result.output  # the command is still printed


def test_serving_on_all_interfaces_warns_before_it_starts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Not only --dry-run: the real start warns once, before MLflow is launched."""
    db = tmp_path / "mlflow.db"
    db.touch()
    events: list[str] = []

    class FakeProcess:
        pid = 0

        def __init__(self, command: list[str], **kwargs: object) -> None:
            events.append("launched")

        def wait(self, timeout: float | None = None) -> int:
            return 0

    monkeypatch.setattr(ui_module.subprocess, "Popen", FakeProcess)
    monkeypatch.setattr(ui_module, "_port_free", lambda host, port: True)
    printed = ui_module.console.print

    def recording_print(*objects: object, **kwargs: object) -> None:
        events.append(" ".join(str(o) for o in objects))
        printed(*objects, **kwargs)

    monkeypatch.setattr(ui_module.console, "print", recording_print)
    result = runner.invoke(
        app, ["--tracking-uri", f"sqlite:///{db}", "--host", "0.0.0.0"], env={"COLUMNS": "500"}
    )
    assert result.exit_code == 0, result.output
    warnings = [i for i, e in enumerate(events) if "no login" in e]
    assert len(warnings) == 1
    assert warnings[0] < events.index("launched")
