"""The outbox: records a tracking store could not take yet, kept (in a file) until it is back.

Also the OS file lock several workers share: the outbox file's own, and the one beside a SQLite
tracking store that serialises MLflow's schema upgrades and a study's parent run.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import socket
import uuid
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from looksam.sweeps.tracking.store import sqlite_db_path

try:
    import fcntl
except ImportError:  # Windows: no OS file locks of this kind; nothing is locked there
    fcntl = None  # type: ignore[assignment]


_logger = logging.getLogger(__name__)


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
