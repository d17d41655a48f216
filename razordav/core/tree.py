"""The namespace: an N-ary tree of inodes in SQLite (WAL), with properties, xattrs and each
file's block list.

Owns: inodes (POSIX attributes), directory entries (hard links allowed for non-directories),
dead properties, xattrs, the extent map (block index -> block hash, holes are absent rows),
block reference counts, the usage counters and limits of a quota (``usage``) and the
volume's figures (``totals``), kept by triggers and recounted only when not known good.
It never touches block bytes or the object store.

Names are preserved as given but looked up by their NFC form, so ``é`` typed on a Mac (NFD)
and on Windows (NFC) is one file. A directory of any size is listed in one indexed query, and
renaming a directory is one row update.

Every change happens in one transaction (``write()``); a change is committed, or not at all.
Writers are serialised by ``_lock``; readers use one connection per thread and never wait for
writers (WAL).
"""

from __future__ import annotations

import os
import sqlite3
import stat as st
import time
import unicodedata
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterable, Iterator

from . import errors
from .db import Database, table
from .extents import COUNT_BLOCKS, purge_content

ROOT = 1
MAX_NAME_BYTES = 255
# ``counters()`` and ``count()``: quota usage, figures, block figures.
COUNTER_NAMES = ("usage_bytes", "usage_files", "inodes", "logical_bytes", "blocks",
                 "block_raw_bytes", "block_stored_bytes")

table("meta", """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
""", ("key", "value"), ("key",))
table("inodes", """
CREATE TABLE IF NOT EXISTS inodes (
    ino INTEGER PRIMARY KEY,
    mode INTEGER NOT NULL, uid INTEGER NOT NULL, gid INTEGER NOT NULL,
    nlink INTEGER NOT NULL, size INTEGER NOT NULL DEFAULT 0, rdev INTEGER NOT NULL DEFAULT 0,
    atime INTEGER NOT NULL, mtime INTEGER NOT NULL, ctime INTEGER NOT NULL,
    btime INTEGER NOT NULL, target BLOB, etag TEXT NOT NULL DEFAULT '',
    hashes TEXT NOT NULL DEFAULT '');
""", ("ino", "mode", "uid", "gid", "nlink", "size", "rdev", "atime", "mtime", "ctime", "btime",
      "target", "etag", "hashes"), ("ino",), ("target",))
table("dentries", """
CREATE TABLE IF NOT EXISTS dentries (
    parent INTEGER NOT NULL, key TEXT NOT NULL, name TEXT NOT NULL, ino INTEGER NOT NULL,
    PRIMARY KEY (parent, key)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS dentries_ino ON dentries (ino);
""", ("parent", "key", "name", "ino"), ("parent", "key"))
table("props", """
CREATE TABLE IF NOT EXISTS props (
    ino INTEGER NOT NULL, ns TEXT NOT NULL, name TEXT NOT NULL, value BLOB NOT NULL,
    PRIMARY KEY (ino, ns, name)) WITHOUT ROWID;
""", ("ino", "ns", "name", "value"), ("ino", "ns", "name"), ("value",))
table("xattrs", """
CREATE TABLE IF NOT EXISTS xattrs (
    ino INTEGER NOT NULL, name TEXT NOT NULL, value BLOB NOT NULL,
    PRIMARY KEY (ino, name)) WITHOUT ROWID;
""", ("ino", "name", "value"), ("ino", "name"), ("value",))
# Usage counters for quotas: one row, kept by triggers in the transaction of each change, so
# ``usage()`` is O(1) and a quota is enforced where the change commits (parallel writers
# cannot overshoot). Bytes are the logical sizes of regular files, each inode once (hard
# links share it); files are all inodes but the root. Not journaled: counters are derived
# (see ``totals`` for when they are recounted). The limits are the opener's: ``Tree()``
# clears them and ``set_limits`` sets them; NULL is unlimited (NULL comparisons never raise).
_PROP_BYTES = ("length(CAST({r}.ns AS BLOB)) + length(CAST({r}.name AS BLOB)) "
               "+ length({r}.value)")
_XATTR_BYTES = "length(CAST({r}.name AS BLOB)) + length({r}.value)"
# Dead properties and xattrs count as bytes too (names and values), so PROPPATCH and
# setxattr cannot grow a volume past its quota; each inode's hold at most
# MAX_META_PER_INODE bytes of them in all, quota or not.
MAX_META_PER_INODE = 1 << 20
table("usage", """
CREATE TABLE IF NOT EXISTS usage (
    id INTEGER PRIMARY KEY CHECK (id = 0), bytes INTEGER NOT NULL, files INTEGER NOT NULL,
    max_bytes INTEGER, max_files INTEGER);
CREATE TRIGGER IF NOT EXISTS usage_inodes_i AFTER INSERT ON inodes WHEN NEW.ino != 1
BEGIN UPDATE usage SET files = files + 1,
    bytes = bytes + CASE WHEN (NEW.mode & 61440) = 32768 THEN NEW.size ELSE 0 END; END;
CREATE TRIGGER IF NOT EXISTS usage_inodes_d AFTER DELETE ON inodes WHEN OLD.ino != 1
BEGIN UPDATE usage SET files = files - 1,
    bytes = bytes - CASE WHEN (OLD.mode & 61440) = 32768 THEN OLD.size ELSE 0 END; END;
CREATE TRIGGER IF NOT EXISTS usage_inodes_size AFTER UPDATE OF size ON inodes
    WHEN NEW.size IS NOT OLD.size AND (NEW.mode & 61440) = 32768
BEGIN UPDATE usage SET bytes = bytes + NEW.size - OLD.size; END;
CREATE TRIGGER IF NOT EXISTS usage_props_i AFTER INSERT ON props
BEGIN UPDATE usage SET bytes = bytes + {prop_new}; END;
CREATE TRIGGER IF NOT EXISTS usage_props_d AFTER DELETE ON props
BEGIN UPDATE usage SET bytes = bytes - ({prop_old}); END;
CREATE TRIGGER IF NOT EXISTS usage_xattrs_i AFTER INSERT ON xattrs
BEGIN UPDATE usage SET bytes = bytes + {xattr_new}; END;
CREATE TRIGGER IF NOT EXISTS usage_xattrs_d AFTER DELETE ON xattrs
BEGIN UPDATE usage SET bytes = bytes - ({xattr_old}); END;
CREATE TRIGGER IF NOT EXISTS usage_max_bytes BEFORE UPDATE OF bytes ON usage
    WHEN NEW.bytes > OLD.bytes AND NEW.bytes > NEW.max_bytes
BEGIN SELECT RAISE(ABORT, 'quota exceeded: bytes'); END;
CREATE TRIGGER IF NOT EXISTS usage_max_files BEFORE UPDATE OF files ON usage
    WHEN NEW.files > OLD.files AND NEW.files > NEW.max_files
BEGIN SELECT RAISE(ABORT, 'quota exceeded: files'); END;
""".format(prop_new=_PROP_BYTES.format(r="NEW"), prop_old=_PROP_BYTES.format(r="OLD"),
           xattr_new=_XATTR_BYTES.format(r="NEW"), xattr_old=_XATTR_BYTES.format(r="OLD")),
      replicated=False)

# The volume's figures, kept like ``usage`` by triggers in the transaction of each change:
# all inodes (the root too) and the sum of their sizes (symlinks count their target), so
# ``stats()`` is O(1) (the block half is ``block_totals``, extents.py). ``version`` is the
# validity marker of every counter of the data dir (these, ``usage`` and ``block_totals``):
# ``COUNTERS_VERSION`` when they are known to match the rows. A data dir written before
# counters existed has no row (and a restore sets 0 while it replays: INSERT OR REPLACE
# fires no delete trigger); ``Tree()`` recounts such a data dir once, ``recount()`` does it
# on demand (fsck --repair).
COUNTERS_VERSION = 1
table("totals", """
CREATE TABLE IF NOT EXISTS totals (
    id INTEGER PRIMARY KEY CHECK (id = 0), version INTEGER NOT NULL,
    inodes INTEGER NOT NULL, logical_bytes INTEGER NOT NULL);
CREATE TRIGGER IF NOT EXISTS totals_inodes_i AFTER INSERT ON inodes
BEGIN UPDATE totals SET inodes = inodes + 1, logical_bytes = logical_bytes + NEW.size; END;
CREATE TRIGGER IF NOT EXISTS totals_inodes_d AFTER DELETE ON inodes
BEGIN UPDATE totals SET inodes = inodes - 1, logical_bytes = logical_bytes - OLD.size; END;
CREATE TRIGGER IF NOT EXISTS totals_inodes_size AFTER UPDATE OF size ON inodes
    WHEN NEW.size IS NOT OLD.size
BEGIN UPDATE totals SET logical_bytes = logical_bytes + NEW.size - OLD.size; END;
""", replicated=False)

# What the counters must equal: one full scan each.
_COUNT_USAGE = ("SELECT COALESCE(SUM(CASE WHEN (mode & 61440) = 32768 THEN size ELSE 0 END), 0) "
                "+ (SELECT COALESCE(SUM(" + _PROP_BYTES.format(r="p") + "), 0) FROM props p) "
                "+ (SELECT COALESCE(SUM(" + _XATTR_BYTES.format(r="x") + "), 0) FROM xattrs x), "
                "COUNT(*) FROM inodes WHERE ino != 1")
_COUNT_TOTALS = "SELECT COUNT(*), COALESCE(SUM(size), 0) FROM inodes"


@contextmanager
def _quota_errors() -> Iterator[None]:
    """A quota trigger's abort, as the core error faces report (507, ENOSPC)."""
    try:
        yield
    except sqlite3.IntegrityError as exc:
        if str(exc).startswith("quota exceeded: "):
            what = str(exc).rsplit(" ", 1)[1]
            raise errors.NoSpace(f"quota exceeded: this volume may hold no more {what}") \
                from None
        raise


_ATTR_COLS = "i.ino, i.mode, i.uid, i.gid, i.nlink, i.size, i.rdev, " \
             "i.atime, i.mtime, i.ctime, i.btime, i.target, i.etag, i.hashes"
# An entry of a directory with the directory's mode: NULL attributes when the name is
# missing, no row when the directory is.
_LOOKUP = (f"SELECT p.mode, {_ATTR_COLS} FROM inodes p "
           "LEFT JOIN dentries d ON d.parent = p.ino AND d.key = ? "
           "LEFT JOIN inodes i ON i.ino = d.ino WHERE p.ino = ?")


@dataclass(slots=True)
class Attr:
    """An inode's attributes; times are nanoseconds since the epoch."""
    ino: int
    mode: int
    uid: int
    gid: int
    nlink: int
    size: int
    rdev: int
    atime: int
    mtime: int
    ctime: int
    btime: int
    target: bytes | None
    etag: str
    hashes: str   # whole-file checksums known for the content, "SHA1:<hex> MD5:<hex>"

    @property
    def is_dir(self) -> bool:
        return st.S_ISDIR(self.mode)

    @property
    def is_file(self) -> bool:
        return st.S_ISREG(self.mode)


def check_name(name: str) -> str:
    """Return the lookup key (NFC) of a valid name; raise ``InvalidName`` otherwise."""
    if not isinstance(name, str) or name in ("", ".", "..") or "/" in name or "\0" in name:
        raise errors.InvalidName(f"invalid name {name!r}")
    try:
        size = len(name.encode("utf-8"))
    except UnicodeEncodeError:
        raise errors.InvalidName(f"name {name!r} is not valid UTF-8") from None
    if size > MAX_NAME_BYTES:
        raise errors.NameTooLong(f"name is {size} bytes, the limit is {MAX_NAME_BYTES}")
    return unicodedata.normalize("NFC", name)


def split_path(path: str) -> list[str]:
    """Split an absolute path into checked names; '' and '/' are the root."""
    names = [p for p in path.split("/") if p]
    for name in names:
        check_name(name)
    return names


class Tree:
    """The namespace of one volume, in the database ``db`` (or a new one at a path)."""

    def __init__(self, db: "Database | str | os.PathLike", block_size: int | None = None):
        self.db = db if isinstance(db, Database) else Database(db)
        self.path = self.db.path
        self.db.error_map = _quota_errors
        self.db.create_tables()
        c = self.db.reader()
        with self.db.exclusive():
            c.execute("BEGIN IMMEDIATE")
            try:
                self._open(c, block_size)
                c.execute("COMMIT")
            except BaseException:
                c.execute("ROLLBACK")
                raise

    def _open(self, c, block_size: int | None) -> None:
        """Create the root of a new tree; recount counters not known to be right (a data
        dir written before they existed, an interrupted restore); clear the limits."""
        if c.execute("SELECT 1 FROM inodes WHERE ino = ?", (ROOT,)).fetchone() is None:
            now = time.time_ns()
            c.execute("INSERT INTO inodes (ino, mode, uid, gid, nlink, atime, mtime, ctime, "
                      "btime) VALUES (?, ?, 0, 0, 2, ?, ?, ?, ?)",
                      (ROOT, st.S_IFDIR | 0o755, now, now, now, now))
            if block_size:
                c.execute("INSERT INTO meta VALUES ('block_size', ?)", (str(block_size),))
        if not self._counters_valid(c):
            self._recount(c)
        c.execute("UPDATE usage SET max_bytes = NULL, max_files = NULL")

    def close(self) -> None:
        self.db.close()

    def meta(self, key: str, default: str | None = None) -> str | None:
        row = self.db.reader().execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else default

    def set_meta(self, key: str, value: str) -> None:
        with self.db.write() as c:
            c.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))

    # -- counters: usage, quota and figures --

    @staticmethod
    def _counters_valid(c) -> bool:
        row = c.execute("SELECT version FROM totals").fetchone()
        return row is not None and row[0] == COUNTERS_VERSION

    @staticmethod
    def _recount(c) -> None:
        """Set every counter from a full scan and mark them valid, inside a write
        transaction. The quota limits stay."""
        usage = c.execute(_COUNT_USAGE).fetchone()
        if c.execute("UPDATE usage SET bytes = ?, files = ?", usage).rowcount == 0:
            c.execute("INSERT INTO usage VALUES (0, ?, ?, NULL, NULL)", usage)
        c.execute("INSERT OR REPLACE INTO totals VALUES (0, ?, ?, ?)",
                  (COUNTERS_VERSION, *c.execute(_COUNT_TOTALS).fetchone()))
        c.execute("INSERT OR REPLACE INTO block_totals VALUES (0, ?, ?, ?)",
                  c.execute(COUNT_BLOCKS).fetchone())

    def recount(self) -> None:
        """Recount every counter from the rows (O(volume)): after a restore, and by fsck."""
        with self.db.write() as c:
            self._recount(c)

    def invalidate_counters(self) -> None:
        """Mark the counters unknown: the next ``Tree()`` recounts unless ``recount`` runs
        first. Inside a change that bypasses the triggers (a restore's replay)."""
        with self.db.write() as c:
            c.execute("UPDATE totals SET version = 0")

    def counters(self) -> dict[str, int]:
        """Every counter as kept (O(1)), read in one transaction."""
        with self.db.snapshot() as c:
            u = c.execute("SELECT bytes, files FROM usage").fetchone() or (None, None)
            t = c.execute("SELECT inodes, logical_bytes FROM totals").fetchone() or (None, None)
            b = c.execute("SELECT blocks, raw_bytes, stored_bytes FROM block_totals").fetchone() \
                or (None, None, None)
        return dict(zip(COUNTER_NAMES, (*u, *t, *b)))

    def count(self) -> dict[str, int]:
        """What every counter must be, from a full scan of the rows in one transaction."""
        with self.db.snapshot() as c:
            values = (*c.execute(_COUNT_USAGE).fetchone(), *c.execute(_COUNT_TOTALS).fetchone(),
                      *c.execute(COUNT_BLOCKS).fetchone())
        return dict(zip(COUNTER_NAMES, values))

    # -- usage and quota --

    def usage(self) -> dict[str, int | None]:
        """Counters and limits in O(1): bytes, files, max_bytes, max_files (None: none)."""
        row = self.db.reader().execute(
            "SELECT bytes, files, max_bytes, max_files FROM usage").fetchone()
        return dict(zip(("bytes", "files", "max_bytes", "max_files"), row))

    def set_limits(self, max_bytes: int | None, max_files: int | None) -> None:
        """Refuse (``NoSpace``) any change that grows past a limit; shrinking is always
        allowed, also while over a limit lowered below the usage."""
        with self.db.write() as c:
            c.execute("UPDATE usage SET max_bytes = ?, max_files = ?", (max_bytes, max_files))

    # -- reading the namespace --

    def getattr(self, ino: int) -> Attr:
        row = self.db.reader().execute(f"SELECT {_ATTR_COLS} FROM inodes i WHERE i.ino = ?",
                                   (ino,)).fetchone()
        if row is None:
            raise errors.NotFound(f"inode {ino} does not exist")
        return Attr(*row)

    def lookup(self, parent: int, name: str) -> Attr:
        attr = self.find(parent, name)
        if attr is None:
            raise errors.NotFound(f"{name!r} not found")
        return attr

    def find(self, parent: int, name: str) -> Attr | None:
        """The entry ``name`` of directory ``parent``, None if it has none; ``NotFound``
        or ``NotADirectory`` if ``parent`` is gone or not a directory. One statement."""
        key = check_name(name)
        row = self.db.reader().execute(_LOOKUP, (key, parent)).fetchone()
        if row is None:
            raise errors.NotFound(f"directory inode {parent} does not exist")
        if not st.S_ISDIR(row[0]):
            raise errors.NotADirectory(f"inode {parent} is not a directory")
        return None if row[1] is None else Attr(*row[1:])

    def resolve(self, path: str) -> Attr:
        """The inode at an absolute path (symlinks are not followed)."""
        names = split_path(path)
        if not names:
            return self.getattr(ROOT)
        attr = None   # the root is a directory: its first lookup needs no attributes
        for name in names:
            if attr is not None and not attr.is_dir:
                raise errors.NotADirectory(f"{path}: a component is not a directory")
            attr = self.lookup(ROOT if attr is None else attr.ino, name)
        return attr

    def readdir(self, ino: int, after: str | None = None,
                limit: int = -1) -> list[tuple[str, Attr]]:
        """Children of a directory with their attributes, in name order, in one query.

        ``after`` is the NFC key of the last entry seen, so a listing can go on in pages that
        stay stable while entries change.
        """
        c = self.db.reader()
        rows = c.execute(
            f"SELECT d.name, d.key, {_ATTR_COLS} FROM dentries d JOIN inodes i ON i.ino = d.ino "
            "WHERE d.parent = ? AND d.key > ? ORDER BY d.key LIMIT ?",
            (ino, after or "", limit)).fetchall()
        if not rows:
            self._check_dir(c, ino)
        return [(r[0], Attr(*r[2:])) for r in rows]

    def count_below(self, ino: int, limit: int) -> int:
        """How many entries lie below a directory, counting no further than ``limit + 1``."""
        row = self.db.reader().execute(
            "WITH RECURSIVE below(ino) AS (SELECT ino FROM dentries WHERE parent = ? "
            "UNION ALL SELECT d.ino FROM dentries d JOIN below b ON d.parent = b.ino) "
            "SELECT COUNT(*) FROM (SELECT 1 FROM below LIMIT ?)", (ino, limit + 1)).fetchone()
        return row[0]

    def entry_key(self, name: str) -> str:
        return check_name(name)

    def parent_of(self, ino: int) -> int:
        """The parent directory of a directory (directories have exactly one entry)."""
        if ino == ROOT:
            return ROOT
        row = self.db.reader().execute("SELECT parent FROM dentries WHERE ino = ?", (ino,)).fetchone()
        if row is None:
            raise errors.NotFound(f"inode {ino} has no parent")
        return row[0]

    def path_of(self, ino: int) -> str:
        names = []
        c = self.db.reader()
        while ino != ROOT:
            row = c.execute("SELECT parent, name FROM dentries WHERE ino = ?", (ino,)).fetchone()
            if row is None:
                raise errors.NotFound(f"inode {ino} is not linked")
            ino, name = row
            names.append(name)
        return "/" + "/".join(reversed(names))

    def _check_dir(self, c: sqlite3.Connection, ino: int) -> None:
        row = c.execute("SELECT mode FROM inodes WHERE ino = ?", (ino,)).fetchone()
        if row is None:
            raise errors.NotFound(f"directory inode {ino} does not exist")
        if not st.S_ISDIR(row[0]):
            raise errors.NotADirectory(f"inode {ino} is not a directory")

    # -- changing the namespace --

    def mknod(self, parent: int, name: str, mode: int, uid: int = 0, gid: int = 0,
              rdev: int = 0, target: bytes | None = None, now: int | None = None) -> Attr:
        """Create an inode of any type (``mode`` includes the S_IF* bits) under ``parent``."""
        return self._insert(parent, name, mode, uid, gid, rdev, target, now)

    def create_with_content(self, parent: int, name: str, size: int, etag: str,
                            hashes: str = "", mtime: int | None = None,
                            mode: int = 0o644, *, checked: bool = False) -> Attr:
        """Create a regular file that already has its size, content etag and times (its
        extents are the caller's, in the same transaction). One insert where ``create`` and
        a content update would take two rows and two journal rows. ``checked``: the caller's
        write transaction found ``parent`` a directory without ``name`` (``find``)."""
        return self._insert(parent, name, st.S_IFREG | (mode & 0o7777), size=size,
                            etag=etag, hashes=hashes, mtime=mtime, checked=checked)

    def _insert(self, parent: int, name: str, mode: int, uid: int = 0, gid: int = 0,
                rdev: int = 0, target: bytes | None = None, now: int | None = None, *,
                size: int | None = None, etag: str = "", hashes: str = "",
                mtime: int | None = None, checked: bool = False) -> Attr:
        """The new inode's attributes, as inserted (no trigger changes them)."""
        key = check_name(name)
        now = now or time.time_ns()
        is_dir = st.S_ISDIR(mode)
        if size is None:
            size = len(target) if target else 0
        row = (mode, uid, gid, 2 if is_dir else 1, size, rdev, now, mtime or now, now, now,
               target, etag, hashes)
        with self.db.write() as c:
            if not checked:
                self._check_dir(c, parent)
                if c.execute("SELECT 1 FROM dentries WHERE parent = ? AND key = ?",
                             (parent, key)).fetchone():
                    raise errors.Exists(f"{name!r} exists")
            ino = c.execute(
                "INSERT INTO inodes (mode, uid, gid, nlink, size, rdev, atime, mtime, ctime, "
                "btime, target, etag, hashes) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                row).lastrowid
            c.execute("INSERT INTO dentries VALUES (?, ?, ?, ?)", (parent, key, name, ino))
            self._touch_dir(c, parent, now, nlink_delta=1 if is_dir else 0)
        return Attr(ino, *row)

    def mkdir(self, parent: int, name: str, mode: int = 0o755, **kw) -> Attr:
        return self.mknod(parent, name, st.S_IFDIR | (mode & 0o7777), **kw)

    def create(self, parent: int, name: str, mode: int = 0o644, **kw) -> Attr:
        return self.mknod(parent, name, st.S_IFREG | (mode & 0o7777), **kw)

    def symlink(self, parent: int, name: str, target: bytes, **kw) -> Attr:
        return self.mknod(parent, name, st.S_IFLNK | 0o777, target=target, **kw)

    def link(self, ino: int, parent: int, name: str) -> Attr:
        """A hard link: one more entry for a non-directory inode."""
        key = check_name(name)
        now = time.time_ns()
        with self.db.write() as c:
            self._check_dir(c, parent)
            if st.S_ISDIR(self.getattr(ino).mode):
                raise errors.NotPermitted("hard links to directories are not allowed")
            if c.execute("SELECT 1 FROM dentries WHERE parent = ? AND key = ?",
                         (parent, key)).fetchone():
                raise errors.Exists(f"{name!r} exists")
            c.execute("INSERT INTO dentries VALUES (?, ?, ?, ?)", (parent, key, name, ino))
            c.execute("UPDATE inodes SET nlink = nlink + 1, ctime = ? WHERE ino = ?", (now, ino))
            self._touch_dir(c, parent, now)
        return self.getattr(ino)

    def _touch_dir(self, c, ino: int, now: int, nlink_delta: int = 0) -> None:
        c.execute("UPDATE inodes SET mtime = ?, ctime = ?, nlink = nlink + ? WHERE ino = ?",
                  (now, now, nlink_delta, ino))

    def _existing(self, c, parent: int, key: str, name: str) -> tuple[int, int]:
        """(ino, mode) of an entry that must exist in directory ``parent``."""
        self._check_dir(c, parent)
        entry = self._entry(c, parent, key)
        if entry is None:
            raise errors.NotFound(f"{name!r} not found")
        return entry

    def _entry(self, c, parent: int, key: str) -> tuple[int, int] | None:
        """(ino, mode) of the entry, or None."""
        return c.execute("SELECT d.ino, i.mode FROM dentries d JOIN inodes i ON i.ino = d.ino "
                         "WHERE d.parent = ? AND d.key = ?", (parent, key)).fetchone()

    def unlink(self, parent: int, name: str, keep: Iterable[int] = ()) -> int:
        """Remove a non-directory entry; return its inode. The inode and its data go with the
        last link unless it is in ``keep`` (open handles), which the caller purges later."""
        key = check_name(name)
        now = time.time_ns()
        with self.db.write() as c:
            ino, mode = self._existing(c, parent, key, name)
            if st.S_ISDIR(mode):
                raise errors.IsADirectory(f"{name!r} is a directory")
            c.execute("DELETE FROM dentries WHERE parent = ? AND key = ?", (parent, key))
            self._drop_link(c, ino, now, keep)
            self._touch_dir(c, parent, now)
        return ino

    def rmdir(self, parent: int, name: str, keep: Iterable[int] = ()) -> int:
        """Remove an empty directory; return its inode. One in ``keep`` (open) stays, empty
        with no link, until the caller purges it, as ``unlink`` keeps a file."""
        key = check_name(name)
        now = time.time_ns()
        with self.db.write() as c:
            ino, mode = self._existing(c, parent, key, name)
            if not st.S_ISDIR(mode):
                raise errors.NotADirectory(f"{name!r} is not a directory")
            if c.execute("SELECT 1 FROM dentries WHERE parent = ? LIMIT 1", (ino,)).fetchone():
                raise errors.NotEmpty(f"directory {name!r} is not empty")
            c.execute("DELETE FROM dentries WHERE parent = ? AND key = ?", (parent, key))
            self._drop_dir(c, ino, now, keep)
            self._touch_dir(c, parent, now, nlink_delta=-1)
        return ino

    def _drop_dir(self, c, ino: int, now: int, keep: Iterable[int]) -> None:
        """A removed directory: an fstat of an open one still answers (nlink 0, as on ext4)."""
        if ino in keep:
            c.execute("UPDATE inodes SET nlink = 0, ctime = ? WHERE ino = ?", (now, ino))
        else:
            self._purge(c, ino)

    def remove_tree(self, parent: int, name: str, keep: Iterable[int] = ()) -> int:
        """Remove an entry and, for a directory, everything below it, in one transaction.
        Returns how many entries went. Files with other links or open handles (``keep``)
        keep their inode as ``unlink`` does."""
        key = check_name(name)
        now = time.time_ns()
        keep = set(keep)
        with self.db.write() as c:
            entry = self._entry(c, parent, key)
            if entry is None:
                raise errors.NotFound(f"{name!r} not found")
            c.execute("DELETE FROM dentries WHERE parent = ? AND key = ?", (parent, key))
            count, dirs = 1, 0
            todo = [entry]
            while todo:
                ino, mode = todo.pop()
                if st.S_ISDIR(mode):
                    dirs += ino == entry[0]
                    children = c.execute(
                        "SELECT d.ino, i.mode FROM dentries d JOIN inodes i ON i.ino = d.ino "
                        "WHERE d.parent = ?", (ino,)).fetchall()
                    c.execute("DELETE FROM dentries WHERE parent = ?", (ino,))
                    count += len(children)
                    todo.extend(children)
                    self._purge(c, ino)
                else:
                    self._drop_link(c, ino, now, keep)
            self._touch_dir(c, parent, now, nlink_delta=-dirs)
        return count

    def _drop_link(self, c, ino: int, now: int, keep: Iterable[int]) -> None:
        c.execute("UPDATE inodes SET nlink = nlink - 1, ctime = ? WHERE ino = ?", (now, ino))
        nlink = c.execute("SELECT nlink FROM inodes WHERE ino = ?", (ino,)).fetchone()[0]
        if nlink <= 0 and ino not in keep:
            self._purge(c, ino)

    def purge_if_unlinked(self, ino: int) -> bool:
        """Delete an inode whose last link went while it was open; True if it was deleted."""
        return self.purge_if_unlinked_many([ino]) == 1

    def purge_if_unlinked_many(self, inos: list[int]) -> int:
        """``purge_if_unlinked`` for many inodes, found with a query per 500 (and no write
        transaction in the common case: none of them unlinked); how many went."""
        gone = 0
        with self.db.exclusive():   # no write transaction of this process is half done inside
            c = self.db.reader()
            for i in range(0, len(inos), 500):
                chunk = inos[i:i + 500]
                marks = ",".join("?" * len(chunk))
                dead = [r[0] for r in c.execute(
                    f"SELECT ino FROM inodes WHERE nlink <= 0 AND ino IN ({marks})", chunk)]
                if dead:
                    with self.db.write() as w:
                        for ino in dead:
                            self._purge(w, ino)
                    gone += len(dead)
        return gone

    def purge_orphans(self) -> int:
        """Delete every unlinked inode (left by a crash while open); return how many."""
        with self.db.write() as c:
            inos = [r[0] for r in c.execute("SELECT ino FROM inodes WHERE nlink <= 0")]
            for ino in inos:
                self._purge(c, ino)
        return len(inos)

    def _purge(self, c, ino: int) -> None:
        purge_content(c, ino)
        for name in ("props", "xattrs", "inodes"):
            c.execute(f"DELETE FROM {name} WHERE ino = ?", (ino,))

    def rename(self, old_parent: int, old_name: str, new_parent: int, new_name: str,
               replace: bool = True, exchange: bool = False, keep: Iterable[int] = ()) -> int | None:
        """Move an entry in one transaction, in O(1) for a directory of any size.

        Replaces an existing target when ``replace`` (a directory only by an empty directory),
        or swaps the two with ``exchange``. Returns the replaced inode, if any.
        """
        old_key, new_key = check_name(old_name), check_name(new_name)
        now = time.time_ns()
        with self.db.write() as c:
            self._check_dir(c, old_parent)
            self._check_dir(c, new_parent)
            src = self._entry(c, old_parent, old_key)
            if src is None:
                raise errors.NotFound(f"{old_name!r} not found")
            ino, mode = src
            dst = self._entry(c, new_parent, new_key)
            if st.S_ISDIR(mode) and old_parent != new_parent:
                self._check_not_ancestor(c, ino, new_parent)
            if exchange:
                return self._exchange(c, old_parent, old_key, src, new_parent, new_key, dst, now)
            if dst is not None and dst[0] == ino:
                if old_parent == new_parent and old_key == new_key:
                    c.execute("UPDATE dentries SET name = ? WHERE parent = ? AND key = ?",
                              (new_name, new_parent, new_key))
                return None  # renaming a link onto itself does nothing
            replaced = self._remove_target(c, new_parent, new_key, new_name, mode, dst, replace,
                                           now, keep)
            c.execute("UPDATE dentries SET parent = ?, key = ?, name = ? "
                      "WHERE parent = ? AND key = ?",
                      (new_parent, new_key, new_name, old_parent, old_key))
            dirs = 1 if st.S_ISDIR(mode) else 0
            self._touch_dir(c, old_parent, now, -dirs)
            self._touch_dir(c, new_parent, now, dirs)
            c.execute("UPDATE inodes SET ctime = ? WHERE ino = ?", (now, ino))
        return replaced

    def _remove_target(self, c, parent, key, name, src_mode, dst, replace, now, keep):
        if dst is None:
            return None
        if not replace:
            raise errors.Exists(f"{name!r} exists")
        dst_ino, dst_mode = dst
        if st.S_ISDIR(dst_mode):
            if not st.S_ISDIR(src_mode):
                raise errors.IsADirectory(f"{name!r} is a directory")
            if c.execute("SELECT 1 FROM dentries WHERE parent = ? LIMIT 1", (dst_ino,)).fetchone():
                raise errors.NotEmpty(f"directory {name!r} is not empty")
            c.execute("DELETE FROM dentries WHERE parent = ? AND key = ?", (parent, key))
            self._drop_dir(c, dst_ino, now, keep)
            self._touch_dir(c, parent, now, -1)
        else:
            if st.S_ISDIR(src_mode):
                raise errors.NotADirectory(f"{name!r} is not a directory")
            c.execute("DELETE FROM dentries WHERE parent = ? AND key = ?", (parent, key))
            self._drop_link(c, dst_ino, now, keep)
        return dst_ino

    def _exchange(self, c, old_parent, old_key, src, new_parent, new_key, dst, now):
        if dst is None:
            raise errors.NotFound("exchange target not found")
        if st.S_ISDIR(dst[1]) and old_parent != new_parent:
            self._check_not_ancestor(c, dst[0], old_parent)
        # Swap the inodes the two entries point to; names stay where they are.
        c.execute("UPDATE dentries SET ino = ? WHERE parent = ? AND key = ?",
                  (dst[0], old_parent, old_key))
        c.execute("UPDATE dentries SET ino = ? WHERE parent = ? AND key = ?",
                  (src[0], new_parent, new_key))
        delta = (1 if st.S_ISDIR(src[1]) else 0) - (1 if st.S_ISDIR(dst[1]) else 0)
        self._touch_dir(c, old_parent, now, -delta)
        self._touch_dir(c, new_parent, now, delta)
        c.execute("UPDATE inodes SET ctime = ? WHERE ino IN (?, ?)", (now, src[0], dst[0]))
        return None

    def _check_not_ancestor(self, c, ino: int, start: int) -> None:
        cur = start
        while cur != ROOT:
            if cur == ino:
                raise errors.InvalidArgument("cannot move a directory into itself")
            cur = c.execute("SELECT parent FROM dentries WHERE ino = ?", (cur,)).fetchone()[0]
        if ino == ROOT:
            raise errors.InvalidArgument("cannot move the root")

    def setattr(self, ino: int, **fields) -> Attr:
        """Set any of mode, uid, gid, atime, mtime, ctime, btime (ctime defaults to now)."""
        allowed = {"mode", "uid", "gid", "atime", "mtime", "ctime", "btime", "rdev"}
        if not set(fields) <= allowed:
            raise errors.InvalidArgument(f"cannot set {sorted(set(fields) - allowed)}")
        fields.setdefault("ctime", time.time_ns())
        cols = ", ".join(f"{k} = ?" for k in fields)
        with self.db.write() as c:
            if c.execute(f"UPDATE inodes SET {cols} WHERE ino = ?",
                         (*fields.values(), ino)).rowcount == 0:
                raise errors.NotFound(f"inode {ino} does not exist")
        return self.getattr(ino)

    # -- dead properties and xattrs --

    def props(self, ino: int) -> dict[tuple[str, str], bytes]:
        rows = self.db.reader().execute("SELECT ns, name, value FROM props WHERE ino = ?", (ino,))
        return {(ns, name): value for ns, name, value in rows}

    def set_props(self, ino: int, changes: dict[tuple[str, str], bytes | None]) -> None:
        """Set (value) or remove (None) several properties in one transaction; ``NoSpace``
        past the quota or ``MAX_META_PER_INODE``. A replaced row is deleted first, so the
        usage triggers see it go (REPLACE alone fires no delete trigger)."""
        with self.db.write() as c, _quota_errors():
            for (ns, name), value in changes.items():
                c.execute("DELETE FROM props WHERE ino = ? AND ns = ? AND name = ?",
                          (ino, ns, name))
                if value is not None:
                    c.execute("INSERT INTO props VALUES (?, ?, ?, ?)", (ino, ns, name, value))
            self._check_meta_size(c, ino)

    def xattrs(self, ino: int) -> dict[str, bytes]:
        rows = self.db.reader().execute("SELECT name, value FROM xattrs WHERE ino = ?", (ino,))
        return dict(rows.fetchall())

    def set_xattr(self, ino: int, name: str, value: bytes | None,
                  create: bool = False, replace: bool = False) -> None:
        """Set or (value None) remove an xattr; ``create``/``replace`` as XATTR_CREATE/REPLACE."""
        with self.db.write() as c:
            exists = c.execute("SELECT 1 FROM xattrs WHERE ino = ? AND name = ?",
                               (ino, name)).fetchone() is not None
            if (create and exists):
                raise errors.Exists(f"xattr {name!r} exists")
            if (replace or value is None) and not exists:
                raise errors.NoAttribute(f"xattr {name!r} not set")
            with _quota_errors():
                c.execute("DELETE FROM xattrs WHERE ino = ? AND name = ?", (ino, name))
                if value is not None:
                    c.execute("INSERT INTO xattrs VALUES (?, ?, ?)", (ino, name, value))
                self._check_meta_size(c, ino)
            c.execute("UPDATE inodes SET ctime = ? WHERE ino = ?", (time.time_ns(), ino))

    @staticmethod
    def _check_meta_size(c, ino: int) -> None:
        held = c.execute(
            "SELECT (SELECT COALESCE(SUM(" + _PROP_BYTES.format(r="p") + "), 0) FROM props p "
            "WHERE p.ino = ?1) + (SELECT COALESCE(SUM(" + _XATTR_BYTES.format(r="x") + "), 0) "
            "FROM xattrs x WHERE x.ino = ?1)", (ino,)).fetchone()[0]
        if held > MAX_META_PER_INODE:
            raise errors.NoSpace(f"properties and xattrs of one file may hold at most "
                                 f"{MAX_META_PER_INODE} bytes")

    def stats(self) -> dict[str, int]:
        """Inodes (the root too) and the sum of their sizes, in O(1) (``totals``)."""
        row = self.db.reader().execute("SELECT inodes, logical_bytes FROM totals").fetchone()
        return {"inodes": row[0], "logical_bytes": row[1]}
