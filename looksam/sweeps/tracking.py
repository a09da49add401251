"""Record sweeps in MLflow: one experiment per sweep, a parent run per study, a child per trial.

This is the only module that imports mlflow, and it does so lazily, so ``import looksam`` and
``--no-mlflow`` sweeps never pay for it. Runs are written through :class:`mlflow.MlflowClient`
with explicit run ids (no fluent global state, so several studies can be open in one process),
and each run's params, tags and metrics go in one ``log_batch`` request: against a tracking
server every request is a network round trip, and a per-value ``log_metric`` loop would cost
more than a small trial.

Metric timestamps are the run's start plus the *training* seconds (evaluation excluded) at that
epoch, so MLflow's "Relative time" x-axis plots accuracy against training wall-clock: the
comparison this benchmark exists for.

Several workers may track one sweep. On a SQLite store they take an OS file lock beside the
database (``runs/mlflow.db.lock``) while MLflow creates or upgrades its schema — its alembic
migrations are not safe against a second process, and a collision leaves the file unusable — and
while they find or create a study's parent run, so a study has one parent. On a server, a worker
that created a second parent keeps the earliest and deletes its own. A store that stops answering
mid-sweep does not end the sweep: records wait in an outbox and are written when it is back.
"""

from __future__ import annotations

import contextlib
import getpass
import hashlib
import json
import logging
import math
import os
import re
import socket
import statistics
import tempfile
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from looksam.sweeps.redact import MASK, redact_error, redact_text, redact_url
from looksam.train.runner import EpochRecord, RunResult

try:
    import fcntl
except ImportError:  # Windows: no OS file locks of this kind; nothing is locked there
    fcntl = None  # type: ignore[assignment]

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities import Metric, Param, Run

    from looksam.sweeps.spec import SweepSpec

_logger = logging.getLogger(__name__)

DEFAULT_TRACKING_URI = "sqlite:///runs/mlflow.db"
"""Relative to the working directory; MLflow 3's own default kind (its plain file store errors)."""

STATES = ("COMPLETE", "PRUNED", "FAIL")

#: Seconds the reachability probe of an http(s) tracking server may take.
PROBE_TIMEOUT_SECONDS = 5
# MLflow's per-request limits (mlflow.utils.validation); log_batch refuses more.
_MAX_ENTITIES = 1000
_MAX_METRICS = 1000
_MAX_PARAMS_OR_TAGS = 100
_MAX_PARAM_VALUE = 6000
_MAX_TAG_VALUE = 8000
_MAX_KEY = 250
# database servers MLflow can track into (each driver takes a connect_timeout)
_SERVER_DATABASES = ("postgresql", "mysql")
_SECRET_KEY = re.compile(r"(password|passwd|pwd|secret|token|api_?key)$", re.IGNORECASE)
#: Against a tracking server, a sweep's store calls retry twice within 30 s each (MLflow's
#: default is minutes per request), then the record waits in the outbox.
_SERVER_REQUEST_POLICY = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "30",
}
#: MLflow error codes for a write the store understood and will never accept.
_REFUSALS = ("INVALID_PARAMETER_VALUE", "RESOURCE_ALREADY_EXISTS", "BAD_REQUEST")
#: Tag holding a trial run's record id, by which a retried write finds an earlier, partial try.
_RECORD_TAG = "looksam.record_id"
_TERMINATED = ("FINISHED", "FAILED", "KILLED")
#: Alembic's name prefix for the copy of a SQLite table it is rebuilding.
_ALEMBIC_TMP = "_alembic_tmp_"
#: Tags of a sweep's experiment. MLflow 3's UI keeps an experiment's kind in
#: ``mlflow.experimentKind`` (its experiment-type selector writes this tag); a UI that chooses
#: the view by it opens ``custom_model_development`` on its runs and metric charts, not on the
#: GenAI overview of traces. The UI of MLflow 3.17 chooses by its global "GenAI / Model
#: training" switch instead (the tag is not read for that), which experiment_url's
#: ``?workflowType=machine_learning`` sets.
EXPERIMENT_TAGS = {"mlflow.experimentKind": "custom_model_development"}
#: Folder, beside a SQLite tracking store, under which each sweep's artifacts are kept.
ARTIFACTS_DIR = "mlartifacts"


class TrackingUnavailable(ValueError):  # noqa: N818 - the name the sweep command catches
    """The tracking store cannot be reached, or refused a write (message has no password).

    ``transient`` is False for a write the store refused (retrying it cannot help) and True
    for an outage (the tracker keeps the record and retries).
    """

    def __init__(self, message: str, *, transient: bool = True) -> None:
        super().__init__(message)
        self.transient = transient


@dataclass(frozen=True)
class TrialRecord:
    """Everything one Optuna trial produced, ready to be tracked."""

    study_name: str
    trial_number: int
    optimizer: str
    params: dict[str, Any]  # the suggested hyperparameters (rho, k, alpha, lr, batch_size…)
    state: str  # "COMPLETE" | "PRUNED" | "FAIL"
    failure_reason: str | None  # "diverged" | "oom" | "interrupted" | "error: …" | None
    results: tuple[RunResult, ...]  # one per seed (empty if the trial failed before training)
    objective_values: tuple[float, ...] | None
    #: Extra child-run tags and final metrics the sweep adds (stage, contention, paired speed).
    tags: Mapping[str, str] = field(default_factory=dict)
    metrics: Mapping[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.state not in STATES:
            raise ValueError(f"state must be one of {', '.join(STATES)}, got {self.state!r}")


class Tracker(Protocol):
    """What a sweep needs from experiment tracking."""

    def start_study(
        self, sweep: str, study_name: str, optimizer: str, spec: Mapping[str, Any]
    ) -> None:
        """Open the parent run of one optimizer's study."""

    def log_trial(self, record: TrialRecord) -> str | None:
        """Record one finished trial; returns its run id where there is one."""

    def end_study(self, study_name: str, summary: Mapping[str, float]) -> None:
        """Record the study's summary (best values…) and close its parent run."""

    def close(self) -> None:
        """Close whatever is still open."""

    def backfill(self) -> int:
        """Write what an outage held back; returns how many records are still pending."""

    def log_artifacts(self, files: Sequence[Path]) -> None:
        """Attach files (the report, the spec) to every study's parent run; never raises."""


class NullTracker:
    """``--no-mlflow``: track nothing, cost nothing."""

    def start_study(
        self, sweep: str, study_name: str, optimizer: str, spec: Mapping[str, Any]
    ) -> None:
        """Do nothing."""

    def log_trial(self, record: TrialRecord) -> str | None:
        """Do nothing; there is no run id."""
        return None

    def end_study(self, study_name: str, summary: Mapping[str, float]) -> None:
        """Do nothing."""

    def close(self) -> None:
        """Do nothing."""

    def backfill(self) -> int:
        """Nothing is ever pending."""
        return 0

    def log_artifacts(self, files: Sequence[Path]) -> None:
        """Do nothing."""


def sqlite_db_path(tracking_uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` URI (relative to the working directory), else None.

    ``sqlite:///runs/x.db`` is relative, ``sqlite:////abs/x.db`` absolute; in-memory is None.
    """
    prefix = "sqlite:///"
    if not tracking_uri.startswith(prefix):
        return None
    path = tracking_uri[len(prefix) :].split("?", 1)[0]
    return Path(path) if path and path != ":memory:" else None


class MlflowTracker:
    """Track a sweep into one MLflow experiment; see the module docstring for the layout.

    A tracking store that stops answering mid-sweep does not stop the sweep: what could not be
    written waits in an outbox (in memory, and in ``outbox`` when given, so a process that dies
    loses nothing) and is written, oldest first, at the next call that finds the store back, or
    by :meth:`backfill`. One warning is logged per outage, not per trial. A write the store
    *refuses* (an invalid value) is not an outage and still raises :class:`TrackingUnavailable`.

    Args:
        tracking_uri: ``sqlite:///…`` (the parent folder is created), ``http(s)://…`` (probed
            once, quickly: :class:`TrackingUnavailable` if it does not answer), or any other
            backend MLflow accepts (``postgresql://…``).
        experiment: the experiment's name (one per sweep), created if missing, tagged as a
            model-training experiment (:data:`EXPERIMENT_TAGS`); on a SQLite store its
            artifacts go in ``mlartifacts/EXPERIMENT`` beside the database (see
            :func:`artifact_location`), never in ``./mlruns``.
        outbox: JSON-lines file for records kept during an outage (see :func:`outbox_path`).
            Records left there by a process that is gone (same store and experiment) are taken
            over, and written by the next call that reaches the store or by :meth:`backfill`.
    """

    def __init__(self, tracking_uri: str, experiment: str, outbox: Path | None = None) -> None:
        from mlflow import MlflowClient

        self._uri = tracking_uri
        self._shown_uri = redact_url(tracking_uri)
        self._http = tracking_uri.startswith(("http://", "https://"))
        # MLflow announces "Creating initial MLflow database tables..." at INFO on every new
        # database; the sweep prints its own progress (a level set by the user is kept).
        schema_log = logging.getLogger("mlflow.store.db.utils")
        if schema_log.level == logging.NOTSET:
            schema_log.setLevel(logging.WARNING)
        db = sqlite_db_path(tracking_uri)
        if db is not None:
            db.parent.mkdir(parents=True, exist_ok=True)
            # The store's modules take seconds to import: import them before the lock below,
            # so that workers wait for each other only while one creates or upgrades the schema.
            with contextlib.suppress(ImportError):
                import mlflow.store.tracking.sqlalchemy_store  # noqa: F401
        elif self._http:
            _probe_http(tracking_uri)
        elif tracking_uri.startswith(_SERVER_DATABASES):
            _probe_database(tracking_uri)
        #: Serialises, across processes, what MLflow does not make safe on one SQLite file:
        #: creating or upgrading its schema, and finding-or-creating a study's parent run.
        self._lock_path = store_lock_path(db) if db is not None else None
        self._parents: dict[str, str | None] = {}  # open study -> parent run id (None: unwritten)
        self._parent_ids: dict[str, str] = {}  # every study's parent run this tracker has used
        self._outage = False  # an outage was reported and has not ended yet
        self._outbox = _Outbox(outbox, store=_digest(tracking_uri), experiment=experiment)
        # MLflow builds the store (creating or upgrading its schema) in MlflowClient() itself
        # (TrackingServiceClient reads .store on creation), else at the first call that needs it;
        # the lock covers both. The store is then cached for this URI in this process.
        with _file_lock(self._lock_path):
            if db is not None:
                _repair_interrupted_upgrade(db)
            with self._store_errors():
                self._client: MlflowClient = MlflowClient(tracking_uri=tracking_uri)
                self.experiment_id = self._experiment_id(experiment)
        adopted = self._outbox.adopt()
        if adopted:
            _logger.info(
                "%d MLflow record(s) left in %s by an earlier run will be written",
                adopted,
                self._outbox.path,
            )

    @property
    def pending(self) -> int:
        """Records kept in the outbox, not yet written to the store."""
        return len(self._outbox.entries)

    def _experiment_id(self, name: str) -> str:
        from mlflow.exceptions import MlflowException

        client = self._client
        found = client.get_experiment_by_name(name)
        if found is None:
            try:
                return client.create_experiment(
                    name,
                    artifact_location=artifact_location(self._uri, name),
                    tags=EXPERIMENT_TAGS,
                )
            except MlflowException as error:  # another process created it first
                found = client.get_experiment_by_name(name)
                if found is None:
                    raise error from None
        if found.lifecycle_stage == "deleted":  # a deleted name cannot be reused otherwise
            client.restore_experiment(found.experiment_id)
        for key, value in EXPERIMENT_TAGS.items():  # an older sweep's; a kind set in the UI stays
            if key not in found.tags:
                client.set_experiment_tag(found.experiment_id, key, value)
        return str(found.experiment_id)

    @contextlib.contextmanager
    def _store_errors(self) -> Iterator[None]:
        """Turn store and network errors into one redacted line (the URL may hold a password)."""
        try:
            with _environ(self._request_policy()):
                yield
        except _store_error_types() as error:
            message = (
                f"MLflow tracking at {self._shown_uri} failed: {redact_error(error, self._uri)}"
            )
            raise TrackingUnavailable(message, transient=not _refused(error)) from None

    def _request_policy(self) -> dict[str, str]:
        """Bounded retries against a server: the outbox retries later, training need not wait.

        MLflow's default retries a dead server for about four minutes per request. Values the
        user set in the environment are kept.
        """
        if not self._http:
            return {}
        return {k: v for k, v in _SERVER_REQUEST_POLICY.items() if k not in os.environ}

    def start_study(
        self, sweep: str, study_name: str, optimizer: str, spec: Mapping[str, Any]
    ) -> None:
        """Open the parent run of ``study_name``; its trials are logged as children.

        A resumed sweep reopens the study's existing parent run (latest spec in the
        ``looksam.spec`` tag; params, which MLflow never lets change, keep their first values
        and gain any new keys), so every trial of a study stays under one parent — also when
        several workers start the study at once.
        """
        if study_name in self._parents:
            raise ValueError(f"study {study_name!r} is already open")
        clean_spec = _redacted(spec)
        spec_json = json.dumps(clean_spec, sort_keys=True, default=str)
        if len(spec_json) > _MAX_TAG_VALUE:
            spec_json = spec_json[: _MAX_TAG_VALUE - 15] + " …(truncated)"
        tags = {
            "mlflow.user": _user(),
            "looksam.sweep": sweep,
            "looksam.study": study_name,
            "looksam.optimizer": optimizer,
            "looksam.role": "study",
            "looksam.spec": spec_json,
        }
        self._parents[study_name] = None
        self._submit(
            {
                "op": "start",
                "study": study_name,
                "tags": _clean_tags(tags),
                "params": _clean_params(dict(_flatten(clean_spec))),
                "spec_json": spec_json,
            }
        )

    def log_trial(self, record: TrialRecord) -> str | None:
        """One child run: create (with its tags), one batch of params and metrics, terminate.

        Returns:
            The child run's id, or None when the store is unavailable and the trial waits in
            the outbox (it keeps its own timestamps when it is written later).
        """
        if record.study_name not in self._parents:
            raise ValueError(f"study {record.study_name!r} was not started (call start_study)")
        rows = _trial_metrics(record)
        # Back-date the start so the last training second lands on "now": the run then spans
        # its training time and no timestamp lies in the future.
        end_ms = int(time.time() * 1000)
        start_ms = end_ms - max((offset for *_, offset in rows), default=0)
        record_id = uuid.uuid4().hex  # finds a run cut short by an outage, so none is doubled
        return self._submit(
            {
                "op": "trial",
                "study": record.study_name,
                "parent": self._parents[record.study_name],
                "record_id": record_id,
                "run_name": f"{record.optimizer}-t{record.trial_number}",
                "start_ms": start_ms,
                "end_ms": end_ms,
                "status": _run_status(record),
                "tags": _clean_tags({**_trial_tags(record), _RECORD_TAG: record_id}),
                "params": _clean_params(_trial_params(record)),
                "metrics": [
                    [key, float(value), int(step), start_ms + offset]  # JSON-ready (numpy too)
                    for key, value, step, offset in rows
                ],
            }
        )

    def end_study(self, study_name: str, summary: Mapping[str, float]) -> None:
        """Log ``summary`` as metrics of the study's parent run and mark it FINISHED."""
        if study_name not in self._parents:
            raise ValueError(f"study {study_name!r} is not open")
        parent = self._parents.pop(study_name)
        now_ms = int(time.time() * 1000)
        metrics = [[_key(k), float(v), 0, now_ms] for k, v in summary.items() if math.isfinite(v)]
        self._submit(
            {
                "op": "end",
                "study": study_name,
                "parent": parent,
                "metrics": metrics,
                "end_ms": now_ms,
            }
        )

    def close(self) -> None:
        """Mark every parent run still open KILLED (its study never reached end_study), and
        write what the outbox holds; what the store still cannot take stays in the outbox file."""
        now_ms = int(time.time() * 1000)
        while self._parents:
            study_name, parent = self._parents.popitem()
            self._submit({"op": "kill", "study": study_name, "parent": parent, "end_ms": now_ms})
        if self.backfill():
            where = self._outbox.path
            _logger.warning(
                "%d MLflow record(s) not written to %s: %s",
                self.pending,
                self._shown_uri,
                f"kept in {where}; the next run of this sweep writes them"
                if where is not None
                else "no outbox file was given, so they are lost",
            )

    def backfill(self) -> int:
        """Write every record the outbox holds, oldest first (this run's, or those a run that
        is gone left in the outbox file). Returns how many are still pending (0: all written)."""
        self._flush()
        return self.pending

    def log_artifacts(self, files: Sequence[Path]) -> None:
        """Attach ``files`` (the report, the spec) to every study's parent run this tracker
        wrote, at the root of its artifacts: one ``log_artifact`` per file and parent.

        Runs after the sweep (finished parents take artifacts too). Text holding a URL password
        is uploaded as a redacted copy. A store that is down or refuses only costs a warning: the
        files stay on disk, and the next run of the sweep attaches them again (same names).
        """
        parents = sorted(set(self._parent_ids.values()))
        files = [f for f in files if f.is_file()]
        if not parents or not files:
            return
        shown = ", ".join(f.name for f in files)
        if self._outage:  # still down at close: do not wait for its retries again
            _logger.warning(
                "%s not attached to the MLflow runs: %s is unavailable", shown, self._shown_uri
            )
            return
        with tempfile.TemporaryDirectory(prefix="looksam-artifacts-") as staging:
            staged = [_redacted_copy(f, Path(staging) / str(i)) for i, f in enumerate(files)]
            try:
                with self._store_errors():
                    for run_id in parents:
                        for path in staged:
                            self._client.log_artifact(run_id, str(path))
            except TrackingUnavailable as error:
                _logger.warning("%s not attached to the MLflow runs: %s", shown, error)

    # ------------------------------------------------------------------ writing and the outbox

    def _submit(self, entry: dict[str, Any]) -> str | None:
        """Write ``entry`` now if the store takes it, after anything older; else keep it."""
        if not self._flush():
            self._outbox.add(entry)
            return None
        try:
            with self._store_errors():
                return self._replay(entry, retry=False)
        except TrackingUnavailable as error:
            if not error.transient:
                raise
            self._outbox.add(entry)
            self._report_outage(error)
            return None

    def _flush(self) -> bool:
        """Write the outbox oldest first; False while the store is still unavailable."""
        if not self._outbox.entries:
            return True
        if self._http:
            try:  # one quick request, so a dead server costs a trial no retries
                _probe_http(self._uri)
            except TrackingUnavailable as error:
                self._report_outage(error)
                return False
        written: list[dict[str, Any]] = []
        try:
            for entry in list(self._outbox.entries):
                try:
                    with self._store_errors():
                        self._replay(entry, retry=True)
                except TrackingUnavailable as error:
                    if error.transient:
                        self._report_outage(error)
                        return False
                    _logger.warning("dropped an MLflow record the store refused: %s", error)
                except (KeyError, TypeError, IndexError) as error:  # a file from another version
                    _logger.warning("dropped a malformed MLflow outbox record (%r)", error)
                written.append(entry)
        finally:
            self._outbox.remove(written)
        if self._outage:
            _logger.info(
                "MLflow tracking at %s is back: %d record(s) written",
                self._shown_uri,
                len(written),
            )
            self._outage = False
        return True

    def _report_outage(self, error: TrackingUnavailable) -> None:
        """One warning per outage (not per trial); it ends when the outbox is written."""
        if self._outage:
            return
        self._outage = True
        where = self._outbox.path or "memory"
        _logger.warning(
            "%s; training goes on, its records are kept in %s and written when the store is back",
            error,
            where,
        )

    def _replay(self, entry: Mapping[str, Any], *, retry: bool) -> str | None:
        """Write one outbox entry; ``retry``: it may have been written in part before."""
        op, study = entry["op"], entry["study"]
        if op == "start":
            return self._open_parent(entry)
        parent = entry.get("parent") or self._resolve_parent(study)
        if op == "trial":
            return self._write_trial(entry, parent, retry=retry)
        if op == "end":
            self._write(parent, metrics=[tuple(m) for m in entry["metrics"]])
            self._terminate(parent, "FINISHED", end_ms=entry["end_ms"])
        elif op == "kill":
            self._terminate(parent, "KILLED", end_ms=entry["end_ms"])
        else:
            raise TrackingUnavailable(f"unknown outbox entry {op!r}", transient=False)
        return parent

    def _resolve_parent(self, study_name: str) -> str:
        """The parent run of a study whose start was written after its trial was kept."""
        known = self._parent_ids.get(study_name) or self._parents.get(study_name)
        if known:
            return known
        found = self._parent_run(study_name)
        if found is None:
            raise TrackingUnavailable(
                f"no parent run of study {study_name!r} in {self._shown_uri}", transient=False
            )
        self._parent_ids[study_name] = found.info.run_id
        return str(found.info.run_id)

    def _open_parent(self, entry: Mapping[str, Any]) -> str:
        """Find or create the study's parent run: one per study, whoever starts it first."""
        study_name = entry["study"]
        with _file_lock(self._lock_path):  # SQLite: no other process between search and create
            existing = self._parent_run(study_name)
            if existing is None:
                run = self._client.create_run(
                    self.experiment_id, tags=dict(entry["tags"]), run_name=study_name
                )
                run_id = str(run.info.run_id)
                self._write(run_id, params=entry["params"])
                run_id = self._settle_parent(study_name, run_id)
            else:
                run_id = str(existing.info.run_id)
                known = existing.data.params
                fresh = {k: v for k, v in entry["params"].items() if k not in known}
                self._write(run_id, params=fresh, tags={"looksam.spec": entry["spec_json"]})
                self._client.update_run(run_id, status="RUNNING")
        self._parent_ids[study_name] = run_id
        if study_name in self._parents and self._parents[study_name] is None:
            self._parents[study_name] = run_id
        return run_id

    def _settle_parent(self, study_name: str, ours: str) -> str:
        """Keep one parent when another worker created one at the same time (servers have no
        lock to share): all keep the earliest, and a later one deletes its own."""
        first = self._parent_run(study_name)
        if first is None or first.info.run_id == ours:
            return ours
        self._client.delete_run(ours)
        return str(first.info.run_id)

    def _parent_run(self, study_name: str) -> Run | None:
        """The study's parent run (the earliest, should there be several), if any."""
        if "'" in study_name:  # MLflow's filter syntax cannot quote it: start a new parent
            return None
        found = self._client.search_runs(
            [self.experiment_id],
            filter_string=(
                f"tags.`looksam.study` = '{study_name}' AND tags.`looksam.role` = 'study'"
            ),
            max_results=100,
            order_by=["attributes.start_time ASC"],
        )
        return min(found, key=lambda r: (r.info.start_time, r.info.run_id)) if found else None

    def _write_trial(self, entry: Mapping[str, Any], parent: str, *, retry: bool) -> str:
        """Create, fill and terminate one child run; a retry reuses or replaces an earlier try."""
        record_id = entry["record_id"]
        if retry:
            for run in self._client.search_runs(
                [self.experiment_id],
                filter_string=f"tags.`{_RECORD_TAG}` = '{record_id}'",
                max_results=10,
            ):
                if run.info.status in _TERMINATED:
                    return str(run.info.run_id)  # written before the outage was noticed
                self._client.delete_run(run.info.run_id)  # cut short: write it whole again
        run = self._client.create_run(
            self.experiment_id,
            start_time=entry["start_ms"],
            tags={**entry["tags"], "mlflow.parentRunId": parent},
            run_name=entry["run_name"],
        )
        run_id = str(run.info.run_id)
        self._write(run_id, params=entry["params"], metrics=[tuple(m) for m in entry["metrics"]])
        self._terminate(run_id, entry["status"], end_ms=entry["end_ms"])
        return run_id

    def _terminate(self, run_id: str, status: str, end_ms: int | None = None) -> None:
        """set_terminated without MLflow's "View run at <url>" stdout lines.

        Against a server those lines cost one more request (a get_run), break the sweep's
        progress display, and print the tracking URL as given, password included.
        """
        with _environ({"MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true"}):
            self._client.set_terminated(run_id, status, end_time=end_ms)

    def _write(
        self,
        run_id: str,
        *,
        params: Mapping[str, Any] | None = None,
        metrics: Sequence[tuple[str, float, int, int]] = (),
        tags: Mapping[str, str] | None = None,
    ) -> None:
        """All of one run's params and metrics in as few log_batch calls as MLflow allows (one)."""
        from mlflow.entities import Metric, Param, RunTag

        param_list = [Param(_key(k), _param_value(k, v)) for k, v in (params or {}).items()]
        metric_list = [Metric(key, value, ts, step) for key, value, step, ts in metrics]
        tag_list = [RunTag(k, v) for k, v in _clean_tags(tags or {}).items()]
        for chunk_params, chunk_metrics in _batches(param_list, metric_list):
            self._client.log_batch(
                run_id, metrics=chunk_metrics, params=chunk_params, tags=tag_list
            )
            tag_list = []
        if tag_list:  # nothing else to write
            self._client.log_batch(run_id, tags=tag_list)


class _Outbox:
    """Records the store could not take yet, oldest first: in memory, and in a file if given.

    The file (JSON lines) may be shared by several workers of a sweep on one host. Each entry
    names its owner (``host:pid``), its store (a digest of the URI) and its experiment; a tracker
    takes over only entries of its own store and experiment whose owner process is gone, and
    every change is made under a lock file beside it.
    """

    def __init__(self, path: Path | None, *, store: str, experiment: str) -> None:
        self.path = path
        self.entries: list[dict[str, Any]] = []
        self._store = store
        self._experiment = experiment
        self._owner = f"{socket.gethostname()}:{os.getpid()}"
        self._file_failed = False

    def add(self, entry: Mapping[str, Any]) -> None:
        """Keep ``entry``, and append it to the file so a process that dies loses nothing."""
        kept = {
            **entry,
            "id": uuid.uuid4().hex,
            "owner": self._owner,
            "store": self._store,
            "experiment": self._experiment,
        }
        self.entries.append(kept)
        if self.path is None:
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self._locked(), self.path.open("a", encoding="utf-8") as out:
                out.write(json.dumps(kept) + "\n")
        except OSError as error:
            self._file_trouble(error)

    def remove(self, done: Sequence[Mapping[str, Any]]) -> None:
        """Forget entries that were written (in memory and in the file)."""
        if not done:
            return
        ids = {entry["id"] for entry in done}
        self.entries = [e for e in self.entries if e["id"] not in ids]
        if self.path is None or not self.path.exists():
            return
        try:
            with self._locked():
                self._rewrite([e for e in self._read() if e.get("id") not in ids])
        except OSError as error:
            self._file_trouble(error)

    def adopt(self) -> int:
        """Take over this store's entries left by processes that are gone; how many."""
        if self.path is None or not self.path.exists():
            return 0
        try:
            with self._locked():
                found = self._read()
                mine = [
                    e
                    for e in found
                    if e.get("store") == self._store
                    and e.get("experiment") == self._experiment
                    and not _owner_alive(str(e.get("owner", "")))
                ]
                for entry in mine:
                    entry["owner"] = self._owner
                if mine:
                    self._rewrite(found)
        except OSError as error:
            self._file_trouble(error)
            return 0
        self.entries.extend(mine)
        return len(mine)

    def _locked(self) -> contextlib.AbstractContextManager[None]:
        assert self.path is not None
        return _file_lock(self.path.with_name(self.path.name + ".lock"))

    def _read(self) -> list[dict[str, Any]]:
        assert self.path is not None
        entries = []
        for line in self.path.read_text(encoding="utf-8").splitlines():
            try:
                entry = json.loads(line)
            except ValueError:  # the half-written last line of a process killed mid-append
                continue
            if isinstance(entry, dict) and "id" in entry and "op" in entry:
                entries.append(entry)
        return entries

    def _rewrite(self, entries: Sequence[Mapping[str, Any]]) -> None:
        assert self.path is not None
        if not entries:
            self.path.unlink(missing_ok=True)
            return
        partial = self.path.with_name(self.path.name + f".{os.getpid()}.tmp")
        partial.write_text("".join(json.dumps(e) + "\n" for e in entries), encoding="utf-8")
        os.replace(partial, self.path)

    def _file_trouble(self, error: OSError) -> None:
        if not self._file_failed:
            self._file_failed = True
            _logger.warning(
                "cannot write the MLflow outbox %s (%s): its records are kept in memory only",
                self.path,
                error.strerror or error,
            )


#: Where MLflow can store runs: a folder, SQLite, a database server, a tracking server.
TRACKING_SCHEMES = (
    "file",
    "sqlite",
    "postgresql",
    "mysql",
    "mssql",
    "http",
    "https",
    "databricks",
)


def check_tracking_uri(uri: str) -> None:
    """Raise SpecError (one line) unless runs can be stored at ``uri``: a scheme MLflow stores
    runs at; a tracking server or database that answers (the probes :class:`MlflowTracker` runs,
    with their short timeout); a SQLite file that is intact. Creates nothing."""
    from looksam.sweeps._storage import check_sqlite_intact
    from looksam.sweeps.spec import SpecError

    scheme = uri.split("://", 1)[0].split("+", 1)[0].lower() if "://" in uri else "file"
    if scheme not in TRACKING_SCHEMES:
        raise SpecError(
            f"tracking URI {redact_url(uri)}: MLflow stores runs in sqlite:///PATH, a database "
            "(postgresql://, mysql://), a tracking server (http://, https://) or a folder "
            f"(file:///PATH), not {scheme}://; or pass --no-mlflow"
        )
    db = sqlite_db_path(uri)
    try:
        if scheme in ("http", "https"):
            _probe_http(uri)
        elif db is None and uri.startswith(_SERVER_DATABASES):
            _probe_database(uri)
    except TrackingUnavailable as error:
        raise SpecError(f"{error}: start it, or pass --tracking-uri or --no-mlflow") from None
    if db is not None and db.is_file():
        check_sqlite_intact(db, "MLflow store")


def tracker_for(spec: SweepSpec) -> Tracker:
    """The sweep's tracker: MLflow at its tracking URI (its outbox beside the Optuna storage),
    or nothing when tracking is off."""
    if spec.tracking_uri is None:
        return NullTracker()
    return MlflowTracker(
        spec.tracking_uri, experiment=spec.name, outbox=outbox_path(spec.storage, spec.name)
    )


def artifact_location(tracking_uri: str, experiment: str) -> str | None:
    """Where a new experiment keeps its runs' artifacts (MLflow's own default is ``./mlruns``
    in whatever the working directory is).

    A SQLite store: ``mlartifacts/EXPERIMENT`` beside the database (``runs/mlflow.db`` ->
    ``runs/mlartifacts/quick``); a database server: the same under ``runs/`` of the working
    directory; a tracking server (http/https) decides itself (None).
    """
    if tracking_uri.startswith(("http://", "https://")):
        return None
    db = sqlite_db_path(tracking_uri)
    if db is None and not tracking_uri.startswith(_SERVER_DATABASES):
        return None  # in-memory SQLite or a store MLflow knows better
    folder = db.parent if db is not None else Path("runs")
    safe_name = re.sub(r"[^\w.-]", "_", experiment)
    return (folder.resolve() / ARTIFACTS_DIR / safe_name).as_uri()


def experiment_url(ui_url: str, experiment_id: str) -> str:
    """The MLflow UI page of an experiment, opened on its runs.

    ``workflowType=machine_learning``: MLflow 3 UIs with a global "GenAI / Model training"
    switch (3.17's has it) choose the view by it, not by the experiment's kind tag, and open
    an experiment on its GenAI overview without it; UIs without the switch ignore it.
    """
    return f"{ui_url.rstrip('/')}/#/experiments/{experiment_id}?workflowType=machine_learning"


def list_experiments(tracking_uri: str) -> dict[str, str]:
    """Name -> id of every active experiment in a database tracking store, oldest first.

    Reads MLflow's ``experiments`` table with a plain query (no mlflow import, no schema
    upgrade, so it can run beside a starting ``mlflow ui``); a store that cannot be read
    (missing, not MLflow's, unreachable) lists nothing.
    """
    import sqlalchemy

    db = sqlite_db_path(tracking_uri)
    if db is not None and not db.is_file():
        return {}
    args = {} if db is not None else {"connect_timeout": PROBE_TIMEOUT_SECONDS}
    query = sqlalchemy.text(
        "SELECT name, experiment_id FROM experiments WHERE lifecycle_stage = 'active' "
        "ORDER BY experiment_id"
    )
    try:
        engine = sqlalchemy.create_engine(tracking_uri, connect_args=args)
        try:
            with engine.connect() as connection:
                rows = connection.execute(query).all()
        finally:
            engine.dispose()
    except (sqlalchemy.exc.SQLAlchemyError, ImportError, OSError):
        return {}
    return {str(name): str(experiment_id) for name, experiment_id in rows}


def _redacted_copy(path: Path, folder: Path) -> Path:
    """``path`` itself, or a copy in ``folder`` (same name) with URL passwords masked."""
    try:
        text = path.read_text(encoding="utf-8")
    except (UnicodeDecodeError, OSError):
        return path  # not text: nothing a URL password could hide in
    clean = redact_text(text)
    if clean == text:
        return path
    folder.mkdir(parents=True, exist_ok=True)
    copy = folder / path.name
    copy.write_text(clean, encoding="utf-8")
    return copy


def outbox_path(storage: str, sweep: str) -> Path:
    """Where a sweep keeps the MLflow records an outage held back: beside its Optuna storage.

    ``sqlite:///runs/optuna.db`` or ``journal:runs/journal.log`` -> ``runs/SWEEP.mlflow-outbox
    .jsonl``; a database server's storage -> ``runs/`` in the working directory.
    """
    if storage.startswith("journal:"):
        folder = Path(storage.removeprefix("journal:")).parent
    else:
        db = sqlite_db_path(storage)
        folder = db.parent if db is not None else Path("runs")
    safe_name = re.sub(r"[^\w.-]", "_", sweep)
    return folder / f"{safe_name}.mlflow-outbox.jsonl"


def store_lock_path(db: Path) -> Path:
    """The lock file beside a SQLite tracking store (``runs/mlflow.db`` -> ``…db.lock``)."""
    return db.with_name(db.name + ".lock")


@contextlib.contextmanager
def _file_lock(path: Path | None) -> Iterator[None]:
    """Hold an exclusive OS lock on ``path`` (created if needed) across processes.

    The lock goes with the process: one that dies holding it releases it. Without fcntl
    (Windows), or where the lock file cannot be created (a read-only folder, whose store
    cannot be upgraded or written either), nothing is locked.
    """
    if path is None or fcntl is None:
        yield
        return
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError:
        yield
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def _repair_interrupted_upgrade(db: Path) -> None:
    """Drop the ``_alembic_tmp_*`` tables an interrupted MLflow schema upgrade left, if safe.

    Alembic changes a SQLite table T by building ``_alembic_tmp_T``, copying T into it,
    dropping T and renaming the copy. A process that dies (or loses a race with another) before
    the drop leaves the copy behind, and every later upgrade stops at "table _alembic_tmp_T
    already exists". While T exists the copy is a half-built duplicate: dropping it lets the
    upgrade run again. Once T is gone the copy holds the data, and that is left to a person.

    Raises:
        TrackingUnavailable: such a copy outlived its table, or the file is not a database.
    """
    import sqlite3

    if not db.is_file():
        return
    try:
        connection = sqlite3.connect(db, timeout=60)
        try:
            tables = {
                row[0]
                for row in connection.execute("SELECT name FROM sqlite_master WHERE type='table'")
            }
            leftovers = sorted(t for t in tables if t.startswith(_ALEMBIC_TMP))
            for table in leftovers:
                original = table.removeprefix(_ALEMBIC_TMP)
                if original not in tables:
                    raise TrackingUnavailable(
                        f"MLflow store {db} was left half-upgraded: table {table} holds the data "
                        f"of {original}, which is gone; restore a backup of {db} (or rename the "
                        f"table to {original}) before tracking into it",
                        transient=False,
                    )
            for table in leftovers:
                quoted = table.replace('"', '""')
                connection.execute(f'DROP TABLE "{quoted}"')
            connection.commit()
        finally:
            connection.close()
    except sqlite3.Error as error:
        raise TrackingUnavailable(
            f"MLflow store {db} cannot be opened: {redact_error(error)}", transient=False
        ) from None
    if leftovers:
        _logger.warning(
            "dropped %s, left in %s by an interrupted MLflow schema upgrade",
            ", ".join(leftovers),
            db,
        )


@contextlib.contextmanager
def _environ(values: Mapping[str, str]) -> Iterator[None]:
    """Set environment variables for the duration of one store call, then restore them."""
    before = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in before.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _owner_alive(owner: str) -> bool:
    """Whether the process that kept an outbox entry may still write it itself.

    On this host: iff its process exists. Another host's process cannot be judged from here,
    so its entries are left to it.
    """
    host, _, pid = owner.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return True
    try:
        os.kill(int(pid), 0)  # signal 0: an existence check only
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def _digest(uri: str) -> str:
    """Names a store in the outbox file without writing its URL (which may hold a password)."""
    return hashlib.sha256(uri.encode()).hexdigest()[:16]


def _refused(error: BaseException) -> bool:
    """A write the store understood and refused: retrying the same record cannot succeed."""
    return getattr(error, "error_code", None) in _REFUSALS


def _clean_params(params: Mapping[str, Any]) -> dict[str, str]:
    """Params as MLflow will store them (valid keys, secrets masked, length capped)."""
    return {_key(k): _param_value(k, v) for k, v in params.items()}


def _store_error_types() -> tuple[type[BaseException], ...]:
    from mlflow.exceptions import MlflowException
    from sqlalchemy.exc import SQLAlchemyError  # MLflow's database stores

    return (MlflowException, SQLAlchemyError, OSError)


def _probe_http(uri: str) -> None:
    """One cheap request with a short timeout and no retries, so a wrong URL fails in seconds."""
    from mlflow.utils.credentials import get_default_host_creds
    from mlflow.utils.rest_utils import http_request_safe

    try:
        http_request_safe(
            get_default_host_creds(uri),
            "/api/2.0/mlflow/experiments/search",
            "POST",
            max_retries=0,
            timeout=PROBE_TIMEOUT_SECONDS,
            json={"max_results": 1},
        )
    except _store_error_types() as error:
        raise TrackingUnavailable(
            f"MLflow tracking server {redact_url(uri)} is not reachable: "
            f"{redact_error(error, uri)}"
        ) from None


def _probe_database(uri: str) -> None:
    """Connect once with a short timeout: MLflow itself retries a dead database for ~100 s."""
    import sqlalchemy

    timeout = {"connect_timeout": PROBE_TIMEOUT_SECONDS}
    failures: tuple[type[BaseException], ...] = (*_store_error_types(), ImportError)
    try:
        engine = sqlalchemy.create_engine(uri, connect_args=timeout)
        try:
            with engine.connect():
                pass
        finally:
            engine.dispose()
    except failures as error:  # ImportError: the database driver is not installed
        raise TrackingUnavailable(
            f"MLflow tracking database {redact_url(uri)} is not reachable: "
            f"{redact_error(error, uri)}"
        ) from None


def _batches(
    params: list[Param], metrics: list[Metric]
) -> Iterator[tuple[list[Param], list[Metric]]]:
    """Split into log_batch-sized chunks: ≤100 params, ≤1000 metrics, ≤1000 entities."""
    while params or metrics:
        chunk_params, params = params[:_MAX_PARAMS_OR_TAGS], params[_MAX_PARAMS_OR_TAGS:]
        room = min(_MAX_METRICS, _MAX_ENTITIES - len(chunk_params))
        chunk_metrics, metrics = metrics[:room], metrics[room:]
        yield chunk_params, chunk_metrics


def _key(name: str) -> str:
    """An MLflow-valid param/metric/tag key (letters, digits, ``_ - . /`` and space)."""
    return re.sub(r"[^\w.\- /]", "_", name).strip("/")[:_MAX_KEY] or "_"


def _param_value(key: str, value: Any) -> str:
    text = MASK if _SECRET_KEY.search(key) else redact_text(str(value))
    return text[:_MAX_PARAM_VALUE]


def _clean_tags(tags: Mapping[str, str]) -> dict[str, str]:
    return {
        _key(k): (MASK if _SECRET_KEY.search(k) else redact_text(v))[:_MAX_TAG_VALUE]
        for k, v in tags.items()
    }


def _redacted(value: Any, key: str = "") -> Any:
    """A copy of a nested spec with every URL password and every secret-named value masked."""
    if isinstance(value, Mapping):
        return {str(k): _redacted(v, str(k)) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_redacted(v, key) for v in value]
    if _SECRET_KEY.search(key) and value is not None:
        return MASK
    return redact_text(value) if isinstance(value, str) else value


def _flatten(spec: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    """``{"a": {"b": 1}}`` -> ``("a.b", 1)``; lists become their JSON text."""
    for key, value in spec.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            yield from _flatten(value, f"{name}.")
        elif isinstance(value, list | tuple):
            yield name, json.dumps(value, default=str)
        else:
            yield name, value


def _user() -> str:
    """Who ran the sweep (the UI's User column); MLflow's fluent API sets the same tag."""
    try:
        return getpass.getuser()
    except (OSError, KeyError):  # no login name in some containers
        return "unknown"


def _run_status(record: TrialRecord) -> str:
    if record.state != "FAIL":
        return "FINISHED"
    return "KILLED" if record.failure_reason == "interrupted" else "FAILED"


def _resolved_base(result: RunResult) -> str:
    """The base optimizer a run really used (the registry's default when none was given)."""
    config = result.config
    if config.base is not None:
        return config.base
    from looksam.optim import resolve_base

    try:
        return resolve_base(config.optimizer, None) or "none"
    except ValueError:  # an optimizer this process does not know
        return "unknown"


def _trial_params(record: TrialRecord) -> dict[str, Any]:
    params: dict[str, Any] = {"optimizer": record.optimizer}
    if record.results:
        first = record.results[0]
        params["workload"] = first.config.workload
        params["base"] = _resolved_base(first)
        params["seeds"] = ",".join(str(r.config.seed) for r in record.results)
    params.update(record.params)  # the suggested values are the truth where names overlap
    return params


def _trial_tags(record: TrialRecord) -> dict[str, str]:
    """A child run's tags; its parent's id is added when the run is written."""
    tags = {
        "mlflow.user": _user(),
        "looksam.role": "trial",
        "looksam.study": record.study_name,
        "looksam.optimizer": record.optimizer,
        "looksam.trial_number": str(record.trial_number),
        "looksam.state": record.state,
        "looksam.failure_reason": record.failure_reason or "none",
    }
    if record.results:
        env = record.results[0].environment
        tags.update(
            {
                "looksam.device": env.device,
                "looksam.device_name": env.device_name,
                "looksam.torch_version": env.torch_version,
                "looksam.timm_version": env.timm_version or "none",
                "looksam.git_commit": env.git_commit or "unknown",
                "looksam.seed_status": ",".join(r.status for r in record.results),
            }
        )
        messages = "; ".join(r.message for r in record.results if r.message)
        if messages:
            tags["looksam.message"] = messages
    tags.update(record.tags)
    return tags


def _mean(values: Sequence[float | None]) -> float | None:
    finite = [v for v in values if v is not None and math.isfinite(v)]
    return statistics.fmean(finite) if finite else None


def _trial_metrics(record: TrialRecord) -> list[tuple[str, float, int, int]]:
    """(key, value, step, ms of training) rows: per-epoch curves (mean and per seed), then finals.

    Curves are the mean over the seeds that reached that epoch (a diverged seed stops early);
    ``best_accuracy`` is the best point of the mean curve, so it is a value the curve shows.
    """
    rows: list[tuple[str, float, int, int]] = []
    results = record.results
    by_epoch: dict[int, list[EpochRecord]] = {}
    for result in results:
        for h in result.history:
            by_epoch.setdefault(h.epoch, []).append(h)
    best: float | None = None
    for epoch, at in sorted(by_epoch.items()):
        stamp = round(1000 * (_mean([h.train_seconds for h in at]) or 0.0))
        for key, value in (
            ("test_accuracy", _mean([h.test_accuracy for h in at])),
            ("train_loss", _mean([h.train_loss for h in at])),
        ):
            if value is not None:
                rows.append((key, value, epoch, stamp))
        accuracy = _mean([h.test_accuracy for h in at])
        if accuracy is not None and (best is None or accuracy > best):
            best = accuracy
    for result in results if len(results) > 1 else ():  # one seed: its curve is the mean
        for h in result.history:
            if h.test_accuracy is not None:
                stamp = round(1000 * h.train_seconds)
                key = f"seed{result.config.seed}/test_accuracy"
                rows.append((key, h.test_accuracy, h.epoch, stamp))
    if best is None:
        best = _mean([r.best_accuracy for r in results])
    reached = [r.time_to_target_seconds for r in results if r.time_to_target_seconds is not None]
    finals = {
        "final_accuracy": _mean([r.final_accuracy for r in results]),
        "best_accuracy": best,
        "train_seconds": _mean([r.train_seconds for r in results]),
        "samples_per_second": _mean([r.samples_per_second for r in results]),
        "forward_backward_passes": _mean([float(r.forward_backward_passes) for r in results]),
        "passes_per_step": _mean([r.passes_per_step for r in results]),
        "second_pass_fraction": _mean([r.second_pass_fraction for r in results]),
        "time_to_target_seconds": _mean(list(reached)),
        "seeds_reached_target": float(len(reached)) if results else None,
    }
    for i, value in enumerate(record.objective_values or ()):
        finals[f"objective_{i}"] = value if math.isfinite(value) else None
    finals.update({k: v if math.isfinite(v) else None for k, v in record.metrics.items()})
    end = max((stamp for *_, stamp in rows), default=0)
    rows.extend((key, v, 0, end) for key, v in finals.items() if v is not None)
    return rows
