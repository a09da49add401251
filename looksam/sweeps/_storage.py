"""Opening an Optuna storage: SQLite/PostgreSQL through its RDB storage, or a journal file."""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path

import optuna
from optuna.storages.journal import JournalFileBackend

from looksam.sweeps.redact import redact_error, redact_url
from looksam.sweeps.spec import SpecError

#: Workers starting together on a fresh database race to create Optuna's tables; the loser
#: sees a duplicate-object error once the winner has committed, and simply tries again
#: (PostgreSQL's wordings, then SQLite's for the same race on alembic's version row).
_SCHEMA_RACE = ("already exists", "duplicate key", "UniqueViolation", "UNIQUE constraint failed")


def open_storage(url: str, *, create: bool = True) -> optuna.storages.BaseStorage:
    """SQLite/PostgreSQL via Optuna's RDB storage, ``journal:PATH`` via its JournalStorage.

    Args:
        url: the storage URL.
        create: make a missing SQLite or journal file (and its folder); readers such as
            ``report`` pass False, so a mistyped path is an error rather than a new, empty store.

    Raises:
        SpecError: the storage cannot be opened (the message never shows a password).
    """
    local = local_file(url)
    if local is not None and not create and not local.exists():
        raise SpecError(f"no Optuna storage at {redact_url(url)}: run the sweep first")
    if local is not None and url.startswith("sqlite:") and local.is_file():
        check_sqlite_intact(local, "Optuna storage")
    try:
        if url.startswith("journal:"):
            path = Path(url.removeprefix("journal:"))
            path.parent.mkdir(parents=True, exist_ok=True)
            return optuna.storages.JournalStorage(JournalFileBackend(str(path)))
        if local is not None:
            local.parent.mkdir(parents=True, exist_ok=True)
        return _rdb_storage(url)
    except Exception as error:  # SQLAlchemy raises many kinds; all mean "cannot use it"
        reason = redact_error(error, url)
        raise SpecError(f"cannot open storage {redact_url(url)}: {reason}") from None


def check_sqlite_intact(path: Path, what: str) -> None:
    """Raise SpecError (one line) if the SQLite file at ``path`` is damaged anywhere, not only in
    its header; read-only, so the file is left byte for byte as it was.

    ``PRAGMA quick_check`` reads every page (milliseconds for a sweep's store). A store damaged
    in the middle would otherwise open, then fail deep inside Optuna or MLflow with a traceback.
    """
    try:
        with contextlib.closing(
            sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
        ) as db:
            problems = [row[0] for row in db.execute("PRAGMA quick_check(3)").fetchall()]
    except sqlite3.Error as error:
        problems = [str(error)]
    if problems != ["ok"]:
        first = " ".join(problems[0].replace("*", " ").split())[:100]  # SQLite's is multi-line
        raise SpecError(
            f"{what} {path} is damaged ({first}); it was left as it is: restore it from a copy, "
            "or move it aside to start afresh"
        )


def local_file(url: str) -> Path | None:
    """The file behind a journal or SQLite URL (None for servers and in-memory SQLite)."""
    if url.startswith("journal:"):
        return Path(url.removeprefix("journal:"))
    if url.startswith("sqlite:///"):
        path = url.removeprefix("sqlite:///").split("?", 1)[0]
        return Path(path) if path and path != ":memory:" else None
    return None


def _rdb_storage(url: str, attempts: int = 5) -> optuna.storages.RDBStorage:
    engine_kwargs = {"pool_pre_ping": True} if not url.startswith("sqlite") else {}
    for attempt in range(attempts):
        try:
            return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs)
        except Exception as error:
            if attempt == attempts - 1 or not any(m in str(error) for m in _SCHEMA_RACE):
                raise
    raise AssertionError("unreachable")
