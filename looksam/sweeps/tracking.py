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
"""

from __future__ import annotations

import contextlib
import getpass
import json
import logging
import math
import os
import re
import statistics
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from looksam.bench.runner import EpochRecord, RunResult
from looksam.sweeps.redact import MASK, redact_text, redact_url

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities import Metric, Param, Run

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


class TrackingUnavailable(ValueError):  # noqa: N818 - the name the sweep command catches
    """The tracking store cannot be reached, or refused a write (message has no password)."""


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

    Args:
        tracking_uri: ``sqlite:///…`` (the parent folder is created), ``http(s)://…`` (probed
            once, quickly: :class:`TrackingUnavailable` if it does not answer), or any other
            backend MLflow accepts (``postgresql://…``).
        experiment: the experiment's name (one per sweep), created if missing.
    """

    def __init__(self, tracking_uri: str, experiment: str) -> None:
        from mlflow import MlflowClient

        self._shown_uri = redact_url(tracking_uri)
        # MLflow announces "Creating initial MLflow database tables..." at INFO on every new
        # database; the sweep prints its own progress (a level set by the user is kept).
        schema_log = logging.getLogger("mlflow.store.db.utils")
        if schema_log.level == logging.NOTSET:
            schema_log.setLevel(logging.WARNING)
        db = sqlite_db_path(tracking_uri)
        if db is not None:
            db.parent.mkdir(parents=True, exist_ok=True)
        elif tracking_uri.startswith(("http://", "https://")):
            _probe_http(tracking_uri)
        elif tracking_uri.startswith(_SERVER_DATABASES):
            _probe_database(tracking_uri)
        self._client: MlflowClient = MlflowClient(tracking_uri=tracking_uri)
        self._parents: dict[str, str] = {}  # study name -> open parent run id
        with self._store_errors():
            self.experiment_id = self._experiment_id(experiment)

    def _experiment_id(self, name: str) -> str:
        from mlflow.exceptions import MlflowException

        client = self._client
        found = client.get_experiment_by_name(name)
        if found is None:
            try:
                return client.create_experiment(name)
            except MlflowException as error:  # another process created it first
                found = client.get_experiment_by_name(name)
                if found is None:
                    raise error from None
        if found.lifecycle_stage == "deleted":  # a deleted name cannot be reused otherwise
            client.restore_experiment(found.experiment_id)
        return str(found.experiment_id)

    @contextlib.contextmanager
    def _store_errors(self) -> Iterator[None]:
        """Turn store and network errors into one redacted line (the URL may hold a password)."""
        try:
            yield
        except _store_error_types() as error:
            message = f"MLflow tracking at {self._shown_uri} failed: {_one_line(error)}"
            raise TrackingUnavailable(message) from None

    def start_study(
        self, sweep: str, study_name: str, optimizer: str, spec: Mapping[str, Any]
    ) -> None:
        """Open the parent run of ``study_name``; its trials are logged as children.

        A resumed sweep reopens the study's existing parent run (latest spec in the
        ``looksam.spec`` tag; params, which MLflow never lets change, keep their first values
        and gain any new keys), so every trial of a study stays under one parent.
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
        params = dict(_flatten(clean_spec))
        with self._store_errors():
            existing = self._parent_run(study_name)
            if existing is None:
                run = self._client.create_run(
                    self.experiment_id, tags=_clean_tags(tags), run_name=study_name
                )
                run_id = run.info.run_id
                self._write(run_id, params=params)
            else:
                run_id = existing.info.run_id
                known = existing.data.params
                fresh = {k: v for k, v in params.items() if _key(k) not in known}
                self._write(run_id, params=fresh, tags={"looksam.spec": spec_json})
                self._client.update_run(run_id, status="RUNNING")
        self._parents[study_name] = run_id

    def _parent_run(self, study_name: str) -> Run | None:
        """The study's parent run from an earlier (interrupted or shorter) sweep, if any."""
        if "'" in study_name:  # MLflow's filter syntax cannot quote it: start a new parent
            return None
        found = self._client.search_runs(
            [self.experiment_id],
            filter_string=(
                f"tags.`looksam.study` = '{study_name}' AND tags.`looksam.role` = 'study'"
            ),
            max_results=1,
            order_by=["attributes.start_time DESC"],
        )
        return found[0] if found else None

    def log_trial(self, record: TrialRecord) -> str | None:
        """One child run: create (with its tags), one batch of params and metrics, terminate."""
        parent = self._parents.get(record.study_name)
        if parent is None:
            raise ValueError(f"study {record.study_name!r} was not started (call start_study)")
        tags = _trial_tags(record, parent)
        rows = _trial_metrics(record)
        # Back-date the start so the last training second lands on "now": the run then spans
        # its training time and no timestamp lies in the future.
        end_ms = int(time.time() * 1000)
        start_ms = end_ms - max((offset for *_, offset in rows), default=0)
        metrics = [(key, value, step, start_ms + offset) for key, value, step, offset in rows]
        with self._store_errors():
            run = self._client.create_run(
                self.experiment_id,
                start_time=start_ms,
                tags=_clean_tags(tags),
                run_name=f"{record.optimizer}-t{record.trial_number}",
            )
            run_id = run.info.run_id
            self._write(run_id, params=_trial_params(record), metrics=metrics)
            self._terminate(run_id, _run_status(record))
        return run_id

    def end_study(self, study_name: str, summary: Mapping[str, float]) -> None:
        """Log ``summary`` as metrics of the study's parent run and mark it FINISHED."""
        run_id = self._parents.pop(study_name, None)
        if run_id is None:
            raise ValueError(f"study {study_name!r} is not open")
        now_ms = int(time.time() * 1000)
        metrics = [(_key(k), float(v), 0, now_ms) for k, v in summary.items()]
        with self._store_errors():
            self._write(run_id, metrics=[m for m in metrics if math.isfinite(m[1])])
            self._terminate(run_id, "FINISHED", end_ms=now_ms)

    def close(self) -> None:
        """Mark every parent run still open KILLED: its study never reached end_study."""
        with self._store_errors():
            while self._parents:
                _, run_id = self._parents.popitem()
                self._terminate(run_id, "KILLED")

    def _terminate(self, run_id: str, status: str, end_ms: int | None = None) -> None:
        """set_terminated without MLflow's "View run at <url>" stdout lines.

        Against a server those lines cost one more request (a get_run), break the sweep's
        progress display, and print the tracking URL as given, password included.
        """
        key = "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"
        before = os.environ.get(key)
        os.environ[key] = "true"
        try:
            self._client.set_terminated(run_id, status, end_time=end_ms)
        finally:
            if before is None:
                del os.environ[key]
            else:
                os.environ[key] = before

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


def _store_error_types() -> tuple[type[BaseException], ...]:
    from mlflow.exceptions import MlflowException
    from sqlalchemy.exc import SQLAlchemyError  # MLflow's database stores

    return (MlflowException, SQLAlchemyError, OSError)


def _one_line(error: BaseException) -> str:
    """The first line of an error message, passwords masked."""
    text = str(error).strip()
    first = text.splitlines()[0] if text else type(error).__name__
    return redact_text(first)


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
            f"MLflow tracking server {redact_url(uri)} is not reachable: {_one_line(error)}"
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
            f"MLflow tracking database {redact_url(uri)} is not reachable: {_one_line(error)}"
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
    from looksam.optim import get_optimizer_info

    try:
        return "sgd" if get_optimizer_info(config.optimizer).wraps_base else "none"
    except (KeyError, ValueError):  # an optimizer this version does not know
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


def _trial_tags(record: TrialRecord, parent_run_id: str) -> dict[str, str]:
    tags = {
        "mlflow.parentRunId": parent_run_id,
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
        "time_to_target_seconds": _mean(list(reached)),
        "seeds_reached_target": float(len(reached)) if results else None,
    }
    for i, value in enumerate(record.objective_values or ()):
        finals[f"objective_{i}"] = value if math.isfinite(value) else None
    finals.update({k: v if math.isfinite(v) else None for k, v in record.metrics.items()})
    end = max((stamp for *_, stamp in rows), default=0)
    rows.extend((key, v, 0, end) for key, v in finals.items() if v is not None)
    return rows
