"""A sweep's experiment as MLflow 3's UI shows it: tagged as model training, its artifacts beside
the store, its URL printed by ``looksam-bench ui`` and opening on the runs in a real browser.

One small SQLite store is shared by the module (a fresh one costs seconds of schema migrations).
The browser test starts a real ``mlflow ui`` on 127.0.0.1 and drives Debian's headless Chromium
through Playwright (see tests/reports/test_browser.py); without them it is skipped, in CI it fails.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import typer
from mlflow import MlflowClient
from typer.testing import CliRunner

import looksam.cli.ui as ui_module
from looksam.cli.ui import ui, ui_command, ui_environment
from looksam.sweeps.tracking import (
    EXPERIMENT_TAGS,
    MlflowTracker,
    TrialRecord,
    artifact_location,
    experiment_url,
    list_experiments,
)
from looksam.train.runner import Environment, EpochRecord, RunConfig, RunResult

SWEEP = "ui-sweep"
STUDY = f"{SWEEP}/digits-noisy/looksam"
SECRET = "hunter2-not-for-artifacts"
CHROMIUM = Path("/usr/bin/chromium")
SCREENSHOT = Path(__file__).resolve().parents[2] / "test-artifacts" / "mlflow-experiment.png"
ARGS = [  # as tests/reports/test_browser.py: a browser that reaches out to nothing on its own
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]

runner = CliRunner()
app = typer.Typer()
app.command()(ui)


def _result(seed: int, accuracies: list[float]) -> RunResult:
    history = tuple(
        EpochRecord(
            epoch=i + 1, step=10 * (i + 1), train_loss=1.0 / (i + 1), test_accuracy=a,
            train_seconds=2.0 * (i + 1),
        )
        for i, a in enumerate(accuracies)
    )  # fmt: skip
    return RunResult(
        config=RunConfig("digits-noisy", "looksam", hyperparameters={"k": 5}, seed=seed, lr=0.05),
        status="ok",
        message="",
        steps=10 * len(history),
        forward_backward_passes=12 * len(history),
        train_seconds=2.0 * len(history),
        warmup_seconds=0.1,
        samples_per_second=1000.0,
        median_step_seconds=0.01,
        final_accuracy=accuracies[-1],
        best_accuracy=max(accuracies),
        time_to_target_seconds=None,
        history=history,
        environment=Environment(
            device="cpu", device_name="x86_64", torch_version="2.9.0", timm_version=None,
            python_version="3.11", cpu_threads=2, platform="Linux", git_commit=None,
        ),
    )  # fmt: skip


@dataclass(frozen=True)
class Store:
    folder: Path  # the working directory the sweep ran in
    uri: str
    experiment_id: str
    parent_id: str


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Store:
    """A sweep's store as a sweep leaves it: one study, two trials, its report and spec."""
    folder = tmp_path_factory.mktemp("ui-store")
    # Absolute: MLflow caches a store per URI in the process, so a relative one would follow
    # this test into other working directories. The sweep still runs in ``folder``, whose
    # ./mlruns must stay absent.
    uri = f"sqlite:///{folder}/runs/mlflow.db"
    with contextlib.chdir(folder):
        tracker = MlflowTracker(uri, SWEEP)
        tracker.start_study(SWEEP, STUDY, "looksam", {"name": SWEEP})
        for number, curve in enumerate(([0.5, 0.7, 0.8], [0.4, 0.6, 0.9])):
            tracker.log_trial(
                TrialRecord(
                    study_name=STUDY, trial_number=number, optimizer="looksam",
                    params={"k": 5, "lr": 0.05}, state="COMPLETE", failure_reason=None,
                    results=(_result(0, curve),), objective_values=(curve[-1], 1.5),
                )
            )  # fmt: skip
        tracker.end_study(STUDY, {"complete": 2.0})
        tracker.close()
        report = Path("reports") / f"{SWEEP}.html"
        report.parent.mkdir()
        report.write_text("<!doctype html><title>report</title>", encoding="utf-8")
        spec = Path(f"{SWEEP}.toml")
        spec.write_text(f'[sweep]\nname = "{SWEEP}"\n# postgresql://u:{SECRET}@db/x\n')
        tracker.log_artifacts([report, spec])
        parent = tracker._parent_ids[STUDY]
        return Store(folder, uri, tracker.experiment_id, parent)


def _client(store: Store) -> MlflowClient:
    return MlflowClient(store.uri)


def test_the_experiment_is_tagged_as_model_training_with_artifacts_beside_the_store(
    store: Store,
) -> None:
    experiment = _client(store).get_experiment(store.experiment_id)
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    assert EXPERIMENT_TAGS == {"mlflow.experimentKind": "custom_model_development"}
    expected = (store.folder / "runs" / "mlartifacts" / SWEEP).resolve()
    assert experiment.artifact_location == expected.as_uri()
    assert not (store.folder / "mlruns").exists()


def test_the_parent_run_holds_the_report_and_the_redacted_spec(store: Store) -> None:
    client = _client(store)
    names = sorted(f.path for f in client.list_artifacts(store.parent_id))
    assert names == [f"{SWEEP}.html", f"{SWEEP}.toml"]
    artifacts = store.folder / "runs" / "mlartifacts" / SWEEP / store.parent_id / "artifacts"
    spec = (artifacts / f"{SWEEP}.toml").read_text()
    assert SECRET not in spec
    assert "postgresql://***@db/x" in spec
    assert SECRET in (store.folder / f"{SWEEP}.toml").read_text()  # the user's file is untouched
    children = client.search_runs([store.experiment_id], "tags.`looksam.role` = 'trial'")
    assert len(children) == 2
    assert all(not client.list_artifacts(r.info.run_id) for r in children)


def test_an_older_experiment_gains_the_kind_but_a_kind_chosen_in_the_ui_stays(
    store: Store,
) -> None:
    client = _client(store)
    bare = client.create_experiment("older-sweep")
    genai = client.create_experiment(
        "chosen-sweep", tags={"mlflow.experimentKind": "genai_development"}
    )
    MlflowTracker(store.uri, "older-sweep").close()
    MlflowTracker(store.uri, "chosen-sweep").close()
    assert client.get_experiment(bare).tags["mlflow.experimentKind"] == "custom_model_development"
    assert client.get_experiment(genai).tags["mlflow.experimentKind"] == "genai_development"


def test_artifact_location_follows_the_store(tmp_path: Path) -> None:
    db = tmp_path / "x" / "mlflow.db"
    assert artifact_location(f"sqlite:///{db}", "a b/c") == (
        (tmp_path / "x" / "mlartifacts" / "a_b_c").as_uri()
    )
    assert artifact_location("http://127.0.0.1:5000", "s") is None  # the server decides
    assert artifact_location("https://u:pw@mlflow.example.org", "s") is None
    server_db = artifact_location("postgresql://u:pw@db/mlflow", "s")
    assert server_db == (Path.cwd() / "runs" / "mlartifacts" / "s").as_uri()
    assert artifact_location("sqlite:///:memory:", "s") is None


def test_list_experiments_reads_the_store_without_mlflow(store: Store, tmp_path: Path) -> None:
    found = list_experiments(store.uri)
    assert found[SWEEP] == store.experiment_id
    assert found["Default"] == "0"
    assert list_experiments(f"sqlite:///{tmp_path}/missing.db") == {}
    not_mlflow = tmp_path / "other.db"
    not_mlflow.write_bytes(b"")
    assert list_experiments(f"sqlite:///{not_mlflow}") == {}


class FakeProcess:
    """`mlflow ui` that exits at once: the command's own output is what is tested."""

    pid = 0

    def __init__(self, command: list[str], **kwargs: object) -> None:
        pass

    def wait(self, timeout: float | None = None) -> int:
        return 0


@pytest.fixture
def no_server(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ui_module.subprocess, "Popen", FakeProcess)
    monkeypatch.setattr(ui_module, "_port_free", lambda host, port: True)


@pytest.mark.usefixtures("no_server")
def test_ui_prints_the_sweeps_experiment_url(store: Store) -> None:
    uri = store.uri
    url = (
        f"http://127.0.0.1:5123/#/experiments/{store.experiment_id}?workflowType=machine_learning"
    )
    assert experiment_url("http://127.0.0.1:5123", store.experiment_id) == url
    by_name = runner.invoke(
        app, ["--tracking-uri", uri, "--sweep", SWEEP, "--port", "5123"], env={"COLUMNS": "80"}
    )
    assert by_name.exit_code == 0, by_name.output
    assert f"sweep {SWEEP}: {url}" in by_name.output  # on one line, however narrow the terminal

    every = runner.invoke(app, ["--tracking-uri", uri, "--port", "5123"], env={"COLUMNS": "200"})
    assert every.exit_code == 0, every.output
    assert url in every.output
    assert "#/experiments/0?" not in every.output  # MLflow's empty Default experiment


@pytest.mark.usefixtures("no_server")
def test_ui_takes_the_store_and_sweep_from_a_spec(store: Store, tmp_path: Path) -> None:
    spec = tmp_path / "spec.toml"
    uri = store.uri
    spec.write_text(f'[sweep]\nname = "{SWEEP}"\n[tracking]\nuri = "{uri}"\n')
    result = runner.invoke(app, [str(spec), "--port", "5124"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert f"5124/#/experiments/{store.experiment_id}?workflowType=machine_learning" in (
        result.output
    )
    off = tmp_path / "off.toml"
    off.write_text('[sweep]\nname = "off"\n[tracking]\nenabled = false\n')
    refused = runner.invoke(app, [str(off)], env={"COLUMNS": "200"})
    assert refused.exit_code == 2, refused.output


@pytest.mark.usefixtures("no_server")
def test_ui_names_a_sweep_the_store_does_not_hold(store: Store) -> None:
    uri = store.uri
    result = runner.invoke(app, ["--tracking-uri", uri, "--sweep", "nope"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "no experiment 'nope' in this store yet" in result.output
    assert "#/experiments/" not in result.output


# --------------------------------------------------------------------------- a real browser


def _browser_unavailable() -> str | None:
    if not CHROMIUM.is_file():
        return "no Chromium: apt-get install chromium (.ci/chromium.sh does)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "no Playwright for Python: pip install -e '.[test]'"
    return None


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def _group_command_lines(group: int) -> list[str]:
    """The command lines of the live processes in a process group (Linux's /proc; else none)."""
    lines = []
    for entry in Path("/proc").glob("[0-9]*"):
        with contextlib.suppress(OSError, ValueError):
            if os.getpgid(int(entry.name)) == group:
                lines.append((entry / "cmdline").read_bytes().replace(b"\0", b" ").decode())
    return lines


@contextlib.contextmanager
def _mlflow_ui(store: Store, log: Path) -> Iterator[str]:
    """`mlflow ui` as `looksam-bench ui` starts it, on a free loopback port; its base URL."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    command = ui_command("127.0.0.1", port)
    env = ui_environment(store.uri)
    assert store.uri not in command  # the store travels in the environment, not in `ps`
    with log.open("wb") as out:
        proc = subprocess.Popen(
            command, cwd=store.folder, env=env, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while not _answers(f"{base}/health"):
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"mlflow ui did not come up: {log.read_text(errors='replace')[-800:]}")
            time.sleep(0.25)
        command_lines = _group_command_lines(proc.pid)  # what `ps` shows any local user
        assert any("mlflow" in line for line in command_lines), command_lines
        assert not any(store.uri in line for line in command_lines), command_lines
        yield base
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@pytest.mark.slow
def test_the_printed_url_opens_the_runs_not_the_genai_overview(
    store: Store, tmp_path: Path
) -> None:
    reason = _browser_unavailable()
    if reason is not None:
        if os.environ.get("CI"):
            pytest.fail(f"{reason} — CI is set, so this test must run")
        pytest.skip(reason)
    from playwright.sync_api import expect, sync_playwright

    with _mlflow_ui(store, tmp_path / "mlflow-ui.log") as base, sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            str(tmp_path / "profile"),  # a fresh profile: no workflow type remembered
            executable_path=str(CHROMIUM),
            headless=True,
            args=ARGS,
            viewport={"width": 1400, "height": 900},
        )
        try:
            page = context.new_page()
            page.goto(experiment_url(base, store.experiment_id))
            # the study's parent run, listed in the runs table (MLflow names it after the study)
            expect(page.get_by_role("link", name=STUDY)).to_be_visible(timeout=60_000)
            assert f"#/experiments/{store.experiment_id}/runs" in page.url
            assert "workflowType=machine_learning" in page.url
            body = page.inner_text("body")
            assert "matching runs" in body  # the runs table's footer
            assert "Usage" not in body  # the GenAI overview's tabs (Usage, Quality, Tool calls)
            assert "Token Usage" not in body
            SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(SCREENSHOT))
        finally:
            context.close()
    assert SCREENSHOT.stat().st_size > 10_000
