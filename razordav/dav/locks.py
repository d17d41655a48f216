"""WebDAV lock storage that survives a restart: WsgiDAV's dict storage over a SQLite table.

WsgiDAV keeps locks in a dict of ``token -> lock`` plus ``"URL2TOKEN:<path>" -> [tokens]``
and reassigns values after changing them (it was written for shelve). Reads come from an
in-memory copy (a PROPFIND asks for every member's locks), and every change is written
through to the table ``locks`` (JSON values; the layout sqlitedict wrote, so older data dirs
open as they are) and committed before the request goes on: a change that cannot be stored
(a full disk) is a 507 for that request, never a lock that exists only in memory. Expired
locks are purged at open.

The table is shared with other processes (``razordav lock list|break`` while a gateway
runs): the storage asks SQLite whether any other connection committed to the file since
it last looked (``PRAGMA data_version``, about 10 microseconds with its locking) and, if
so, reloads its copy: once per WebDAV request, at its first lock call (``AtomicLock``
opens the scope; WsgiDAV makes five such calls for a PUT), and before every call made
outside a request (the lock checks of a mount). A request sees the table as of its
start plus the changes of this process; a lock broken from the command line is gone
from the gateway's next request. A change of the gateway's own (its writer is another
connection) also reloads once; lock tables are small.

A lock lasts at most ``max_timeout`` seconds without a refresh, whatever the client asked
(``Timeout: Infinite`` included; WsgiDAV alone allowed four weeks). ``AtomicLock`` makes a
LOCK request all or nothing: a lock stored while answering a LOCK that then fails (an
error page instead of the lock discovery, an exception) is removed again.
"""

from __future__ import annotations

import base64
import json
import logging
import sqlite3
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator
from urllib.parse import quote

from wsgidav.dav_error import HTTP_INSUFFICIENT_STORAGE, HTTP_LOCKED, DAVError
from wsgidav.lock_man.lock_storage import LockStorageDict

from ..core import errors

log = logging.getLogger(__name__)


def _default(obj):
    if isinstance(obj, bytes):  # the lock owner is an XML fragment in bytes
        return {"__bytes__": base64.b64encode(obj).decode()}
    raise TypeError(f"cannot store {type(obj).__name__} in a lock")


def _hook(d):
    return base64.b64decode(d["__bytes__"]) if set(d) == {"__bytes__"} else d


def _encode(value) -> str:
    return json.dumps(value, default=_default)


def _decode(text: str):
    return json.loads(text, object_hook=_hook)


class _Table:
    """The durable copy: table ``locks`` (key TEXT PRIMARY KEY, value BLOB), each change
    committed at once in the caller's thread; no space left is a 507 (``DAVError``)."""

    def __init__(self, path: str):
        self.path = path
        self.conn = sqlite3.connect(path, check_same_thread=False, timeout=30,
                                    isolation_level=None)
        self._lock = threading.Lock()
        self.conn.execute('CREATE TABLE IF NOT EXISTS "locks" (key TEXT PRIMARY KEY, '
                          'value BLOB)')

    def items(self):
        with self._lock:
            rows = self.conn.execute('SELECT key, value FROM "locks"').fetchall()
        return [(k, _decode(v)) for k, v in rows]

    def _run(self, sql: str, args=()) -> None:
        try:
            with self._lock:
                self.conn.execute(sql, args)
        except sqlite3.OperationalError as exc:
            if "disk is full" not in str(exc):
                raise
            log.error("lock not stored, the local disk is full at %s: %s", self.path, exc)
            raise DAVError(HTTP_INSUFFICIENT_STORAGE,
                           context_info="the local disk is full") from None

    def put(self, key, value) -> None:
        self._run('REPLACE INTO "locks" (key, value) VALUES (?, ?)', (key, _encode(value)))

    def remove(self, key) -> None:
        self._run('DELETE FROM "locks" WHERE key = ?', (key,))

    def clear(self) -> None:
        self._run('DELETE FROM "locks"')

    def close(self) -> None:
        with self._lock:
            self.conn.close()


class _WriteThrough(dict):
    """A dict whose changes are made in ``backing`` (the durable copy) first: a change
    that cannot be stored changes nothing."""

    def __init__(self, backing: _Table):
        super().__init__(backing.items())
        self.backing = backing

    def __setitem__(self, key, value):
        self.backing.put(key, value)
        super().__setitem__(key, value)

    def __delitem__(self, key):
        self.backing.remove(key)
        super().__delitem__(key)

    def pop(self, key, *default):
        if key in self:
            self.backing.remove(key)
        return super().pop(key, *default)

    def clear(self):
        self.backing.clear()
        super().clear()


LOCK_DB = "locks.sqlite"      # in the data dir of the volume whose WebDAV locks it holds


class SqliteLockStorage(LockStorageDict):
    """Threading: WsgiDAV's read-write lock guards the copy's contents; ``_sync_lock``
    guards ``_watch`` and ``_version``. A reload replaces ``_dict`` whole (one attribute
    store), so a reader sees the old copy or the new one. The version is read before the
    table, so a commit that races a reload is seen at the next call and reloads again."""

    def __init__(self, path: str, max_timeout: int = 3600):
        super().__init__()
        self.path = str(path)
        self.max_timeout = max_timeout
        self._made = threading.local()     # tokens created by this thread's LOCK request
        self._sync_lock = threading.Lock()
        self._watch: sqlite3.Connection | None = None
        self._version = None
        # This thread's request: ``looked`` False until its first look, True after; None
        # outside a request (every call looks).
        self._request = threading.local()

    @contextmanager
    def one_look(self) -> Iterator[None]:
        """Calls of this thread inside (one request) look for other processes' changes
        once, at the first call."""
        self._request.looked = False
        try:
            yield
        finally:
            self._request.looked = None

    def _sync(self) -> None:
        """Reload the copy if another connection committed to the table since last time
        (inside ``one_look``, only the first time)."""
        looked = getattr(self._request, "looked", None)
        if looked:
            return
        if looked is False:
            self._request.looked = True
        with self._sync_lock:
            if self._watch is None or self._dict is None:
                return
            version = self._watch.execute("PRAGMA data_version").fetchone()[0]
            if version == self._version:
                return
            self._version = version
            self._dict = _WriteThrough(self._dict.backing)

    def get(self, token):
        self._sync()
        return super().get(token)

    def delete(self, token):
        self._sync()
        return super().delete(token)

    def get_lock_list(self, path, **kw):
        self._sync()
        return super().get_lock_list(path, **kw)

    def _capped(self, timeout) -> int:
        if timeout is None or timeout < 0 or timeout > self.max_timeout:
            return self.max_timeout
        return timeout

    def create(self, path, lock):
        self._sync()
        lock["timeout"] = self._capped(lock.get("timeout"))
        lock = super().create(path, lock)
        made = getattr(self._made, "tokens", None)
        if made is not None:
            made.append(lock["token"])
        return lock

    def refresh(self, token, *, timeout):
        self._sync()
        return super().refresh(token, timeout=self._capped(timeout))

    def all_locks(self) -> list[dict]:
        """Every live lock (root, owner, principal, depth, scope, timeout, expire, token)."""
        self._sync()
        now = time.time()
        return [dict(lock) for token, lock in list(self._dict.items())
                if not token.startswith("URL2TOKEN:") and
                (lock.get("expire", -1) < 0 or lock["expire"] >= now)]

    def __repr__(self):
        return f"SqliteLockStorage({self.path!r})"

    def open(self):
        backing = _Table(self.path)
        self._watch = sqlite3.connect(self.path, check_same_thread=False, timeout=5)
        self._version = self._watch.execute("PRAGMA data_version").fetchone()[0]
        self._dict = _WriteThrough(backing)
        self._purge_expired()

    def _purge_expired(self):
        now = time.time()
        for token, lock in list(self._dict.items()):
            if token.startswith("URL2TOKEN:"):
                continue
            if lock.get("expire", -1) >= 0 and lock["expire"] < now:
                self.delete(token)

    def close(self):
        # Called by the server at shutdown, and again by WsgiDAV's LockManager.__del__ at
        # interpreter exit: only the first closes.
        with self._sync_lock:
            d, self._dict = self._dict, None
            watch, self._watch = self._watch, None
        if watch is not None:
            watch.close()
        if d is not None:
            d.backing.close()


class AtomicLock:
    """WSGI wrapper: a LOCK whose answer is not a success leaves no lock behind; every
    request looks for other processes' lock changes once (``one_look``)."""

    def __init__(self, app, storage: SqliteLockStorage):
        self.app = app
        self.storage = storage

    def __getattr__(self, name):        # lock_manager, config, ... of the wrapped app
        return getattr(self.app, name)

    def __call__(self, environ, start_response):
        with self.storage.one_look():
            return self._call(environ, start_response)

    def _call(self, environ, start_response):
        if environ.get("REQUEST_METHOD") != "LOCK":
            return self.app(environ, start_response)
        made = self.storage._made.tokens = []
        answered = []

        def start(status, headers, exc_info=None):
            answered.append(int(status[:3]))
            return start_response(status, headers, exc_info) if exc_info else \
                start_response(status, headers)
        ok = False
        try:
            result = self.app(environ, start)
            ok = bool(answered) and answered[-1] < 300
            return result
        finally:
            self.storage._made.tokens = None
            if not ok:
                for token in made:
                    self.storage.delete(token)


def lock_checker(lock_manager):
    """``check(path)`` for ``Volume.lock_check``: raises ``errors.Locked`` when a lock held
    by anybody covers ``path`` (the path itself, or a parent locked with depth infinity), as
    for a WebDAV client that sends no lock token. Faces that cannot send one (a mount) ask
    it before every change."""
    def check(path: str) -> None:
        try:
            lock_manager.check_write_permission(url=quote(path), depth="0", token_list=[],
                                                principal="")
        except DAVError as exc:
            if exc.value != HTTP_LOCKED:
                raise
            raise errors.Locked(f"{path} is locked over WebDAV") from None
    return check


def standalone_lock_manager(data_dir, max_timeout: int):
    """The lock manager over a data dir's lock storage, for a process that serves no WebDAV
    (``razordav mount``): one process holds a volume at a time, so nothing else changes the
    storage meanwhile."""
    from wsgidav.lock_man.lock_manager import LockManager
    return LockManager(SqliteLockStorage(str(Path(data_dir) / "locks.sqlite"),
                                         max_timeout=max_timeout))
