"""The pack format: many small blocks in one object, with its own index.

A pack is the stored forms of its blocks (each exactly the block object ``blocks.py``
writes: header and payload, verified as on its own) one after the other, then an index and
a fixed-size trailer:

    block 0 | block 1 | ... | index | trailer

    index entry (44 bytes):  block name (SHA-256, 32) | offset u64 | length u32
    trailer (32 bytes):      magic "RZPK" | version u16 | flags u16 | entries u32 |
                             index offset u64 | CRC-32 of the index u32 | reserved u32 |
                             magic "KPZR"

A reader finds the index from the last 32 bytes alone (a ranged GET), so ``fsck`` and
``restore`` can rebuild the block -> (pack, offset, length) map from the bucket even when
the metadata and the pack disagree; a block is read with a ranged GET of its own bytes.
Versioned like every format here: a newer version is refused with a clear error, never
misread.

Also owns where each packed block lives: the replicated tables ``packs`` (one row per pack
in the bucket: its id and the bytes of its blocks) and ``packed`` (block -> pack, offset,
length), shipped with the rest of the metadata, so ``restore`` brings them back; a block
with no ``packed`` row is one object of its own (``blocks.block_key``). Building packs is
the cache's uploader's work, rewriting them ``repack.py``'s. Threading: pure functions, a
builder owned by one thread, and ``PackMap``, safe from any thread (as ``Database``).
"""

from __future__ import annotations

import logging
import os
import struct
import zlib
from dataclasses import dataclass

from . import errors
from .db import Database, table

log = logging.getLogger(__name__)

MAGIC, END_MAGIC = b"RZPK", b"KPZR"
FORMAT_VERSION = 1
ENTRY = struct.Struct(">32sQI")
TRAILER = struct.Struct(">4sHHIQII4s")
PREFIX = "packs/"


def pack_key(pack_id: str) -> str:
    """``packs/<h0h1>/<pack-id>``: spread over 256 prefixes as blocks are."""
    return f"{PREFIX}{pack_id[:2]}/{pack_id}"


@dataclass(frozen=True)
class Entry:
    name: bytes          # the block's SHA-256
    offset: int
    length: int


class PackBuilder:
    """Collects stored blocks; ``finish()`` returns the pack's bytes and its entries."""

    def __init__(self):
        self._parts: list[bytes] = []
        self.entries: list[Entry] = []
        self.size = 0
        self._names: set[bytes] = set()

    def add(self, name: bytes, stored: bytes) -> Entry | None:
        """Append one block's stored form; None if the pack has it already."""
        if len(name) != 32:
            raise ValueError("a block name is a 32-byte SHA-256")
        if name in self._names:
            return None
        entry = Entry(name, self.size, len(stored))
        self._parts.append(stored)
        self.entries.append(entry)
        self._names.add(name)
        self.size += len(stored)
        return entry

    def __len__(self) -> int:
        return len(self.entries)

    def finish(self) -> bytes:
        return b"".join(self._parts) + tail(self.entries, self.size)


def tail(entries: list[Entry], size: int) -> bytes:
    """The index and trailer that follow ``size`` bytes of blocks."""
    index = b"".join(ENTRY.pack(e.name, e.offset, e.length) for e in entries)
    return index + TRAILER.pack(MAGIC, FORMAT_VERSION, 0, len(entries), size,
                                zlib.crc32(index), 0, END_MAGIC)


def read_trailer(tail: bytes, pack_size: int) -> tuple[int, int, int]:
    """(entries, index offset, index CRC) from the last ``TRAILER.size`` bytes of a pack of
    ``pack_size`` bytes; ``Corrupt`` if they are not a trailer this razordav reads."""
    if len(tail) < TRAILER.size:
        raise errors.Corrupt("pack too short for a trailer")
    magic, version, _flags, count, index_at, crc, _res, end = \
        TRAILER.unpack(tail[-TRAILER.size:])
    if magic != MAGIC or end != END_MAGIC:
        raise errors.Corrupt("not a razordav pack (no trailer)")
    if version > FORMAT_VERSION:
        raise errors.Corrupt(f"pack format {version} is newer than this razordav")
    if index_at + count * ENTRY.size + TRAILER.size != pack_size:
        raise errors.Corrupt("pack trailer does not match the pack's size")
    return count, index_at, crc


def read_index(index: bytes, count: int, crc: int) -> list[Entry]:
    """The entries of an index (its bytes as the trailer locates them)."""
    if len(index) != count * ENTRY.size or zlib.crc32(index) != crc:
        raise errors.Corrupt("pack index damaged (length or CRC)")
    entries = [Entry(*ENTRY.unpack_from(index, i * ENTRY.size)) for i in range(count)]
    end = 0
    for e in entries:
        if e.offset < end:
            raise errors.Corrupt("pack index entries overlap")
        end = e.offset + e.length
    return entries


def parse(data: bytes) -> list[Entry]:
    """The entries of a whole pack."""
    count, index_at, crc = read_trailer(data[-TRAILER.size:], len(data))
    entries = read_index(data[index_at:index_at + count * ENTRY.size], count, crc)
    if entries and entries[-1].offset + entries[-1].length > index_at:
        raise errors.Corrupt("pack index points past the blocks")
    return entries


def index_of(store, key: str) -> list[Entry]:
    """The entries of the pack at ``key``, with two ranged reads (trailer, then index)."""
    size = store.head(key).size
    count, index_at, crc = read_trailer(
        store.get(key, max(0, size - TRAILER.size), TRAILER.size), size)
    return read_index(store.get(key, index_at, count * ENTRY.size), count, crc)


# -- where packed blocks live --

table("packs", """
CREATE TABLE IF NOT EXISTS packs (
    id TEXT PRIMARY KEY, size INTEGER NOT NULL, blocks INTEGER NOT NULL) WITHOUT ROWID;
""", ("id", "size", "blocks"), ("id",))
table("packed", """
CREATE TABLE IF NOT EXISTS packed (
    hash BLOB PRIMARY KEY, pack TEXT NOT NULL, offset INTEGER NOT NULL,
    length INTEGER NOT NULL) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS packed_pack ON packed (pack, offset);
""", ("hash", "pack", "offset", "length"), ("hash",), ("hash",))
# Not replicated (derived from the rows above, or about this volume's bucket only), but
# carried in snapshots so a restored gateway goes on with them: packs that lost a block since
# they were last looked at (the repacker's to-do list, kept by a trigger in the transaction
# that drops the block; a replay's deletes fire it too), and packs no metadata names any
# more, deleted from the bucket once the change that emptied them is shipped (``seq``: the
# journal row that must be shipped first; a snapshot is taken with everything shipped).
table("pack_check", """
CREATE TABLE IF NOT EXISTS pack_check (id TEXT PRIMARY KEY) WITHOUT ROWID;
CREATE TRIGGER IF NOT EXISTS pack_check_d AFTER DELETE ON packed
BEGIN INSERT OR IGNORE INTO pack_check VALUES (OLD.pack); END;
CREATE TRIGGER IF NOT EXISTS pack_check_u AFTER UPDATE OF pack ON packed
WHEN OLD.pack IS NOT NEW.pack
BEGIN INSERT OR IGNORE INTO pack_check VALUES (OLD.pack); END;
""", replicated=False)
table("pack_trash", """
CREATE TABLE IF NOT EXISTS pack_trash (id TEXT PRIMARY KEY, seq INTEGER NOT NULL) WITHOUT ROWID;
""", replicated=False)


def forget(c, names) -> None:
    """Drop the locations of blocks that are gone, inside the caller's write transaction
    (their packs go on the repacker's to-do list)."""
    c.executemany("DELETE FROM packed WHERE hash = ?", [(n,) for n in names])


def new_pack_id() -> str:
    return os.urandom(16).hex()


@dataclass(frozen=True)
class Location:
    pack: str
    offset: int
    length: int

    @property
    def key(self) -> str:
        return pack_key(self.pack)


class PackMap:
    """The ``packs`` and ``packed`` tables of one volume's database."""

    def __init__(self, db: Database):
        self.db = db
        db.create_tables()

    def locate(self, name: bytes) -> Location | None:
        row = self.db.reader().execute(
            "SELECT pack, offset, length FROM packed WHERE hash = ?", (name,)).fetchone()
        return None if row is None else Location(*row)

    def located(self, names) -> set[bytes]:
        """Which of ``names`` live in a pack."""
        c = self.db.reader()
        return {n for n in names
                if c.execute("SELECT 1 FROM packed WHERE hash = ?", (n,)).fetchone()}

    def record(self, pack_id: str, size: int, entries: list[Entry]) -> None:
        """A pack reached the bucket: name it and its blocks, in one durable commit (before
        its blocks count as uploaded, so the journal never ships a block without the row
        that says where it is)."""
        with self.db.write() as c:
            c.execute("INSERT INTO packs VALUES (?, ?, ?)", (pack_id, size, len(entries)))
            # An upsert, not a REPLACE: a block placed in another pack before (uploaded
            # twice: a crash between its pack's rows and its clean mark) moves, and the
            # update trigger puts that pack on the repacker's list.
            c.executemany(
                "INSERT INTO packed VALUES (?, ?, ?, ?) ON CONFLICT (hash) DO UPDATE SET "
                "pack = excluded.pack, offset = excluded.offset, length = excluded.length",
                [(e.name, pack_id, e.offset, e.length) for e in entries])

    forget = staticmethod(forget)

    def check(self, pack_ids) -> None:
        """Put packs on the repacker's list (they may hold garbage)."""
        with self.db.write() as c:
            c.executemany("INSERT OR IGNORE INTO pack_check VALUES (?)",
                          [(p,) for p in pack_ids])

    def entries(self, pack_id: str) -> list[Entry]:
        """The blocks the metadata places in ``pack_id``, by offset."""
        return [Entry(*r) for r in self.db.reader().execute(
            "SELECT hash, offset, length FROM packed WHERE pack = ? ORDER BY offset",
            (pack_id,))]

    def after(self, pack_id: str, offset: int, limit: int) -> list[Entry]:
        """The blocks placed in ``pack_id`` from ``offset`` on, up to ``limit`` bytes."""
        found, total = [], 0
        for r in self.db.reader().execute(
                "SELECT hash, offset, length FROM packed WHERE pack = ? AND offset >= ? "
                "ORDER BY offset LIMIT 256", (pack_id, offset)):
            total += r[2]
            if total > limit:
                break
            found.append(Entry(*r))
        return found

    def packs(self) -> dict[str, int]:
        """Every pack the metadata knows, with the bytes of its blocks."""
        return dict(self.db.reader().execute("SELECT id, size FROM packs"))

    def stats(self) -> dict[str, int]:
        c = self.db.reader()
        packs, size = c.execute("SELECT COUNT(*), COALESCE(SUM(size), 0) FROM packs").fetchone()
        return {"packs": packs, "pack_bytes": size}


def orphans(store, pmap: PackMap) -> list[str]:
    """Packs in the bucket that the metadata does not name (nor has put in the trash)."""
    known = set(pmap.packs())
    known.update(r[0] for r in pmap.db.reader().execute("SELECT id FROM pack_trash"))
    return [info.key.rsplit("/", 1)[1] for info in store.list(PREFIX)
            if info.key.rsplit("/", 1)[1] not in known]


def adopt(store, pmap: PackMap, pack_ids: list[str]) -> tuple[int, list[str]]:
    """Give the blocks the metadata knows but cannot locate a place in the packs
    ``pack_ids`` whose own indexes list them (a journal cut between a block's row and its
    pack's rows, or metadata lost); return (blocks located, packs that helped none). The
    packs adopted go on the repacker's to-do list (they may hold dead bytes)."""
    located, useless = 0, []
    for pack_id in pack_ids:
        try:
            entries = index_of(store, pack_key(pack_id))
        except errors.Corrupt as exc:
            log.warning("pack %s has no readable index: %s", pack_id, exc)
            useless.append(pack_id)
            continue
        with pmap.db.write() as c:
            wanted = [e for e in entries
                      if c.execute("SELECT 1 FROM blocks WHERE hash = ?", (e.name,)).fetchone()
                      and not c.execute("SELECT 1 FROM packed WHERE hash = ?",
                                        (e.name,)).fetchone()]
            if not wanted:
                useless.append(pack_id)
                continue
            size = max(e.offset + e.length for e in entries)
            c.execute("INSERT OR IGNORE INTO packs VALUES (?, ?, ?)",
                      (pack_id, size, len(entries)))
            c.executemany("INSERT INTO packed VALUES (?, ?, ?, ?)",
                          [(e.name, pack_id, e.offset, e.length) for e in wanted])
            c.execute("INSERT OR IGNORE INTO pack_check VALUES (?)", (pack_id,))
        located += len(wanted)
    return located, useless
