"""MLflow tracking against real stores: what a sweep writes is what the UI and a notebook read.

Most tests share one sqlite store (a fresh one costs ~1.5 s of schema migrations) and use an
experiment of their own; one test runs a real ``mlflow server`` over HTTP.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from mlflow import MlflowClient
from mlflow.entities import Run, ViewType
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import ErrorCode

from looksam.sweeps.tracking import (
    MlflowTracker,
    NullTracker,
    Tracker,
    TrackingUnavailable,
    TrialRecord,
    outbox_path,
)
from looksam.train.runner import (
    Environment,
    EpochRecord,
    RunConfig,
    RunResult,
    run_training,
)

SECRET = "hunter2-not-for-logs"
PG_URL = f"postgresql://optuna:{SECRET}@db.internal:5432/optuna"

ENV = Environment(
    device="cpu",
    device_name="x86_64",
    torch_version="2.9.0",
    timm_version="1.0.20",
    python_version="3.11.7",
    cpu_threads=2,
    platform="Linux",
    git_commit="abc123",
)


def fake_result(
    seed: int,
    accuracies: list[float],
    losses: list[float],
    *,
    status: str = "ok",
    seconds_per_epoch: float = 2.0,
    time_to_target: float | None = None,
    optimizer: str = "looksam",
) -> RunResult:
    """A RunResult with a small hand-written history (epochs 1..n)."""
    history = tuple(
        EpochRecord(
            epoch=i + 1,
            step=10 * (i + 1),
            train_loss=loss,
            test_accuracy=acc,
            train_seconds=seconds_per_epoch * (i + 1),
        )
        for i, (acc, loss) in enumerate(zip(accuracies, losses, strict=True))
    )
    return RunResult(
        config=RunConfig(
            "digits-noisy", optimizer, hyperparameters={"rho": 0.1, "k": 5}, seed=seed, lr=0.05
        ),
        status=status,
        message="" if status == "ok" else f"non-finite training loss by step {10 * len(history)}",
        steps=10 * len(history),
        forward_backward_passes=12 * len(history),
        train_seconds=seconds_per_epoch * len(history),
        warmup_seconds=0.1,
        samples_per_second=1000.0 + seed,
        median_step_seconds=0.01,
        final_accuracy=accuracies[-1] if status == "ok" else None,
        best_accuracy=max(accuracies),
        time_to_target_seconds=time_to_target,
        history=history,
        environment=ENV,
    )


PARAMS = {"rho": 0.1, "k": 5, "alpha": 0.7, "lr": 0.05, "batch_size": 64}


def complete_trial(study: str, number: int = 0) -> TrialRecord:
    return TrialRecord(
        study_name=study,
        trial_number=number,
        optimizer="looksam",
        params=dict(PARAMS),
        state="COMPLETE",
        failure_reason=None,
        results=(
            fake_result(0, [0.5, 0.7, 0.8], [2.0, 1.0, 0.5], time_to_target=6.0),
            fake_result(1, [0.6, 0.9, 0.7], [1.8, 0.8, 0.6], seconds_per_epoch=4.0),
        ),
        objective_values=(0.75, 1.5),
    )


def failed_trial(study: str, number: int = 1, reason: str = "diverged") -> TrialRecord:
    return TrialRecord(
        study_name=study,
        trial_number=number,
        optimizer="looksam",
        params={**PARAMS, "lr": 10.0},
        state="FAIL",
        failure_reason=reason,
        results=(fake_result(0, [0.3, 0.1], [5.0, 50.0], status="diverged"),),
        objective_values=None,
    )


@pytest.fixture(scope="module")
def store_uri(tmp_path_factory: pytest.TempPathFactory) -> str:
    # a folder that does not exist yet: the tracker must create it
    return f"sqlite:///{tmp_path_factory.mktemp('mlflow')}/nested/dir/mlflow.db"


@pytest.fixture
def experiment(request: pytest.FixtureRequest) -> str:
    return f"sweep-{request.node.name}"


def runs_of(uri: str, experiment: str) -> list[Run]:
    client = MlflowClient(tracking_uri=uri)
    found = client.get_experiment_by_name(experiment)
    assert found is not None
    return list(client.search_runs([found.experiment_id], max_results=100))


def by_name(runs: list[Run]) -> dict[str, Run]:
    return {r.info.run_name: r for r in runs}


def test_study_parent_and_trial_children_read_back(store_uri: str, experiment: str) -> None:
    tracker = MlflowTracker(store_uri, experiment)
    db = Path(store_uri.removeprefix("sqlite:///"))
    assert db.is_file()
    tracker.start_study(experiment, "looksam-study", "looksam", {"seeds": [0, 1], "trials": 2})
    child0 = tracker.log_trial(complete_trial("looksam-study", 0))
    child1 = tracker.log_trial(failed_trial("looksam-study", 1))
    tracker.end_study("looksam-study", {"best_value": 0.75, "n_trials": 2.0})
    tracker.close()

    runs = by_name(runs_of(store_uri, experiment))
    assert set(runs) == {"looksam-study", "looksam-t0", "looksam-t1"}
    parent, t0, t1 = runs["looksam-study"], runs["looksam-t0"], runs["looksam-t1"]
    assert (t0.info.run_id, t1.info.run_id) == (child0, child1)

    assert parent.data.tags["looksam.role"] == "study"
    assert parent.data.tags["looksam.study"] == "looksam-study"
    assert parent.data.tags["looksam.optimizer"] == "looksam"
    assert parent.data.params == {"seeds": "[0, 1]", "trials": "2"}
    assert parent.data.metrics == {"best_value": 0.75, "n_trials": 2.0}
    assert parent.info.status == "FINISHED"
    for child in (t0, t1):
        assert child.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert child.data.tags["looksam.study"] == "looksam-study"

    assert t0.data.params == {
        "rho": "0.1",
        "k": "5",
        "alpha": "0.7",
        "lr": "0.05",
        "batch_size": "64",
        "workload": "digits-noisy",
        "optimizer": "looksam",
        "base": "sgd",  # the registry's default base, resolved
        "seeds": "0,1",
    }
    tags = t0.data.tags
    assert tags["looksam.trial_number"] == "0"
    assert tags["looksam.state"] == "COMPLETE"
    assert tags["looksam.failure_reason"] == "none"
    assert tags["looksam.device"] == "cpu"
    assert tags["looksam.torch_version"] == "2.9.0"
    assert tags["looksam.timm_version"] == "1.0.20"
    assert tags["looksam.git_commit"] == "abc123"
    assert t0.info.status == "FINISHED"

    m = t0.data.metrics
    assert m["final_accuracy"] == pytest.approx(0.75)  # mean of 0.8 and 0.7
    assert m["best_accuracy"] == pytest.approx(0.8)  # best point of the mean curve (epoch 2)
    assert m["train_seconds"] == pytest.approx(9.0)  # mean of 6 and 12
    assert m["samples_per_second"] == pytest.approx(1000.5)
    assert m["forward_backward_passes"] == pytest.approx(36.0)
    assert m["time_to_target_seconds"] == pytest.approx(6.0)  # only seed 0 reached it
    assert m["seeds_reached_target"] == 1.0
    assert (m["objective_0"], m["objective_1"]) == (0.75, 1.5)

    assert t1.info.status == "FAILED"
    assert t1.data.tags["looksam.state"] == "FAIL"
    assert t1.data.tags["looksam.failure_reason"] == "diverged"
    assert t1.data.tags["looksam.seed_status"] == "diverged"
    assert "final_accuracy" not in t1.data.metrics
    assert "time_to_target_seconds" not in t1.data.metrics
    assert "objective_0" not in t1.data.metrics


def test_metric_history_is_the_per_epoch_mean_over_seeds(store_uri: str, experiment: str) -> None:
    tracker = MlflowTracker(store_uri, experiment)
    tracker.start_study(experiment, "s", "looksam", {})
    run_id = tracker.log_trial(complete_trial("s"))
    tracker.end_study("s", {})
    assert run_id is not None
    client = MlflowClient(tracking_uri=store_uri)

    def history(key: str) -> list[tuple[int, float, int]]:
        points = sorted(client.get_metric_history(run_id, key), key=lambda p: p.step)
        return [(p.step, p.value, p.timestamp) for p in points]

    accuracy = history("test_accuracy")
    assert [step for step, _, _ in accuracy] == [1, 2, 3]
    assert [v for _, v, _ in accuracy] == pytest.approx([0.55, 0.8, 0.75])
    assert [v for _, v, _ in history("train_loss")] == pytest.approx([1.9, 0.9, 0.55])
    assert [(s, v) for s, v, _ in history("seed1/test_accuracy")] == [(1, 0.6), (2, 0.9), (3, 0.7)]
    # timestamps follow training seconds (mean over seeds: 3, 6, 9 s) from the run's start
    run = client.get_run(run_id)
    offsets = [ts - run.info.start_time for _, _, ts in accuracy]
    assert offsets == [3000, 6000, 9000]


def test_log_trial_is_one_batch_and_never_log_metric(
    store_uri: str, experiment: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: dict[str, int] = {}

    def counting(name: str) -> None:
        real: Callable[..., Any] = getattr(MlflowClient, name)

        def wrapper(self: MlflowClient, *args: Any, **kwargs: Any) -> Any:
            calls[name] = calls.get(name, 0) + 1
            return real(self, *args, **kwargs)

        monkeypatch.setattr(MlflowClient, name, wrapper)

    for name in (
        "log_batch",
        "log_metric",
        "log_param",
        "set_tag",
        "set_terminated",
        "create_run",
    ):
        counting(name)
    tracker = MlflowTracker(store_uri, experiment)
    tracker.start_study(experiment, "s", "looksam", {"a": 1})
    calls.clear()
    tracker.log_trial(complete_trial("s"))
    assert calls == {"create_run": 1, "log_batch": 1, "set_terminated": 1}

    # 150 hyperparameters and 2 seeds x 400 epochs (1,600+ metrics): chunked to MLflow's limits
    many = TrialRecord(
        study_name="s",
        trial_number=1,
        optimizer="looksam",
        params={f"p{i}": i for i in range(150)},
        state="COMPLETE",
        failure_reason=None,
        results=tuple(fake_result(seed, [0.5] * 400, [1.0] * 400) for seed in (0, 1)),
        objective_values=(0.5,),
    )
    calls.clear()
    run_id = tracker.log_trial(many)
    assert calls == {"create_run": 1, "log_batch": 2, "set_terminated": 1}
    assert run_id is not None
    client = MlflowClient(tracking_uri=store_uri)
    assert len(client.get_metric_history(run_id, "test_accuracy")) == 400
    assert len(client.get_metric_history(run_id, "seed1/test_accuracy")) == 400
    assert len(client.get_run(run_id).data.params) == 150 + 4
    tracker.close()


def test_no_password_anywhere(store_uri: str, experiment: str) -> None:
    spec = {
        "storage": PG_URL,
        "tracking": {"uri": f"http://alice:{SECRET}@mlflow:5000"},
        "db_password": SECRET,
        "search_space": {"looksam": {"rho": {"low": 0.01, "high": 1.0, "log": True}}},
    }
    tracker = MlflowTracker(store_uri, experiment)
    tracker.start_study(experiment, "s", "looksam", spec)
    record = complete_trial("s")
    record = TrialRecord(**{**record.__dict__, "params": {**PARAMS, "storage": PG_URL}})
    tracker.log_trial(record)
    tracker.end_study("s", {"best": 0.5})

    runs = runs_of(store_uri, experiment)
    dump = repr([(r.info, r.data.params, r.data.tags, r.data.metrics) for r in runs])
    assert SECRET not in dump
    assert "postgresql://***@db.internal:5432/optuna" in dump
    parent = by_name(runs)["s"]
    assert parent.data.params["search_space.looksam.rho.low"] == "0.01"
    assert parent.data.params["db_password"] == "***"
    assert '"db_password": "***"' in parent.data.tags["looksam.spec"]
    assert SECRET.encode() not in Path(store_uri.removeprefix("sqlite:///")).read_bytes()


def test_interrupted_trial_is_killed_and_close_ends_open_studies(
    store_uri: str, experiment: str
) -> None:
    tracker = MlflowTracker(store_uri, experiment)
    tracker.start_study(experiment, "a", "looksam", {})
    tracker.start_study(experiment, "b", "sam", {})  # two studies open in one process
    tracker.log_trial(failed_trial("a", 0, reason="interrupted"))
    tracker.close()
    runs = by_name(runs_of(store_uri, experiment))
    assert runs["looksam-t0"].info.status == "KILLED"
    assert runs["looksam-t0"].data.tags["mlflow.parentRunId"] == runs["a"].info.run_id
    assert runs["a"].info.status == "KILLED"
    assert runs["b"].info.status == "KILLED"


def test_a_resumed_sweep_reopens_the_study_parent(store_uri: str, experiment: str) -> None:
    first = MlflowTracker(store_uri, experiment)
    first.start_study(experiment, "s", "looksam", {"n_trials": 2})
    first.log_trial(failed_trial("s", 0, reason="interrupted"))
    first.close()  # Ctrl-C: the parent is KILLED

    again = MlflowTracker(store_uri, experiment)  # a new process resumes the sweep
    again.start_study(experiment, "s", "looksam", {"n_trials": 4, "timeout": 60})
    again.log_trial(complete_trial("s", 1))
    again.end_study("s", {"complete": 1.0})

    runs = runs_of(store_uri, experiment)
    parents = [r for r in runs if r.data.tags.get("looksam.role") == "study"]
    assert len(parents) == 1
    parent = parents[0]
    assert parent.info.status == "FINISHED"
    assert parent.data.params == {"n_trials": "2", "timeout": "60"}  # params never change
    assert '"n_trials": 4' in parent.data.tags["looksam.spec"]  # the tag follows the spec
    children = by_name([r for r in runs if r.data.tags.get("looksam.role") == "trial"])
    assert set(children) == {"looksam-t0", "looksam-t1"}
    assert {c.data.tags["mlflow.parentRunId"] for c in children.values()} == {parent.info.run_id}


def test_trial_that_failed_before_training(store_uri: str, experiment: str) -> None:
    tracker = MlflowTracker(store_uri, experiment)
    tracker.start_study(experiment, "s", "sam", {})
    oom = TrialRecord("s", 3, "sam", {"rho": 0.05}, "FAIL", "oom", (), None)
    run_id = tracker.log_trial(oom)
    tracker.end_study("s", {})
    assert run_id is not None
    run = MlflowClient(tracking_uri=store_uri).get_run(run_id)
    assert run.info.status == "FAILED"
    assert run.data.params == {"rho": "0.05", "optimizer": "sam"}
    assert run.data.metrics == {}
    assert run.data.tags["looksam.failure_reason"] == "oom"


def test_a_real_training_run(store_uri: str, experiment: str) -> None:
    config = RunConfig(
        "digits-noisy", "sgd", epochs=2, batch_size=256, device="cpu", timing_warmup_steps=1
    )
    result = run_training(config)
    assert len(result.history) == 2
    tracker = MlflowTracker(store_uri, experiment)
    tracker.start_study(experiment, "sgd-study", "sgd", {})
    record = TrialRecord("sgd-study", 0, "sgd", {"lr": 0.05}, "COMPLETE", None, (result,), (0.5,))
    run_id = tracker.log_trial(record)
    tracker.end_study("sgd-study", {})
    assert run_id is not None
    client = MlflowClient(tracking_uri=store_uri)
    points = client.get_metric_history(run_id, "test_accuracy")
    assert sorted((p.step, p.value) for p in points) == [
        (h.epoch, pytest.approx(h.test_accuracy)) for h in result.history
    ]
    run = client.get_run(run_id)
    assert run.data.params["base"] == "none"  # sgd is a base optimizer, nothing wrapped
    assert run.data.tags["looksam.device"] == "cpu"
    assert run.data.tags["looksam.torch_version"] == result.environment.torch_version


def test_misuse_is_a_value_error(store_uri: str, experiment: str) -> None:
    with pytest.raises(ValueError, match="state"):
        TrialRecord("s", 0, "sgd", {}, "RUNNING", None, (), None)
    tracker = MlflowTracker(store_uri, experiment)
    with pytest.raises(ValueError, match="start_study"):
        tracker.log_trial(complete_trial("never-started"))
    with pytest.raises(ValueError, match="not open"):
        tracker.end_study("never-started", {})


def test_null_tracker_does_nothing() -> None:
    tracker: Tracker = NullTracker()
    tracker.start_study("sweep", "s", "looksam", {"storage": PG_URL})
    assert tracker.log_trial(complete_trial("s")) is None
    tracker.end_study("s", {"best": 1.0})
    tracker.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize("scheme", ["http", "postgresql"])
def test_unreachable_store_fails_fast_without_the_password(scheme: str) -> None:
    port = free_port()  # nothing listens there
    with pytest.raises(TrackingUnavailable) as caught:
        MlflowTracker(f"{scheme}://alice:{SECRET}@127.0.0.1:{port}/db", "sweep")
    message = str(caught.value)
    assert "not reachable" in message
    assert f"{scheme}://***@127.0.0.1:{port}/db" in message
    assert SECRET not in message
    assert "\n" not in message  # our one probe answered, not MLflow's minutes-long retries


def start_mlflow_server(folder: Path, port: int) -> subprocess.Popen[bytes]:
    """A real ``mlflow server`` on ``port`` over ``folder/server.db``, answering; skipped if it
    does not come up. Started again on the same folder and port it serves the same runs."""
    log = folder / "server.log"
    command = [
        sys.executable,
        "-m",
        "mlflow",
        "server",
        "--backend-store-uri",
        f"sqlite:///{folder}/server.db",
        "--artifacts-destination",
        str(folder / "artifacts"),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
    ]
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    with log.open("ab") as out:
        # its own process group: MLflow starts uvicorn as a child, and both must stop
        server = subprocess.Popen(
            command, cwd=folder, stdout=out, stderr=subprocess.STDOUT, env=env,
            start_new_session=True,
        )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while not _healthy(url):
        if server.poll() is not None or time.monotonic() > deadline:
            stop_mlflow_server(server, signal.SIGKILL)
            tail = log.read_text(errors="replace")[-500:]
            pytest.skip(f"mlflow server did not come up on port {port}: {tail}")
        with contextlib.suppress(subprocess.TimeoutExpired):  # exits, or time to poll again
            server.wait(timeout=0.25)
    return server


def stop_mlflow_server(server: subprocess.Popen[bytes], how: int = signal.SIGTERM) -> None:
    """Stop the server and its uvicorn child (SIGKILL: as a crash would)."""
    if server.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.pid, how)
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()


@pytest.fixture
def mlflow_server(tmp_path: Path) -> Iterator[str]:
    """A real ``mlflow server`` on a free loopback port; skipped if it does not come up."""
    port = free_port()
    server = start_mlflow_server(tmp_path, port)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        stop_mlflow_server(server)


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


@pytest.mark.slow
def test_through_a_real_tracking_server(mlflow_server: str) -> None:
    tracker = MlflowTracker(mlflow_server, "server-sweep")
    tracker.start_study("server-sweep", "s", "looksam", {"storage": PG_URL})
    tracker.log_trial(complete_trial("s", 0))  # the first request of a kind warms the server
    seconds = []
    for number in (1, 2, 3):
        start = time.perf_counter()
        run_id = tracker.log_trial(complete_trial("s", number))
        seconds.append(time.perf_counter() - start)
    # a CIFAR-sized trial: 3 seeds x 200 epochs, 1,200+ metric points
    big = TrialRecord(
        "s", 4, "looksam", dict(PARAMS), "COMPLETE", None,
        tuple(fake_result(seed, [0.5] * 200, [1.0] * 200) for seed in (0, 1, 2)), (0.5,),
    )  # fmt: skip
    start = time.perf_counter()
    big_id = tracker.log_trial(big)
    big_seconds = time.perf_counter() - start
    tracker.end_study("s", {"best": 0.75})
    tracker.close()
    print(
        f"\nlog_trial over HTTP: 2 seeds x 3 epochs median {1000 * statistics.median(seconds):.1f}"
        f" ms; 3 seeds x 200 epochs {1000 * big_seconds:.1f} ms"
    )

    assert run_id is not None
    client = MlflowClient(tracking_uri=mlflow_server)
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params["seeds"] == "0,1"
    points = client.get_metric_history(run_id, "test_accuracy")
    assert sorted(p.step for p in points) == [1, 2, 3]
    runs = by_name(runs_of(mlflow_server, "server-sweep"))
    assert set(runs) == {"s"} | {f"looksam-t{n}" for n in range(5)}
    assert big_id is not None
    assert len(client.get_metric_history(big_id, "seed2/test_accuracy")) == 200
    assert SECRET not in repr([(r.data.params, r.data.tags) for r in runs.values()])


# ---------------------------------------------------------------------- outages and the outbox


def _outage(code: str = "TEMPORARILY_UNAVAILABLE") -> Callable[..., Any]:
    """A client method that fails as a store does when it is down (or refuses, by its code)."""

    def fail(*args: Any, **kwargs: Any) -> Any:
        raise MlflowException("store is down", error_code=ErrorCode.Value(code))

    return fail


def _outbox_lines(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


def _trial_runs(uri: str, experiment: str) -> list[Run]:
    return [r for r in runs_of(uri, experiment) if r.data.tags.get("looksam.role") == "trial"]


def test_an_outage_keeps_trials_and_writes_them_when_the_store_is_back(
    store_uri: str,
    experiment: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    outbox = tmp_path / "sweep.mlflow-outbox.jsonl"
    tracker = MlflowTracker(store_uri, experiment, outbox=outbox)
    tracker.start_study(experiment, "s", "looksam", {})
    assert tracker.log_trial(complete_trial("s", 0)) is not None

    monkeypatch.setattr(tracker._client, "create_run", _outage())
    with caplog.at_level(logging.WARNING, logger="looksam.sweeps.tracking"):
        assert tracker.log_trial(complete_trial("s", 1)) is None  # no raise: training goes on
        assert tracker.log_trial(failed_trial("s", 2)) is None
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1  # one per outage, not one per trial
    assert "training goes on" in warnings[0].getMessage()
    assert str(outbox) in warnings[0].getMessage()
    assert tracker.pending == 2
    kept = _outbox_lines(outbox)  # persisted: a process dying now loses nothing
    assert [e["run_name"] for e in kept] == ["looksam-t1", "looksam-t2"]
    assert SECRET not in outbox.read_text()

    monkeypatch.undo()  # the store is back
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="looksam.sweeps.tracking"):
        assert tracker.log_trial(complete_trial("s", 3)) is not None
    assert not caplog.records
    assert tracker.pending == 0
    assert not outbox.exists()
    tracker.end_study("s", {"complete": 4.0})
    tracker.close()

    runs = by_name(runs_of(store_uri, experiment))
    assert set(runs) == {"s", "looksam-t0", "looksam-t1", "looksam-t2", "looksam-t3"}
    parent = runs["s"]
    for name in ("looksam-t0", "looksam-t1", "looksam-t2", "looksam-t3"):
        assert runs[name].data.tags["mlflow.parentRunId"] == parent.info.run_id
    late = runs["looksam-t1"]
    assert late.info.status == "FINISHED"
    assert late.data.metrics["final_accuracy"] == pytest.approx(0.75)
    assert runs["looksam-t2"].info.status == "FAILED"
    # written late, with its own times: it spans its 12 training seconds and ended before t3
    assert late.info.end_time - late.info.start_time == 12000
    assert late.info.end_time <= runs["looksam-t3"].info.end_time
    assert parent.info.status == "FINISHED"


def test_a_study_started_during_an_outage_is_written_whole_later(
    store_uri: str, experiment: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    tracker = MlflowTracker(store_uri, experiment)  # no outbox file: kept in memory
    monkeypatch.setattr(tracker._client, "search_runs", _outage())
    tracker.start_study(experiment, "s", "looksam", {"n_trials": 2})
    assert tracker.log_trial(complete_trial("s", 0)) is None
    tracker.end_study("s", {"complete": 1.0})
    assert tracker.pending == 3
    monkeypatch.undo()
    assert tracker.backfill() == 0
    runs = by_name(runs_of(store_uri, experiment))
    assert set(runs) == {"s", "looksam-t0"}
    assert runs["looksam-t0"].data.tags["mlflow.parentRunId"] == runs["s"].info.run_id
    assert runs["s"].info.status == "FINISHED"
    assert runs["s"].data.metrics == {"complete": 1.0}
    assert runs["s"].data.params == {"n_trials": "2"}


def test_a_refused_write_is_not_an_outage(
    store_uri: str, experiment: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    tracker = MlflowTracker(store_uri, experiment)
    tracker.start_study(experiment, "s", "looksam", {})
    monkeypatch.setattr(tracker._client, "create_run", _outage("INVALID_PARAMETER_VALUE"))
    with pytest.raises(TrackingUnavailable, match="store is down"):
        tracker.log_trial(complete_trial("s", 0))
    assert tracker.pending == 0  # retrying a refused record could never succeed


DIES_DURING_AN_OUTAGE = """
import os, sys
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import ErrorCode
sys.path.insert(0, sys.argv[4])
from test_tracking import complete_trial
from looksam.sweeps.tracking import MlflowTracker

tracker = MlflowTracker(sys.argv[1], sys.argv[2], outbox=__import__("pathlib").Path(sys.argv[3]))
tracker.start_study(sys.argv[2], "s", "looksam", {})

def down(*args, **kwargs):
    raise MlflowException("store is down", error_code=ErrorCode.Value("TEMPORARILY_UNAVAILABLE"))

tracker._client.log_batch = down  # the run is created, its metrics are not: cut short
assert tracker.log_trial(complete_trial("s", 0)) is None
os._exit(0)  # dies without close()
"""


@pytest.mark.slow
def test_what_a_dead_worker_kept_is_written_once_by_the_next_run(
    store_uri: str, experiment: str, tmp_path: Path
) -> None:
    outbox = tmp_path / "sweep.mlflow-outbox.jsonl"
    died = subprocess.run(
        [
            sys.executable, "-c", DIES_DURING_AN_OUTAGE, store_uri, experiment, str(outbox),
            str(Path(__file__).parent),
        ],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert died.returncode == 0, died.stderr[-2000:]
    assert len(_outbox_lines(outbox)) == 1
    cut_short = _trial_runs(store_uri, experiment)
    assert [r.info.status for r in cut_short] == ["RUNNING"]

    other = MlflowTracker(store_uri, "another-sweep", outbox=outbox)
    assert other.pending == 0  # not its experiment
    resumed = MlflowTracker(store_uri, experiment, outbox=outbox)
    assert resumed.pending == 1  # taken over from the process that is gone
    assert resumed.backfill() == 0
    assert not outbox.exists()
    trials = _trial_runs(store_uri, experiment)
    assert len(trials) == 1  # the cut-short run was replaced, not doubled
    assert trials[0].info.run_id != cut_short[0].info.run_id
    assert trials[0].info.status == "FINISHED"
    assert trials[0].data.metrics["final_accuracy"] == pytest.approx(0.75)


def test_two_parents_created_at_once_settle_on_the_earliest(
    store_uri: str, experiment: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without a shared lock (a tracking server), a worker that searched before another's
    parent existed creates its own, sees both, keeps the earliest and deletes its own."""
    first = MlflowTracker(store_uri, experiment)
    first.start_study(experiment, "s", "looksam", {})
    second = MlflowTracker(store_uri, experiment)
    real = second._parent_run
    searches: list[str] = []

    def late_search(study: str) -> Run | None:
        searches.append(study)  # the first ran before the first worker's create
        return None if len(searches) == 1 else real(study)

    monkeypatch.setattr(second, "_parent_run", late_search)
    monkeypatch.setattr(second, "_lock_path", None)
    second.start_study(experiment, "s", "looksam", {})
    second.log_trial(complete_trial("s", 1))
    first.log_trial(complete_trial("s", 0))
    runs = runs_of(store_uri, experiment)  # active runs only: the deleted one is gone
    parents = [r for r in runs if r.data.tags.get("looksam.role") == "study"]
    assert len(parents) == 1
    deleted = MlflowClient(tracking_uri=store_uri).search_runs(
        [first.experiment_id], run_view_type=ViewType.DELETED_ONLY
    )
    assert len(deleted) == 1
    children = [r for r in runs if r.data.tags.get("looksam.role") == "trial"]
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == {parents[0].info.run_id}


@pytest.mark.slow
def test_a_dead_tracking_server_loses_no_trial(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A real server dies mid-sweep and comes back on the same store and port."""
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # fail at once, not in 6 s
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    outbox = tmp_path / "runs" / "outage.mlflow-outbox.jsonl"
    server = start_mlflow_server(tmp_path, port)
    try:
        tracker = MlflowTracker(url, "outage", outbox=outbox)
        tracker.start_study("outage", "s", "looksam", {})
        assert tracker.log_trial(complete_trial("s", 0)) is not None
        stop_mlflow_server(server, signal.SIGKILL)  # dies, as a crashed server does
        with caplog.at_level(logging.WARNING, logger="looksam.sweeps.tracking"):
            assert tracker.log_trial(complete_trial("s", 1)) is None
            assert tracker.log_trial(complete_trial("s", 2)) is None
        assert len([r for r in caplog.records if r.levelno == logging.WARNING]) == 1
        assert len(_outbox_lines(outbox)) == 2
        server = start_mlflow_server(tmp_path, port)
        assert tracker.log_trial(complete_trial("s", 3)) is not None
        assert tracker.pending == 0
        tracker.end_study("s", {"complete": 4.0})
        tracker.close()
        runs = by_name(runs_of(url, "outage"))
    finally:
        stop_mlflow_server(server)
    assert set(runs) == {"s"} | {f"looksam-t{n}" for n in range(4)}
    for n in range(4):
        run = runs[f"looksam-t{n}"]
        assert run.info.status == "FINISHED"
        assert run.data.tags["mlflow.parentRunId"] == runs["s"].info.run_id
        assert run.data.metrics["final_accuracy"] == pytest.approx(0.75)
    assert runs["s"].info.status == "FINISHED"
    assert not outbox.exists()


@pytest.mark.slow
def test_a_store_left_half_upgraded_by_a_crash_opens_again(tmp_path: Path) -> None:
    """A crash mid-upgrade leaves alembic's copy of a table; the tracker drops it, upgrades."""
    import sqlalchemy
    from alembic import command
    from mlflow.store.db.utils import _get_alembic_config
    from mlflow.store.tracking.dbmodels.initial_models import Base as InitialBase

    db = tmp_path / "mlflow.db"
    uri = f"sqlite:///{db}"
    engine = sqlalchemy.create_engine(uri)
    InitialBase.metadata.create_all(engine)
    config = _get_alembic_config(uri)
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        # the revision before the one that rebuilds latest_metrics (39d1c3be5f05)
        command.upgrade(config, "a8c4a736bde6")
    engine.dispose()
    with contextlib.closing(sqlite3.connect(db)) as connection:
        connection.execute("CREATE TABLE _alembic_tmp_latest_metrics (key VARCHAR(250))")
        connection.commit()

    tracker = MlflowTracker(uri, "healed")  # without the repair: "... already exists"
    tracker.start_study("healed", "s", "looksam", {})
    assert tracker.log_trial(complete_trial("s", 0)) is not None
    tracker.end_study("s", {})
    with contextlib.closing(sqlite3.connect(db)) as connection:
        tables = {r[0] for r in connection.execute("SELECT name FROM sqlite_master")}
        assert not {t for t in tables if t.startswith("_alembic_tmp_")}
        # a copy whose table is gone holds the only data: refused, and left alone
        connection.execute("CREATE TABLE _alembic_tmp_widgets (x INTEGER)")
        connection.commit()
    with pytest.raises(TrackingUnavailable, match="_alembic_tmp_widgets holds the data"):
        MlflowTracker(uri, "healed")
    with contextlib.closing(sqlite3.connect(db)) as connection:
        tables = {r[0] for r in connection.execute("SELECT name FROM sqlite_master")}
    assert "_alembic_tmp_widgets" in tables


def test_outbox_path_sits_beside_the_optuna_storage() -> None:
    assert outbox_path("sqlite:///runs/optuna.db", "quick") == Path(
        "runs/quick.mlflow-outbox.jsonl"
    )
    assert outbox_path("journal:/data/j.log", "q") == Path("/data/q.mlflow-outbox.jsonl")
    assert outbox_path(PG_URL, "q") == Path("runs/q.mlflow-outbox.jsonl")
