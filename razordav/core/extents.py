"""File contents in the metadata: the extent map (``(inode, index) -> block name``; a missing
index is a hole) and the blocks with their reference counts (how many extents name each).

Owns the ``extents`` and ``blocks`` tables (both replicated); publishing a file's new block
list, sharing one file's blocks with another, and the bookkeeping of garbage (blocks no
extent names any more). Never touches block bytes (blocks.py, cache.py) or names (tree.py).

Threading: as ``Database``: any thread; changes in one write transaction each.
"""

from __future__ import annotations

import collections
import stat as st
import time
from typing import TYPE_CHECKING, Iterable

from . import errors
from . import packs
from .db import Database, table

if TYPE_CHECKING:
    from .tree import Attr, Tree

table("extents", """
CREATE TABLE IF NOT EXISTS extents (
    ino INTEGER NOT NULL, idx INTEGER NOT NULL, hash BLOB NOT NULL,
    PRIMARY KEY (ino, idx)) WITHOUT ROWID;
""", ("ino", "idx", "hash"), ("ino", "idx"), ("hash",))
table("blocks", """
CREATE TABLE IF NOT EXISTS blocks (
    hash BLOB PRIMARY KEY, refs INTEGER NOT NULL, raw_size INTEGER NOT NULL,
    stored_size INTEGER NOT NULL) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS blocks_unreferenced ON blocks (refs) WHERE refs = 0;
""", ("hash", "refs", "raw_size", "stored_size"), ("hash",), ("hash",))
# The block figures, kept by triggers in the transaction of each change (``stats()`` is
# O(1)); local and derived, valid while tree.py's ``totals`` marker says so.
table("block_totals", """
CREATE TABLE IF NOT EXISTS block_totals (
    id INTEGER PRIMARY KEY CHECK (id = 0), blocks INTEGER NOT NULL,
    raw_bytes INTEGER NOT NULL, stored_bytes INTEGER NOT NULL);
CREATE TRIGGER IF NOT EXISTS block_totals_i AFTER INSERT ON blocks
BEGIN UPDATE block_totals SET blocks = blocks + 1, raw_bytes = raw_bytes + NEW.raw_size,
    stored_bytes = stored_bytes + NEW.stored_size; END;
CREATE TRIGGER IF NOT EXISTS block_totals_d AFTER DELETE ON blocks
BEGIN UPDATE block_totals SET blocks = blocks - 1, raw_bytes = raw_bytes - OLD.raw_size,
    stored_bytes = stored_bytes - OLD.stored_size; END;
CREATE TRIGGER IF NOT EXISTS block_totals_u AFTER UPDATE OF raw_size, stored_size ON blocks
BEGIN UPDATE block_totals SET raw_bytes = raw_bytes + NEW.raw_size - OLD.raw_size,
    stored_bytes = stored_bytes + NEW.stored_size - OLD.stored_size; END;
""", replicated=False)
# What ``block_totals`` must hold: a full scan.
COUNT_BLOCKS = ("SELECT COUNT(*), COALESCE(SUM(raw_size), 0), COALESCE(SUM(stored_size), 0) "
                "FROM blocks")


def purge_content(c, ino: int) -> None:
    """Drop an inode's extents and their references, inside a write transaction."""
    olds = c.execute("SELECT hash FROM extents WHERE ino = ?", (ino,)).fetchall()
    c.executemany("UPDATE blocks SET refs = refs - 1 WHERE hash = ?", olds)
    c.execute("DELETE FROM extents WHERE ino = ?", (ino,))


class Extents:
    """The contents of the files of ``tree`` (same database)."""

    def __init__(self, tree: "Tree"):
        self.tree = tree
        self.db: Database = tree.db
        self.db.create_tables()

    def extents(self, ino: int) -> dict[int, bytes]:
        rows = self.db.reader().execute("SELECT idx, hash FROM extents WHERE ino = ?", (ino,))
        return dict(rows.fetchall())

    def add_block(self, c, digest: bytes, raw_size: int, stored_size: int) -> None:
        """Record a block (with no references yet) inside a write transaction."""
        c.execute("INSERT OR IGNORE INTO blocks VALUES (?, 0, ?, ?)",
                  (digest, raw_size, stored_size))

    def set_content(self, ino: int, size: int, changes: dict[int, bytes | None],
                    etag: str, truncate_from: int | None = None,
                    blocks: Iterable[tuple[bytes, int, int]] = (), mtime: int | None = None,
                    expect_etag: str | None = None, hashes: str = "") -> Attr:
        """Publish a file's new content in one transaction.

        ``changes`` maps block index to its new hash (None: a hole); ``truncate_from`` drops
        every extent at that index and beyond first. ``blocks`` are (hash, raw, stored) sizes
        of blocks new to the volume. Reference counts follow. With ``expect_etag`` the change
        is refused (``Conflict``) if the file changed since that etag was read.
        """
        now = time.time_ns()
        with self.db.write() as c:
            row = c.execute("SELECT mode, etag FROM inodes WHERE ino = ?", (ino,)).fetchone()
            if row is None:
                raise errors.NotFound(f"inode {ino} does not exist")
            if not st.S_ISREG(row[0]):
                raise errors.IsADirectory(f"inode {ino} is not a regular file")
            if expect_etag is not None and row[1] != expect_etag:
                raise errors.Conflict("the file changed while it was being written")
            for digest, raw, stored in blocks:
                self.add_block(c, digest, raw, stored)
            if truncate_from is not None:
                olds = c.execute("SELECT hash FROM extents WHERE ino = ? AND idx >= ?",
                                 (ino, truncate_from)).fetchall()
                c.executemany("UPDATE blocks SET refs = refs - 1 WHERE hash = ?", olds)
                c.execute("DELETE FROM extents WHERE ino = ? AND idx >= ?", (ino, truncate_from))
            for idx, digest in changes.items():
                old = c.execute("SELECT hash FROM extents WHERE ino = ? AND idx = ?",
                                (ino, idx)).fetchone()
                if old is not None:
                    c.execute("UPDATE blocks SET refs = refs - 1 WHERE hash = ?", old)
                if digest is None:
                    c.execute("DELETE FROM extents WHERE ino = ? AND idx = ?", (ino, idx))
                else:
                    c.execute("INSERT OR REPLACE INTO extents VALUES (?, ?, ?)", (ino, idx, digest))
                    c.execute("UPDATE blocks SET refs = refs + 1 WHERE hash = ?", (digest,))
            mtime = mtime or now
            c.execute("UPDATE inodes SET size = ?, etag = ?, hashes = ?, mtime = ?, ctime = ? "
                      "WHERE ino = ?", (size, etag, hashes, mtime, now, ino))
        return self.tree.getattr(ino)

    def add_content(self, ino: int, extents: dict[int, bytes],
                    blocks: Iterable[tuple[bytes, int, int]] = ()) -> None:
        """The extents of a file that has none yet (just created), inside the caller's write
        transaction: one insert per extent, one per block (``blocks`` new to the volume,
        as for ``set_content``, come in with their references)."""
        sizes = {digest: (raw, stored) for digest, raw, stored in blocks}
        uses = collections.Counter(extents.values())
        with self.db.write() as c:
            # Blocks first: the journal ships a prefix of rows that stops before a block
            # still waiting for upload, so no extent may come before its block's row.
            for digest, n in uses.items():
                if digest in sizes:   # another writer may have committed it meanwhile
                    c.execute("INSERT INTO blocks VALUES (?, ?, ?, ?) ON CONFLICT (hash) "
                              "DO UPDATE SET refs = refs + excluded.refs",
                              (digest, n, *sizes[digest]))
                else:
                    c.execute("UPDATE blocks SET refs = refs + ? WHERE hash = ?", (n, digest))
            for digest in sizes.keys() - uses.keys():   # stored, then not used: garbage
                self.add_block(c, digest, *sizes[digest])
            c.executemany("INSERT INTO extents VALUES (?, ?, ?)",
                          [(ino, idx, digest) for idx, digest in extents.items()])

    def copy_content(self, src: int, dst: int) -> Attr:
        """Make ``dst`` share ``src``'s blocks (O(blocks) rows, no data copied)."""
        now = time.time_ns()
        with self.db.write() as c:
            size, etag, hashes = c.execute("SELECT size, etag, hashes FROM inodes WHERE ino = ?",
                                           (src,)).fetchone()
            purge_content(c, dst)
            c.execute("INSERT INTO extents SELECT ?, idx, hash FROM extents WHERE ino = ?",
                      (dst, src))
            c.executemany("UPDATE blocks SET refs = refs + 1 WHERE hash = ?",
                          c.execute("SELECT hash FROM extents WHERE ino = ?", (src,)).fetchall())
            c.execute("UPDATE inodes SET size = ?, etag = ?, hashes = ?, mtime = ?, ctime = ? "
                      "WHERE ino = ?", (size, etag, hashes, now, now, dst))
        return self.tree.getattr(dst)

    def unreferenced_blocks(self, limit: int = 1000) -> list[bytes]:
        rows = self.db.reader().execute("SELECT hash FROM blocks WHERE refs = 0 LIMIT ?", (limit,))
        return [r[0] for r in rows]

    def forget_blocks(self, digests: list[bytes]) -> list[bytes]:
        """Delete block rows that are still unreferenced, with their places in packs (the
        pack is marked for the repacker); return the ones deleted."""
        gone = []
        with self.db.write() as c:
            for d in digests:
                if c.execute("DELETE FROM blocks WHERE hash = ? AND refs = 0", (d,)).rowcount:
                    gone.append(d)
            packs.forget(c, gone)
        return gone

    def block_refs_row(self, digest: bytes) -> bool:
        """Whether the volume knows the block (stored, or queued for upload)."""
        return self.db.reader().execute("SELECT 1 FROM blocks WHERE hash = ?",
                                    (digest,)).fetchone() is not None

    def snapshot_content(self, ino: int) -> tuple["Attr", dict[int, bytes]]:
        """Attributes and extent map of a file, read in one transaction (never a mix)."""
        with self.db.snapshot():
            return self.tree.getattr(ino), self.extents(ino)

    def block_sizes(self, digest: bytes) -> tuple[int, int] | None:
        """(raw size, stored size) of a known block."""
        row = self.db.reader().execute("SELECT raw_size, stored_size FROM blocks WHERE hash = ?",
                                       (digest,)).fetchone()
        return None if row is None else (row[0], row[1])

    def block_refs(self, digest: bytes) -> int:
        row = self.db.reader().execute("SELECT refs FROM blocks WHERE hash = ?", (digest,)).fetchone()
        return row[0] if row else 0

    def stats(self) -> dict[str, int]:
        """Block count and sizes, in O(1) (``block_totals``)."""
        blocks, raw, stored = self.db.reader().execute(
            "SELECT blocks, raw_bytes, stored_bytes FROM block_totals").fetchone()
        return {"blocks": blocks, "block_raw_bytes": raw, "block_stored_bytes": stored}
