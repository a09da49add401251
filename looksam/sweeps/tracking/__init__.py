"""Record sweeps in MLflow: one experiment per sweep, a parent run per study, a child per trial.

The package is split by job: :mod:`.protocol` (what a sweep needs from tracking, no MLflow),
:mod:`.store` (SQLite paths and repair, database probes), ``_outbox`` (records an outage held
back, and the file locks), ``_payload`` (a trial's params, tags and metrics, cleaned) and
``_mlflow``, the one module that imports mlflow, lazily, so importing this package stays cheap.
"""

from __future__ import annotations

from looksam.sweeps.tracking._mlflow import (
    ARTIFACTS_DIR,
    DEFAULT_TRACKING_URI,
    EXPERIMENT_TAGS,
    TRACKING_SCHEMES,
    MlflowTracker,
    artifact_location,
    check_tracking_uri,
    experiment_url,
    list_experiments,
    tracker_for,
)
from looksam.sweeps.tracking._outbox import outbox_path, store_lock_path
from looksam.sweeps.tracking.protocol import (
    STATES,
    NullTracker,
    Tracker,
    TrackingUnavailable,
    TrialRecord,
)
from looksam.sweeps.tracking.store import PROBE_TIMEOUT_SECONDS, sqlite_db_path

__all__ = [
    "ARTIFACTS_DIR",
    "DEFAULT_TRACKING_URI",
    "EXPERIMENT_TAGS",
    "PROBE_TIMEOUT_SECONDS",
    "STATES",
    "TRACKING_SCHEMES",
    "MlflowTracker",
    "NullTracker",
    "Tracker",
    "TrackingUnavailable",
    "TrialRecord",
    "artifact_location",
    "check_tracking_uri",
    "experiment_url",
    "list_experiments",
    "outbox_path",
    "sqlite_db_path",
    "store_lock_path",
    "tracker_for",
]
