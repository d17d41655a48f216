"""Publishing file contents: the one path by which new bytes become part of the volume.

Every writer (a WebDAV PUT, a REST upload, the FUSE write buffer, an in-place ``pwrite``)
stores its blocks through a ``BlockStorer`` and makes them the file's content with
``Publisher.publish``: the new block list, size, times and the content etag (computed here
and nowhere else, from the final extent map) in one transaction, and only after the blocks
are durable in the cache.

Owns the encoding pool (large blocks are hashed and compressed there; small ones in the
caller's thread), the memory slots that bound the blocks in flight across all writers, and
``Pins``, which keeps the garbage collector away from blocks in use. Leaves the block format
to blocks.py, bytes on disk to cache.py, and rows to extents.py and tree.py.

Threading: any thread. ``Pins`` has its own lock (taken before the cache's, never around I/O);
the pool and the slots are shared by all writers.
"""

from __future__ import annotations

import collections
import hashlib
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING

from . import errors
from .blocks import BlockCodec, digest, kind_of_head

if TYPE_CHECKING:
    from .cache import BlockCache
    from .extents import Extents
    from .tree import Attr, Tree


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


class BlockStorer:
    """Hashes, compresses and caches blocks on the volume's worker pool (small ones in the
    caller's thread), for one writer.

    Each stored block stays pinned until ``finish`` (commit) or ``abandon``.
    """

    def __init__(self, pub: "Publisher", hint: str | None, durable: bool = True):
        self.pub = pub
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
                # Not flushed here: the commit that publishes it follows in this thread,
                # and the cache puts the block on disk before that commit (its row earlier
                # in the database's log, or its file by the ``before_durable`` hook).
                fut.set_result(self._store(raw, durable=False))
            except BaseException as exc:
                fut.set_exception(exc)
            self.pending.append((idx, fut))
            self._reap(block=False)
            return
        self.pub.slots.acquire()  # bounds the memory of all writers together
        try:
            fut = self.pub.pool.submit(self._store, raw)
        except BaseException:
            self.pub.slots.release()
            raise
        fut.add_done_callback(lambda _f: self.pub.slots.release())
        self.pending.append((idx, fut))
        self._reap(block=False)

    def _store(self, raw: bytes, durable: bool = True) -> tuple[bytes, tuple | None]:
        pub = self.pub
        name = digest(raw)
        pub.pins.pin([name])
        try:
            if pub.extents.block_refs_row(name):
                return name, None  # stored before: dedup
            enc = pub.codec.encode(raw, self.hint, name)
            pub.cache.put_dirty(name, enc.parts, durable=self.durable and durable)
            return name, (name, enc.raw_size, enc.size)
        except BaseException:
            pub.pins.unpin([name])
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
        self.pub.cache.sync()   # the index is a hint; the blocks are on disk (or flushed
        # by the hook before the commit that names them reaches the disk)

    def finish(self) -> None:
        self.pub.pins.unpin(self.pinned)
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
        self.pub.pins.unpin(pinned)
        self.pub.discard_uncommitted(pinned)


class Publisher:
    """Stores blocks and publishes contents for one volume."""

    def __init__(self, tree: "Tree", extents: "Extents", cache: "BlockCache",
                 codec: BlockCodec, workers: int):
        self.tree = tree
        self.extents = extents
        self.cache = cache
        self.codec = codec
        self.pins = Pins()
        self.pool = ThreadPoolExecutor(workers, thread_name_prefix="rzd-encode")
        self.slots = threading.BoundedSemaphore(workers * 2)
        # Blocks an abort left to their upload come back here once it is over.
        cache.on_abandoned = self.discard_uncommitted

    def storer(self, hint: str | None = None, durable: bool = True) -> BlockStorer:
        """A storer for one writer; ``durable``: fsync each block now (else the next durable
        commit does)."""
        return BlockStorer(self, hint, durable)

    def publish(self, ino: int, size: int, changes: dict[int, bytes | None],
                storer: BlockStorer | None = None, *, truncate_from: int | None = None,
                mtime: int | None = None, ctime: int | None = None,
                expect_etag: str | None = None, hashes: str = "") -> "Attr":
        """Make ``changes`` (block index -> block name, None: a hole) and ``size`` the
        content of regular file ``ino`` in one transaction; extents at ``truncate_from`` and
        beyond go first. The blocks ``storer`` stored new are recorded. ``ctime``: the time
        of the change, if earlier than the commit (kept unless something changed the inode
        since). With ``expect_etag``, refused (``Conflict``) if the file changed since."""
        with self.tree.db.write():
            before = self.tree.getattr(ino) if ctime is not None else None
            current = {} if truncate_from == 0 else self.extents.extents(ino)
            merged = {i: h for i, h in current.items()
                      if truncate_from is None or i < truncate_from}
            merged.update(changes)
            merged = {i: h for i, h in merged.items() if h is not None}
            attr = self.extents.set_content(
                ino, size, changes, content_etag(size, merged), truncate_from=truncate_from,
                blocks=storer.new_blocks if storer else (), mtime=mtime,
                expect_etag=expect_etag, hashes=hashes)
            if before is not None:
                attr = self.tree.setattr(ino, ctime=max(ctime, before.ctime))
            return attr

    def publish_new(self, parent: int, name: str, size: int, storer: BlockStorer, *,
                    mtime: int | None = None, expect_etag: str | None = None,
                    hashes: str = "") -> "Attr":
        """A whole new content for ``parent/name`` (created if missing): what ``storer``
        stored, in one transaction."""
        with self.tree.db.write():
            attr = self.tree.find(parent, name)
            if attr is None:
                if expect_etag:
                    raise errors.Conflict(f"{name!r} was removed while being written")
                extents = {i: h for i, h in storer.done.items() if h is not None}
                attr = self.tree.create_with_content(parent, name, size,
                                                     content_etag(size, extents), hashes,
                                                     mtime, checked=True)
                self.extents.add_content(attr.ino, extents, storer.new_blocks)
                return attr   # add_content changes no attribute
            if not attr.is_file:
                raise errors.IsADirectory(f"{name!r} is not a regular file")
            return self.publish(attr.ino, size, storer.done, storer, truncate_from=0,
                                mtime=mtime, expect_etag=expect_etag, hashes=hashes)

    def discard_uncommitted(self, names: list[bytes]) -> None:
        """Drop blocks an abandoned write stored that no committed file refers to (with
        their places in packs, if an upload placed them). One being uploaded is left to
        its upload, which hands it back when done (``BlockCache.on_abandoned``)."""
        claimed = self.pins.claim(set(names), lambda n: not self.extents.block_refs_row(n))
        try:
            gone = self.cache.discard(claimed, wait=False)
            packed = self.cache.packs.located(gone) if self.cache.packs else ()
            if packed:                         # uploaded in a pack meanwhile
                with self.tree.db.write() as c:
                    self.cache.packs.forget(c, packed)
        finally:
            self.pins.release(claimed)

    def close(self) -> None:
        self.pool.shutdown(wait=True)
