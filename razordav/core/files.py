"""File contents over blocks: the streaming writer, the random-access reader, in-place
writes and truncation, and the pins that keep blocks alive while they are in use.

A file is a size and a map ``block index -> block name``; an index with no entry is a hole
and reads as zeros. Every block but the last is ``block_size`` bytes when read (a shorter
stored block is padded with zeros).

Owns no state of its own beyond open handles: metadata goes through ``Tree``, bytes through
``BlockCache``. Threading: a writer or reader belongs to one thread at a time; ``Pins`` is
shared and guarded by its own lock (taken before the cache's, never while doing I/O).
"""

from __future__ import annotations

import collections
import hashlib
import threading
from concurrent.futures import Future
from typing import TYPE_CHECKING

from . import errors
from .blocks import digest, kind_of_head, kind_of_name

if TYPE_CHECKING:
    from .volume import Volume


class Pins:
    """Counts the users of each block (writers before commit, open readers) and keeps the
    garbage collector away from them.

    Protocol: a user pins a name before it looks the block up; the collector, holding the
    lock, marks unpinned candidates as ``collecting``; a pin of a collecting name waits until
    the collector is done with it, then finds the block gone and stores it again.
    """

    def __init__(self):
        self._lock = threading.Condition()
        self._count: collections.Counter[bytes] = collections.Counter()
        self._collecting: set[bytes] = set()

    def pin(self, names) -> None:
        with self._lock:
            for name in names:
                while name in self._collecting:
                    self._lock.wait()
                self._count[name] += 1

    def unpin(self, names) -> None:
        with self._lock:
            for name in names:
                self._count[name] -= 1
                if self._count[name] <= 0:
                    del self._count[name]

    def claim(self, names, unused) -> list[bytes]:
        """Mark the names that are unpinned and for which ``unused(name)`` holds as being
        collected; return them. Call ``release`` when they are gone."""
        with self._lock:
            claimed = [n for n in names if n not in self._count and n not in self._collecting
                       and unused(n)]
            self._collecting.update(claimed)
            return claimed

    def release(self, names) -> None:
        with self._lock:
            self._collecting.difference_update(names)
            self._lock.notify_all()


def content_etag(size: int, extents: dict[int, bytes]) -> str:
    """An etag that depends only on the content: equal files get equal etags."""
    h = hashlib.sha256(size.to_bytes(8, "big"))
    for idx in sorted(extents):
        h.update(idx.to_bytes(8, "big"))
        h.update(extents[idx])
    return h.hexdigest()[:32]


# Blocks up to this size are stored in the caller's thread: handing one to the pool and
# waiting for it costs two thread switches, more than hashing and compressing it (a switch
# is 100-200 us on a small VM; a 4 KiB block is stored in about 30 us plus its file write).
INLINE_BLOCK = 64 << 10


class _BlockStorer:
    """Hashes, compresses and caches blocks on the volume's worker pool (small ones in the
    caller's thread), for one writer.

    Each stored block stays pinned until ``finish`` (commit) or ``abandon``.
    """

    def __init__(self, vol: "Volume", hint: str | None, durable: bool = True):
        self.vol = vol
        self.hint = hint
        self.durable = durable   # fsync each block, or leave that to the next durable commit
        self.pending: list[tuple[int, Future]] = []
        self.done: dict[int, bytes] = {}
        self.new_blocks: list[tuple[bytes, int, int]] = []
        self.pinned: list[bytes] = []

    def submit(self, idx: int, raw: bytes) -> None:
        if idx == 0 and self.hint is None:
            self.hint = kind_of_head(raw[:16])
        if len(raw) <= INLINE_BLOCK:
            fut = Future()
            try:
                fut.set_result(self._store(raw))
            except BaseException as exc:
                fut.set_exception(exc)
            self.pending.append((idx, fut))
            self._reap(block=False)
            return
        self.vol._slots.acquire()  # bounds the memory of all writers together
        try:
            fut = self.vol._pool.submit(self._store, raw)
        except BaseException:
            self.vol._slots.release()
            raise
        fut.add_done_callback(lambda _f: self.vol._slots.release())
        self.pending.append((idx, fut))
        self._reap(block=False)

    def _store(self, raw: bytes) -> tuple[bytes, tuple | None]:
        vol = self.vol
        name = digest(raw)
        vol.pins.pin([name])
        try:
            if vol.tree.block_refs_row(name):
                return name, None  # stored before: dedup
            enc = vol.codec.encode(raw, self.hint, name)
            vol.cache.put_dirty(name, enc.parts, durable=self.durable)
            return name, (name, enc.raw_size, enc.size)
        except BaseException:
            vol.pins.unpin([name])
            raise

    def _reap(self, block: bool) -> None:
        while self.pending and (block or self.pending[0][1].done()):
            idx, fut = self.pending.pop(0)
            try:
                name, new = fut.result()
            except BaseException:
                self.abandon()
                raise
            self.pinned.append(name)
            self.done[idx] = name
            if new:
                self.new_blocks.append(new)

    def wait(self) -> None:
        self._reap(block=True)
        self.vol.cache.sync(durable=self.durable)

    def finish(self) -> None:
        self.vol.pins.unpin(self.pinned)
        self.pinned = []

    def abandon(self) -> None:
        for _idx, fut in self.pending:
            try:
                name, _new = fut.result()
                self.pinned.append(name)
            except BaseException:
                pass
        self.pending = []
        pinned, self.pinned = self.pinned, []
        self.vol.pins.unpin(pinned)
        self.vol._discard_uncommitted(pinned)


class FileWriter:
    """Streams a whole new content for a file; ``close`` publishes it in one transaction.

    Until ``close`` returns, readers see the old content (or no file). ``abort`` (or an
    exception in ``close``) leaves the old content untouched. ``close`` returns once the blocks
    are fsynced in the cache and the metadata is committed: the write is then durable.

    Under a quota, ``write`` raises ``NoSpace`` as soon as the content outgrows the room left
    (the replaced content, ``old_size``, counts as freed), and so does the constructor when the
    announced ``length`` or a new inode cannot fit. The caller then aborts; ``close`` checks
    once more in the publishing transaction.
    """

    def __init__(self, vol: "Volume", parent: int, name: str, mtime: int | None = None,
                 expect_etag: str | None = None, hashes: tuple[str, ...] = (),
                 old_size: int | None = None, length: int | None = None):
        vol.check_room((length or 0) - (old_size or 0), 1 if old_size is None else 0)
        self.old_size = old_size or 0
        self.vol = vol
        self.parent = parent
        self.name = name
        self.mtime = mtime
        self.expect_etag = expect_etag
        self.size = 0
        self._buf = bytearray()
        self._idx = 0
        self._storer = _BlockStorer(vol, kind_of_name(name))
        # Whole-file checksums cost CPU on every byte: only those asked for are kept.
        self._hash = {algo: hashlib.new(algo) for algo in hashes}
        self.closed = False

    def write(self, data: bytes) -> int:
        if self.closed:
            raise ValueError("write to a closed FileWriter")
        self.size += len(data)
        if self.vol.max_bytes is not None:
            try:
                self.vol.check_room(self.size - self.old_size)
            except errors.NoSpace:
                self.size -= len(data)
                raise
        self._buf += data
        for algo in self._hash.values():
            algo.update(data)
        bs = self.vol.block_size
        while len(self._buf) >= bs:
            with memoryview(self._buf) as view:
                block = bytes(view[:bs])
            del self._buf[:bs]
            self._storer.submit(self._idx, block)
            self._idx += 1
        return len(data)

    def digests(self) -> dict[str, str]:
        """Hex digests of everything written so far, for the algorithms asked for."""
        return {k: h.hexdigest() for k, h in self._hash.items()}

    def close(self):
        """Publish the content; return the file's new ``Attr``."""
        if self.closed:
            raise ValueError("FileWriter closed twice")
        self.closed = True
        try:
            if self._buf:
                self._storer.submit(self._idx, bytes(self._buf))
                self._buf = bytearray()
            self._storer.wait()
            extents = self._storer.done
            hashes = " ".join(f"{k.upper()}:{v}" for k, v in sorted(self.digests().items()))
            attr = self.vol._publish(self.parent, self.name, self.size, extents,
                                     self._storer.new_blocks, self.mtime, self.expect_etag,
                                     hashes)
        except BaseException:
            self._storer.abandon()
            raise
        self._storer.finish()
        return attr

    def abort(self) -> None:
        if not self.closed:
            self.closed = True
            self._buf = bytearray()
            self._storer.abandon()

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.close()
        else:
            self.abort()


class FileReader:
    """Random access to one version of a file: the one current when it was opened.

    Its blocks are pinned until ``close``, so a concurrent rewrite or delete cannot take
    them away. Sequential reads fetch the next blocks ahead in parallel.
    """

    def __init__(self, vol: "Volume", ino: int):
        self.vol = vol
        self.ino = ino
        self.attr, self.extents = vol.tree.snapshot_content(ino)
        self.size = self.attr.size
        self.etag = self.attr.etag
        self._pinned = list(self.extents.values())
        vol.pins.pin(self._pinned)
        self._pos = 0
        self._next_seq = 0
        self.closed = False

    def pread(self, offset: int, length: int) -> bytes:
        if offset < 0 or length < 0:
            raise errors.InvalidArgument("negative offset or length")
        end = min(self.size, offset + length)
        if offset >= end:
            return b""
        bs = self.vol.block_size
        first, last = offset // bs, (end - 1) // bs
        if offset == self._next_seq or first == 0:
            self._read_ahead(last + 1)
        parts = []
        for idx in range(first, last + 1):
            lo = offset - idx * bs if idx == first else 0
            hi = end - idx * bs if idx == last else bs
            name = self.extents.get(idx)
            piece = b"" if name is None else self.vol.cache.read(name, lo, hi - lo)
            if len(piece) < hi - lo:   # a hole, or a block shorter than the file there
                piece += bytes(hi - lo - len(piece))
            parts.append(piece)
        self._next_seq = end
        return b"".join(parts)

    def _read_ahead(self, start: int) -> None:
        n = self.vol.readahead
        names = [self.extents[i] for i in range(start, start + n) if i in self.extents]
        if names:
            self.vol.cache.prefetch(names)

    # file-like face, for WsgiDAV and shutil
    def read(self, n: int = -1) -> bytes:
        if n is None or n < 0:
            n = self.size - self._pos
        data = self.pread(self._pos, n)
        self._pos += len(data)
        return data

    def seek(self, pos: int, whence: int = 0) -> int:
        base = {0: 0, 1: self._pos, 2: self.size}[whence]
        self._pos = max(0, base + pos)
        return self._pos

    def tell(self) -> int:
        return self._pos

    def readable(self) -> bool:
        return True

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.vol.pins.unpin(self._pinned)
            self.vol.release(self.ino)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        if not getattr(self, "closed", True):
            self.close()
