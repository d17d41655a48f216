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

Owns the byte layout only: which blocks go into which pack, uploading and repacking belong
to the cache and the journal. Threading: pure functions and a builder owned by one thread.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

from . import errors

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
        index = b"".join(ENTRY.pack(e.name, e.offset, e.length) for e in self.entries)
        trailer = TRAILER.pack(MAGIC, FORMAT_VERSION, 0, len(self.entries), self.size,
                               zlib.crc32(index), 0, END_MAGIC)
        return b"".join(self._parts) + index + trailer


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
