"""File contents over blocks: the streaming writer and the random-access reader.

A file is a size and a map ``block index -> block name``; an index with no entry is a hole
and reads as zeros. Every block but the last is ``block_size`` bytes when read (a shorter
stored block is padded with zeros).

Owns no state of its own beyond open handles: metadata goes through ``Tree``, bytes through
``BlockCache``; blocks are stored and contents published through publish.py. Threading: a
writer or reader belongs to one thread at a time.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

from . import errors
from .blocks import kind_of_name

if TYPE_CHECKING:
    from .volume import Volume


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
        self._storer = vol.publisher.storer(kind_of_name(name))
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
            hashes = " ".join(f"{k.upper()}:{v}" for k, v in sorted(self.digests().items()))
            attr = self.vol.publisher.publish_new(self.parent, self.name, self.size,
                                                  self._storer, mtime=self.mtime,
                                                  expect_etag=self.expect_etag, hashes=hashes)
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
        self.attr, self.extents = vol.extents.snapshot_content(ino)
        self.size = self.attr.size
        self.etag = self.attr.etag
        self._pinned = list(self.extents.values())
        vol.publisher.pins.pin(self._pinned)
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
            self.vol.publisher.pins.unpin(self._pinned)
            self.vol.release(self.ino)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        if not getattr(self, "closed", True):
            self.close()
