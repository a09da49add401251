"""Workers that start together share one SQLite tracking store safely: real processes.

Each worker imports everything first, says "ready", and waits for "go" on stdin, so their first
store calls start together. Round one is a fresh directory: MLflow's schema is created and
upgraded by whichever worker gets there first (without a lock, alembic's migrations collide and
leave the store unusable for good). Round two starts one more study in all of them at once on the
now existing store: it must get one parent run, not one per worker.
"""

from __future__ import annotations

import os
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow import MlflowClient

from looksam.sweeps.tracking import MlflowTracker, store_lock_path

WORKERS = 3
STUDIES = ("race/wl/first", "race/wl/second")
#: A bound, not a pace: each line normally arrives within seconds.
DEADLINE_SECONDS = 120

WORKER = """
import sys
import mlflow.store.tracking.sqlalchemy_store  # the slow imports, before "ready"
from looksam.sweeps.tracking import MlflowTracker, TrialRecord

uri, worker, studies = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
print("ready", flush=True)
tracker = None
for study in studies:
    if sys.stdin.readline().strip() != "go":
        sys.exit(3)
    if tracker is None:
        tracker = MlflowTracker(uri, "race")
    tracker.start_study("race", study, "sgd", {"n_trials": 3})
    record = TrialRecord(study, worker, "sgd", {"lr": 0.1}, "COMPLETE", None, (), (0.5,))
    tracker.log_trial(record)
    tracker.end_study(study, {"complete": 1.0})
    print("done", flush=True)
tracker.close()
"""


def _expect(proc: subprocess.Popen[bytes], word: str, deadline: float, log: Path) -> None:
    """Read one line from a worker (bounded by ``deadline``) and check it is ``word``."""
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    line = b""
    while not line.endswith(b"\n"):
        left = deadline - time.monotonic()
        ready, _, _ = select.select([fd], [], [], max(left, 0))
        if not ready:
            pytest.fail(f"worker said nothing for too long; its stderr: {_tail(log)}")
        chunk = os.read(fd, 256)
        if not chunk:
            proc.wait()
            pytest.fail(f"worker exited {proc.returncode} before {word!r}: {_tail(log)}")
        line += chunk
    assert line.decode().strip() == word


def _tail(log: Path) -> str:
    return log.read_text(errors="replace")[-1500:]


@pytest.mark.slow
def test_workers_started_together_share_one_store_and_one_parent_per_study(
    tmp_path: Path,
) -> None:
    db = tmp_path / "runs" / "mlflow.db"  # not there yet: the workers create it
    uri = f"sqlite:///{db}"
    logs = [tmp_path / f"worker{i}.log" for i in range(WORKERS)]
    procs = []
    for i, log in enumerate(logs):
        command = [sys.executable, "-c", WORKER, uri, str(i), *STUDIES]
        with log.open("wb") as err:
            pipes = {"stdin": subprocess.PIPE, "stdout": subprocess.PIPE, "stderr": err}
            procs.append(subprocess.Popen(command, cwd=tmp_path, **pipes))
    try:
        deadline = time.monotonic() + DEADLINE_SECONDS
        for proc, log in zip(procs, logs, strict=True):
            _expect(proc, "ready", deadline, log)
        for _ in STUDIES:
            for proc in procs:  # all at once: no worker has touched the store before "go"
                assert proc.stdin is not None
                proc.stdin.write(b"go\n")
                proc.stdin.flush()
            for proc, log in zip(procs, logs, strict=True):
                _expect(proc, "done", deadline, log)
        for proc, log in zip(procs, logs, strict=True):
            code = proc.wait(timeout=max(deadline - time.monotonic(), 1))
            assert code == 0, _tail(log)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()

    # This test's own process has not opened the store yet: it is the third process.
    tracker = MlflowTracker(uri, "race")
    assert store_lock_path(db).is_file()
    client = MlflowClient(tracking_uri=uri)
    runs = client.search_runs([tracker.experiment_id], max_results=100)
    for study in STUDIES:
        parents = [
            r
            for r in runs
            if r.data.tags.get("looksam.study") == study
            and r.data.tags.get("looksam.role") == "study"
        ]
        assert len(parents) == 1, f"{study}: {len(parents)} parent runs"
        children = [
            r
            for r in runs
            if r.data.tags.get("looksam.study") == study
            and r.data.tags.get("looksam.role") == "trial"
        ]
        numbers = sorted(int(c.data.tags["looksam.trial_number"]) for c in children)
        assert numbers == list(range(WORKERS))
        assert {c.data.tags["mlflow.parentRunId"] for c in children} == {parents[0].info.run_id}
