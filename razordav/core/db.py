"""The metadata database of one volume: one SQLite file (WAL), its connections, its write
transactions and their durability, and the registry of its tables.

Owns: a connection per thread (readers never wait for writers), one writer at a time
(``write()``), durable or deferred commits (``deferred_sync``, ``sync``), the hooks that run
before a commit reaches the disk (``before_durable``: the block cache's files first), the guard
asked before every write (``write_guard``: the lease), and the tables. A table is declared once
with ``table()``: its DDL, and whether it is **replicated** (every row change is captured by
triggers into ``journal`` in the same transaction, shipped to the bucket by journal.py and
replayed by restore) or **local** (derived or private to this data dir). Modules declare their
own tables: tree.py the namespace, extents.py contents, service/registry.py the users; nobody
outside this module touches connections or the writer lock.

Threading: ``write()`` holds ``_lock`` (re-entrant) for the transaction; ``reader()`` returns
this thread's connection; ``exclusive()`` holds the writer lock with no transaction (a
consistent file copy).
"""

from __future__ import annotations

import os
import sqlite3
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

from . import errors, space
from ..fsutil import fsync_path

CHECKPOINT_BYTES = 16 << 20   # log size past which a durable commit checkpoints
# Log size past which a deferred commit is made durable (and so may checkpoint): the block
# cache keeps small blocks in the log too, and a long run of deferred commits must not grow
# it without bound.
DEFERRED_LOG_MAX = 4 * CHECKPOINT_BYTES


@dataclass(frozen=True)
class Table:
    """A table's DDL (``CREATE ... IF NOT EXISTS``, indexes and triggers included) and, for a
    replicated one, its columns in order, key columns and BLOB columns (the journal's JSON
    carries BLOBs as hex)."""
    name: str
    ddl: str
    columns: tuple[str, ...] = ()
    keys: tuple[str, ...] = ()
    blobs: tuple[str, ...] = ()
    replicated: bool = True
    snapshot: bool = True       # a snapshot carries its rows (False: private to this data dir)


# Every table any module declared, in declaration order: the schema of every volume's
# database, and what restore knows how to replay.
TABLES: dict[str, Table] = {}


def table(name: str, ddl: str, columns=(), keys=(), blobs=(), replicated=True,
          snapshot=True) -> Table:
    """Declare a table (at import time of the module that owns it). ``snapshot``: whether
    the metadata snapshots in the bucket carry its rows."""
    t = Table(name, ddl, tuple(columns), tuple(keys), tuple(blobs), replicated, snapshot)
    if TABLES.get(name, t) != t:
        raise ValueError(f"table {name} is declared twice, differently")
    TABLES[name] = t
    return t


def replicated() -> dict[str, Table]:
    return {n: t for n, t in TABLES.items() if t.replicated}


table("journal", """
CREATE TABLE IF NOT EXISTS journal (seq INTEGER PRIMARY KEY AUTOINCREMENT, op TEXT NOT NULL);
""", replicated=False, snapshot=False)
table("shipper", """
CREATE TABLE IF NOT EXISTS shipper (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
""", replicated=False)


def _triggers(t: Table) -> str:
    """One trigger per change of a replicated table: the row (for a delete, its key) as
    JSON, into ``journal``."""
    def values(cols, ref):
        return ", ".join(f"CASE WHEN {ref}.{c} IS NULL THEN NULL ELSE hex({ref}.{c}) END"
                         if c in t.blobs else f"{ref}.{c}" for c in cols)
    row = f"json_array('{t.name}', 'U', json_array({values(t.columns, 'NEW')}))"
    gone = f"json_array('{t.name}', 'D', json_array({values(t.keys, 'OLD')}))"
    moved = " OR ".join(f"OLD.{k} IS NOT NEW.{k}" for k in t.keys)
    return f"""
CREATE TRIGGER IF NOT EXISTS j_{t.name}_i AFTER INSERT ON {t.name}
BEGIN INSERT INTO journal (op) VALUES ({row}); END;
CREATE TRIGGER IF NOT EXISTS j_{t.name}_u_moved AFTER UPDATE ON {t.name} WHEN {moved}
BEGIN INSERT INTO journal (op) VALUES ({gone}); END;
CREATE TRIGGER IF NOT EXISTS j_{t.name}_u AFTER UPDATE ON {t.name}
BEGIN INSERT INTO journal (op) VALUES ({row}); END;
CREATE TRIGGER IF NOT EXISTS j_{t.name}_d AFTER DELETE ON {t.name}
BEGIN INSERT INTO journal (op) VALUES ({gone}); END;"""


class Database:
    """One volume's SQLite file."""

    def __init__(self, path: str | os.PathLike):
        self.path = str(path)
        # Asked before every write transaction; raises when this gateway may not change the
        # volume (its lease is lost or lapsed: core/lease.py). None: always allowed.
        self.write_guard = None
        # Called (under the writer lock) before a commit reaches the disk: what deferred
        # commits name must be on disk first (the block cache's files and index).
        self.before_durable: list = []
        self.error_map = None       # a context manager turning constraint aborts into errors
        self._local = threading.local()
        self._lock = threading.RLock()
        self._conns: list[sqlite3.Connection] = []
        self._conns_lock = threading.Lock()
        self._created: set[str] = set()
        self._closed = False
        # The log file size past which the next durable commit checkpoints (guarded by
        # ``_lock``; see ``_checkpoint``).
        self._checkpoint_at = CHECKPOINT_BYTES
        self.checkpoints = 0        # checkpoints run, for the figures and tests

    def create_tables(self) -> None:
        """Create every declared table not created yet (with its journal triggers)."""
        with self._lock:
            todo = [t for name, t in TABLES.items() if name not in self._created]
            if todo:
                self.reader().executescript("".join(
                    t.ddl + (_triggers(t) if t.replicated else "") for t in todo))
                self._created.update(t.name for t in todo)

    # -- connections --

    def reader(self) -> sqlite3.Connection:
        """This thread's connection: for reads (each statement sees a committed state)."""
        c = getattr(self._local, "conn", None)
        if c is None:
            if self._closed:
                raise sqlite3.ProgrammingError(f"{self.path} is closed")
            c = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False,
                                timeout=60)
            c.execute("PRAGMA journal_mode = WAL")
            c.execute("PRAGMA synchronous = FULL")
            # Checkpoints flush the log to disk: only ``_checkpoint`` runs them, after the
            # ``before_durable`` hooks, so deferred commits never reach the disk before
            # the blocks they name.
            c.execute("PRAGMA wal_autocheckpoint = 0")
            # When the log restarts after a checkpoint, the file is cut back to this size:
            # its size then tells how long the log is (``_checkpoint``).
            c.execute(f"PRAGMA journal_size_limit = {CHECKPOINT_BYTES}")
            c.execute("PRAGMA cache_size = -16000")
            self._local.conn = c
            with self._conns_lock:
                self._conns.append(c)
        return c

    @contextmanager
    def snapshot(self) -> Iterator[sqlite3.Connection]:
        """A read transaction: every statement inside sees the same committed state."""
        c = self.reader()
        if c.in_transaction:
            yield c
            return
        c.execute("BEGIN")
        try:
            yield c
        finally:
            c.execute("COMMIT")

    # -- writing --

    @contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction: committed (and durable, unless this thread is inside
        ``deferred_sync``) on exit, rolled back on error."""
        if self.write_guard is not None:
            self.write_guard()
        with self._lock, (self.error_map or _nothing)(), \
                space.guard(os.path.dirname(self.path)):
            c = self.reader()
            if c.in_transaction:  # nested: the outer transaction commits
                yield c
                return
            deferred = self.deferred and not self._log_too_long()
            if deferred:
                c.execute("PRAGMA synchronous = NORMAL")
            try:
                c.execute("BEGIN IMMEDIATE")
                try:
                    yield c
                    if not deferred:   # what deferred commits name goes to disk first
                        for hook in self.before_durable:
                            hook()
                    c.execute("COMMIT")
                except BaseException:
                    if c.in_transaction:
                        c.execute("ROLLBACK")
                    raise
            finally:
                if deferred:
                    c.execute("PRAGMA synchronous = FULL")
            if not deferred:
                self._checkpoint(c)

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        """Hold the writer lock (no transaction): no write of this process is half done
        inside, and none starts."""
        with self._lock:
            yield

    def _log_too_long(self) -> bool:
        try:
            return os.path.getsize(self.path + "-wal") > DEFERRED_LOG_MAX
        except OSError:
            return False

    @property
    def deferred(self) -> bool:
        """Whether this thread's commits are deferred (see ``deferred_sync``)."""
        return getattr(self._local, "deferred", False)

    def _checkpoint(self, c) -> None:
        """Fold a long log back into the database (it stays readable either way). Called
        under ``_lock`` after a durable commit, so after the ``before_durable`` hooks.

        SQLite never shrinks the log file by itself: after a complete checkpoint the next
        commit writes the log from its start again, inside the file. The file size is a sign
        of a long log only because ``journal_size_limit`` cuts the file back to
        ``CHECKPOINT_BYTES`` at that restart; a file past that size holds that much log.
        When the log could not restart (a reader still used it) or the checkpoint stopped
        short, the next try waits for a sixteenth of ``CHECKPOINT_BYTES`` more log, never
        one per commit."""
        try:
            size = os.path.getsize(self.path + "-wal")
        except OSError:
            return
        if size <= CHECKPOINT_BYTES:      # a short log, or one restarted and cut back
            self._checkpoint_at = CHECKPOINT_BYTES
            return
        if size <= self._checkpoint_at:
            return
        c.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
        self.checkpoints += 1
        self._checkpoint_at = size + CHECKPOINT_BYTES // 16

    @contextmanager
    def deferred_sync(self) -> Iterator[None]:
        """Commits of this thread inside are atomic and survive a crash of the process, but
        reach the disk only at the next ``sync`` (or a durable commit, or a checkpoint):
        the promise of a local file system, whose metadata is durable after fsync. WAL
        commits in order, so a later durable commit makes the earlier ones durable too."""
        before = getattr(self._local, "deferred", False)
        self._local.deferred = True
        try:
            yield
        finally:
            self._local.deferred = before

    def sync(self) -> None:
        """Make every commit so far durable: flush the write-ahead log (after what the
        ``before_durable`` hooks flush)."""
        with self._lock:   # no commit half written while the log is flushed
            for hook in self.before_durable:
                hook()
            fsync_path(self.path + "-wal")   # none: all is in the database file, synced

    def close(self) -> None:
        """Close every connection. A write in progress in another thread finishes first (a
        connection closed under a running statement can crash the process); afterwards
        every call raises ``sqlite3.ProgrammingError``."""
        with self._lock, self._conns_lock:
            self._closed = True
            for c in self._conns:
                try:
                    c.close()
                except sqlite3.ProgrammingError:
                    pass  # made in a thread that is gone; closed by its finaliser
            self._conns.clear()
        self._local = threading.local()


@contextmanager
def _nothing() -> Iterator[None]:
    yield


def unknown_table(name: str) -> errors.Corrupt:
    return errors.Corrupt(f"the journal names table {name!r}, which this razordav does not "
                          "know (a newer version wrote it, or the service layer is not loaded)")
