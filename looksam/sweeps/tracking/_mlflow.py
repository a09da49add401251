"""Record sweeps in MLflow: one experiment per sweep, a parent run per study, a child per trial.

This is the only module of the package that imports mlflow, and it does so lazily, so
``import looksam`` and ``--no-mlflow`` sweeps never pay for it. Runs are written through
:class:`mlflow.MlflowClient` with explicit run ids (no fluent global state, so several studies
can be open in one process), and each run's params, tags and metrics go in one ``log_batch``
request: against a tracking server every request is a network round trip, and a per-value
``log_metric`` loop would cost more than a small trial.

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
import hashlib
import json
import logging
import math
import os
import re
import tempfile
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from looksam.sweeps.redact import redact_error, redact_text, redact_url
from looksam.sweeps.schema import TAG
from looksam.sweeps.tracking._outbox import _file_lock, _Outbox, outbox_path, store_lock_path
from looksam.sweeps.tracking._payload import (
    _MAX_TAG_VALUE,
    _batches,
    _clean_params,
    _clean_tags,
    _flatten,
    _key,
    _param_value,
    _redacted,
    _run_status,
    _trial_metrics,
    _trial_params,
    _trial_tags,
    _user,
)
from looksam.sweeps.tracking.protocol import NullTracker, Tracker, TrackingUnavailable, TrialRecord
from looksam.sweeps.tracking.store import (
    _SERVER_DATABASES,
    PROBE_TIMEOUT_SECONDS,
    _database_error_types,
    _probe_database,
    _repair_interrupted_upgrade,
    sqlite_db_path,
)

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities import Run

    from looksam.sweeps.spec import SweepSpec

_logger = logging.getLogger(__name__)

DEFAULT_TRACKING_URI = "sqlite:///runs/mlflow.db"
"""Relative to the working directory; MLflow 3's own default kind (its plain file store errors)."""

#: Against a tracking server, a sweep's store calls retry twice within 30 s each (MLflow's
#: default is minutes per request), then the record waits in the outbox.
_SERVER_REQUEST_POLICY = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "30",
}
#: MLflow error codes for a write the store understood and will never accept.
_REFUSALS = ("INVALID_PARAMETER_VALUE", "RESOURCE_ALREADY_EXISTS", "BAD_REQUEST")
_TERMINATED = ("FINISHED", "FAILED", "KILLED")
#: Tags of a sweep's experiment. MLflow 3's UI keeps an experiment's kind in
#: ``mlflow.experimentKind`` (its experiment-type selector writes this tag); a UI that chooses
#: the view by it opens ``custom_model_development`` on its runs and metric charts, not on the
#: GenAI overview of traces. The UI of MLflow 3.17 chooses by its global "GenAI / Model
#: training" switch instead (the tag is not read for that), which experiment_url's
#: ``?workflowType=machine_learning`` sets.
EXPERIMENT_TAGS = {"mlflow.experimentKind": "custom_model_development"}
#: Folder, beside a SQLite tracking store, under which each sweep's artifacts are kept.
ARTIFACTS_DIR = "mlartifacts"


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
            TAG.user: _user(),
            TAG.sweep: sweep,
            TAG.study: study_name,
            TAG.optimizer: optimizer,
            TAG.role: "study",
            TAG.spec: spec_json,
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
                "tags": _clean_tags({**_trial_tags(record), TAG.record_id: record_id}),
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
                self._write(run_id, params=fresh, tags={TAG.spec: entry["spec_json"]})
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
            filter_string=(f"tags.`{TAG.study}` = '{study_name}' AND tags.`{TAG.role}` = 'study'"),
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
                filter_string=f"tags.`{TAG.record_id}` = '{record_id}'",
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


def _digest(uri: str) -> str:
    """Names a store in the outbox file without writing its URL (which may hold a password)."""
    return hashlib.sha256(uri.encode()).hexdigest()[:16]


def _refused(error: BaseException) -> bool:
    """A write the store understood and refused: retrying the same record cannot succeed."""
    return getattr(error, "error_code", None) in _REFUSALS


def _store_error_types() -> tuple[type[BaseException], ...]:
    """What MLflow raises when a store cannot be reached, or refused a write."""
    from mlflow.exceptions import MlflowException

    return (MlflowException, *_database_error_types())


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
