"""Running out of local disk (cache blocks, the SQLite metadata, temporary files).

Owns the one translation of "no space left" (OSError ENOSPC/EDQUOT, SQLite's "database
or disk is full") into ``errors.NoSpace`` (507 on WebDAV, ENOSPC on FUSE), and what is
known about it: the first failure of an episode is logged once (then at most every ``LOG_EVERY``), as an
error, with the path and the free space left; the episode lasts until a write under that directory
succeeds with a margin free again (``ROOM``: without it, parallel writers would end and
start an episode per block); ``full(dir)`` names it for ``figures`` (stats) and
``/readyz``.

Callers MUST leave nothing half-written behind when ``guard`` raises (remove the
temporary file, roll back the transaction): this module only reports.

Threading: any thread; the state is behind one lock.
"""

from __future__ import annotations

import collections
import errno
import logging
import shutil
import sqlite3
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from . import errors

log = logging.getLogger(__name__)

ROOM_BYTES = 64 << 20     # free space that ends an episode (or ROOM_SHARE of the disk)
ROOM_SHARE = 0.05
LOG_EVERY = 600           # seconds: a disk that fills again and again is logged once a while

_lock = threading.Lock()
_full: dict[str, str] = {}                # directory -> reason, while its disk is full
_logged: dict[str, float] = {}            # directory -> when its last episode was logged
events: collections.Counter = collections.Counter()   # directory -> failures seen


def is_no_space(exc: BaseException) -> bool:
    if isinstance(exc, OSError):
        return exc.errno in (errno.ENOSPC, errno.EDQUOT)
    return isinstance(exc, sqlite3.OperationalError) and "disk is full" in str(exc)


@contextmanager
def guard(directory) -> Iterator[None]:
    """Run a write under ``directory``; running out of space there raises ``NoSpace``."""
    directory = str(directory)
    try:
        yield
    except (OSError, sqlite3.OperationalError) as exc:
        if not is_no_space(exc):
            raise
        raise no_space(directory, exc) from None
    if directory in _full:
        recovered(directory)


def no_space(directory: str, exc: BaseException) -> errors.NoSpace:
    try:
        free = f"{shutil.disk_usage(directory).free} bytes free"
    except OSError:
        free = "free space unknown"
    reason = f"local disk full at {directory} ({free}): {exc}"
    now = time.monotonic()
    with _lock:
        first = directory not in _full and now - _logged.get(directory, -LOG_EVERY) >= LOG_EVERY
        if first:
            _logged[directory] = now
        _full[directory] = reason
        events[directory] += 1
    if first:
        log.error("%s; writes answer 507 / ENOSPC until there is room", reason)
    return errors.NoSpace(reason)


def recovered(directory: str) -> None:
    try:
        usage = shutil.disk_usage(directory)
    except OSError:
        return
    if usage.free < min(ROOM_BYTES, usage.total * ROOM_SHARE):
        return
    with _lock:
        _full.pop(directory, None)


def full(root) -> list[str]:
    """The reasons of every directory under ``root`` whose disk is full now."""
    root = Path(root)
    with _lock:
        return [r for d, r in _full.items() if Path(d) == root or root in Path(d).parents]


def failures(root) -> int:
    root = Path(root)
    with _lock:
        return sum(n for d, n in events.items() if Path(d) == root or root in Path(d).parents)
