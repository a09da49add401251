"""The tracking store underneath MLflow: SQLite paths and repair, and a database's reachability.

Only SQLite and SQLAlchemy are used here, never MLflow itself, so these checks run before (and
without) MLflow's slow import.
"""

from __future__ import annotations

import logging
from pathlib import Path

from looksam.sweeps.redact import redact_error, redact_url
from looksam.sweeps.tracking.protocol import TrackingUnavailable

_logger = logging.getLogger(__name__)

#: Seconds the reachability probe of an http(s) tracking server may take.
PROBE_TIMEOUT_SECONDS = 5
# database servers MLflow can track into (each driver takes a connect_timeout)
_SERVER_DATABASES = ("postgresql", "mysql")
#: Alembic's name prefix for the copy of a SQLite table it is rebuilding.
_ALEMBIC_TMP = "_alembic_tmp_"


def sqlite_db_path(tracking_uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` URI (relative to the working directory), else None.

    ``sqlite:///runs/x.db`` is relative, ``sqlite:////abs/x.db`` absolute; in-memory is None.
    """
    prefix = "sqlite:///"
    if not tracking_uri.startswith(prefix):
        return None
    path = tracking_uri[len(prefix) :].split("?", 1)[0]
    return Path(path) if path and path != ":memory:" else None


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


def _database_error_types() -> tuple[type[BaseException], ...]:
    """What a database store raises when it cannot be reached or read."""
    from sqlalchemy.exc import SQLAlchemyError  # MLflow's database stores

    return (SQLAlchemyError, OSError)


def _probe_database(uri: str) -> None:
    """Connect once with a short timeout: MLflow itself retries a dead database for ~100 s."""
    import sqlalchemy

    timeout = {"connect_timeout": PROBE_TIMEOUT_SECONDS}
    failures: tuple[type[BaseException], ...] = (*_database_error_types(), ImportError)
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
