"""Open regular files: one write buffer per inode, shared by every handle of that inode.

A FUSE write carries 4 KiB to 1 MiB. ``Volume.pwrite`` would rewrite and fsync a whole block
for each one; here writes land in memory and are committed in one transaction (the new blocks
fsynced in the cache, then block list, size and times through ``Tree.set_content``) when:

- a caller asks: ``fsync``, ``flush`` (a close), or ``close`` of the inode's last user;
- the inode holds ``inode_limit`` bytes of dirty blocks, or all inodes together
  ``total_limit`` (the writer commits its own inode, the background thread the others);
- its oldest unsaved write is ``max_age`` seconds old (the background thread, like a local
  file system's periodic journal commit).

What callers see: every user of an inode reads through the same buffer, so a write is visible
to all readers at once (POSIX), and ``overlay`` reports the buffered size and times. Until a
commit, other faces (WebDAV) and a crash see the last committed content. ``fsync`` returns only
when everything written before it is durable. A commit that fails (ENOSPC, store trouble)
keeps the data buffered and raises; the next commit tries again.

How the buffer works: a dirty block is held whole (at most ``block_size`` bytes; bytes past its
length read as zeros), filled from the committed block the first time a write covers only part
of what that block holds. A block that a write completes up to its end is handed at once to the
volume's encoding pool (``BlockStorer``), so a sequential writer's blocks are hashed, compressed
and fsynced while the next writes arrive; if it is written again, it is encoded again. Shrinking
drops the dirty blocks past the new end and cuts the one the end falls in; ``cut`` keeps the
lowest size since the last commit, so committed blocks past it read as zeros and the commit drops
them (``truncate_from``). Untouched ranges stay holes.

Left to others: permissions and the namespace (faces and ``Tree``); O_APPEND offsets (the
kernel passes the end of file it knows); an inode's last link (``Volume.hold``/``release``: this
module holds every inode it has state for, and drops the buffer of an unlinked one unsaved).

Threading: every method may be called from any thread. Locks, taken in this order:
``_Inode.lock`` (one inode's buffer; held during its I/O: reading committed blocks, encoding,
commit) -> ``OpenFiles._lock`` (``_states``, ``_total``, each ``_Inode.users``; never held during
I/O) -> the Tree, Pins and BlockCache locks. The flusher thread holds no lock when it takes an
inode's.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from typing import Callable

from . import errors
from .files import FileReader
from .publish import INLINE_BLOCK, BlockStorer
from .tree import Attr

log = logging.getLogger(__name__)

INODE_LIMIT = 32 << 20
TOTAL_LIMIT = 64 << 20
MAX_AGE = 5.0


class _Inode:
    """The buffered state of one open inode. Fields other than ``users`` are guarded by
    ``lock``; ``size``, ``mtime`` and ``ctime`` are also read without it by ``overlay``."""

    def __init__(self, ino: int):
        self.ino = ino
        self.lock = threading.Lock()
        self.users = 0                        # guarded by OpenFiles._lock
        self.gone = False                     # removed from OpenFiles._states
        self.blocks: dict[int, bytearray] = {}
        self.submitted: set[int] = set()      # indexes whose bytes ``storer`` has: not changed
        self.storer: BlockStorer | None = None
        self.dirty_bytes = 0
        self.size: int | None = None          # None: the committed size
        self.mtime: int | None = None
        self.ctime: int | None = None
        self.cut: int | None = None           # lowest size truncated to since the last commit
        self.dirty_since: float | None = None
        self.reader: FileReader | None = None
        self.readers_lock = threading.Lock()   # guards ``reading`` and ``retired``
        self.reading = 0                      # reads of ``reader`` running without ``lock``
        self.retired: list[FileReader] = []   # readers replaced while a read used them

    @property
    def dirty(self) -> bool:
        return self.size is not None


class OpenFiles:
    """The write buffers of one volume. ``on_commit(ino, attr)`` is called after each commit
    (faces use it to know which content the kernel has cached)."""

    def __init__(self, vol, inode_limit: int = INODE_LIMIT, total_limit: int = TOTAL_LIMIT,
                 max_age: float = MAX_AGE, on_commit: Callable[[int, Attr], None] | None = None):
        self.vol = vol
        self.tree = vol.tree
        self.bs = vol.block_size
        self.inode_limit = max(inode_limit, self.bs)
        self.total_limit = max(total_limit, self.inode_limit)
        self.max_age = max_age
        self.on_commit = on_commit
        self._lock = threading.Lock()
        self._states: dict[int, _Inode] = {}
        self._total = 0
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._flusher = threading.Thread(target=self._flush_loop, name="rzd-flush", daemon=True)
        self._flusher.start()

    # -- users of an inode --

    def open(self, ino: int) -> None:
        """Count one more user (an open handle) of a regular file; pair with ``close``."""
        if not self.tree.getattr(ino).is_file:
            raise errors.IsADirectory(f"inode {ino} is not a regular file")
        self._enter(ino)

    def close(self, ino: int) -> None:
        """End one user. The last one commits the buffer (or drops it if the file has no
        link left) and forgets the inode's state; a failed commit is logged, not raised."""
        st = self._states.get(ino)
        if st is not None:
            self._leave(st)

    def _enter(self, ino: int) -> _Inode:
        with self._lock:
            st = self._states.get(ino)
            if st is None:
                st = self._states[ino] = _Inode(ino)
                self.vol.hold(ino)
            st.users += 1
            return st

    def _leave(self, st: _Inode) -> None:
        with self._lock:
            st.users -= 1
            if st.users > 0:
                return
        with st.lock:
            self._last_commit(st)
            with self._lock:
                if st.users > 0:   # someone came back while we committed
                    return
                del self._states[st.ino]
                st.gone = True
                self._total -= st.dirty_bytes
            self._drop_reader(st)
        self.vol.release(st.ino)

    def _last_commit(self, st: _Inode) -> None:
        try:
            unlinked = self.tree.getattr(st.ino).nlink <= 0
        except errors.NotFound:
            unlinked = True
        if unlinked:
            self._discard(st)
            return
        try:
            self._commit(st)
        except Exception as exc:
            log.error("inode %d: last close could not save %d buffered bytes: %s", st.ino,
                      st.dirty_bytes, exc)
            self._discard(st)

    def _use(self, ino: int) -> _Inode:
        st = self._states.get(ino)
        if st is None:
            raise errors.InvalidArgument(f"inode {ino} is not open")
        return st

    # -- reading --

    def read(self, ino: int, offset: int, length: int) -> bytes:
        self.vol.request()   # uploads wait for a pause in requests
        st = self._use(ino)
        with st.lock:
            if st.dirty:
                return self._read_buffered(st, offset, length)
            reader = self._reader(st)
            with st.readers_lock:
                st.reading += 1
        # Committed content: read outside the inode's lock, so the kernel's parallel
        # read-ahead requests run in parallel; the reader stays open meanwhile.
        try:
            return reader.pread(offset, length)
        finally:
            self._done_reading(st)

    def _read_buffered(self, st: _Inode, offset: int, length: int) -> bytes:
        end = min(offset + length, st.size)
        if offset >= end:
            return b""
        parts = []
        bs = self.bs
        for idx in range(offset // bs, (end - 1) // bs + 1):
            start = idx * bs
            lo, hi = max(offset, start) - start, min(end, start + bs) - start
            block = st.blocks.get(idx)
            if block is None:
                piece = self._committed(st, start + lo, hi - lo)
            else:
                piece = bytes(block[lo:hi])
            if len(piece) < hi - lo:
                piece += bytes(hi - lo - len(piece))
            parts.append(piece)
        return b"".join(parts)

    def _reader(self, st: _Inode) -> FileReader:
        """A reader of the committed content, opened again when that content changed."""
        attr = self.tree.getattr(st.ino)
        if st.reader is None or st.reader.etag != attr.etag or st.reader.size != attr.size:
            self._drop_reader(st)
            st.reader = self.vol.open_read(st.ino)
        return st.reader

    def _drop_reader(self, st: _Inode) -> None:
        """Close the inode's reader, or leave that to the last read still using it."""
        if st.reader is not None:
            with st.readers_lock:
                if st.reading:
                    st.retired.append(st.reader)
                else:
                    st.reader.close()
            st.reader = None

    def _done_reading(self, st: _Inode) -> None:
        with st.readers_lock:
            st.reading -= 1
            retired = st.retired if st.reading == 0 else []
            if retired:
                st.retired = []
        for reader in retired:
            reader.close()

    def _committed(self, st: _Inode, offset: int, length: int) -> bytes:
        """Committed bytes as this buffer sees them: zeros past ``cut``, short past the end."""
        reader = self._reader(st)
        limit = reader.size if st.cut is None else min(reader.size, st.cut)
        length = min(length, limit - offset)
        return reader.pread(offset, length) if length > 0 else b""

    def _committed_len(self, st: _Inode, idx: int) -> int:
        reader = self._reader(st)
        limit = reader.size if st.cut is None else min(reader.size, st.cut)
        return max(0, min(self.bs, limit - idx * self.bs))

    # -- writing --

    def write(self, ino: int, offset: int, data: bytes) -> int:
        """Buffer ``data`` at ``offset`` (past the end leaves a hole); return its length."""
        self.vol.request()   # uploads wait for a pause in requests
        if offset < 0:
            raise errors.InvalidArgument("negative offset")
        st = self._use(ino)
        if not data:
            return 0
        with st.lock:
            self._make_room(st, len(data))
            self._start(st)
            bs, end = self.bs, offset + len(data)
            with memoryview(data) as view:
                for idx in range(offset // bs, (end - 1) // bs + 1):
                    start = idx * bs
                    lo, hi = max(offset, start) - start, min(end, start + bs) - start
                    old = st.blocks.get(idx)
                    old_len = 0 if old is None else len(old)
                    block = self._dirty_block(st, idx, lo, hi)
                    if len(block) < lo:
                        block.extend(bytes(lo - len(block)))
                    block[lo:hi] = view[start + lo - offset:start + hi - offset]
                    self._account(st, idx, block, old_len)
                    if hi == bs:
                        self._submit(st, idx)
            st.size = max(st.size, end)
            self._touch(st)
        return len(data)

    def _start(self, st: _Inode) -> None:
        if st.size is None:
            st.size = self._reader(st).size
            st.dirty_since = time.monotonic()

    def _touch(self, st: _Inode, mtime: int | None = None) -> None:
        now = time.time_ns()
        st.mtime = mtime if mtime is not None else now
        st.ctime = now

    def _dirty_block(self, st: _Inode, idx: int, lo: int, hi: int) -> bytearray:
        block = st.blocks.get(idx)
        if block is not None:
            if idx not in st.submitted:
                return block
            st.submitted.discard(idx)   # the storer may still read it: change a copy
            return bytearray(block)
        held = self._committed_len(st, idx)
        if held == 0 or (lo == 0 and hi >= held):
            return bytearray()   # the write covers all the committed block holds
        return bytearray(self._committed(st, idx * self.bs, held))

    def _account(self, st: _Inode, idx: int, block: bytearray | bytes, old_len: int) -> None:
        delta = len(block) - old_len
        st.blocks[idx] = block
        st.dirty_bytes += delta
        with self._lock:
            self._total += delta

    def _submit(self, st: _Inode, idx: int) -> None:
        """Start encoding a complete block now; a failure here only defers it to the commit."""
        data = st.blocks[idx]   # not copied: a later write changes a copy (_dirty_block)
        try:
            if st.storer is None:
                st.storer = self.vol.publisher.storer(None, durable=not self.tree.db.deferred)
            st.storer.submit(idx, data)
        except Exception as exc:
            log.debug("inode %d: early encoding failed, retried at commit: %s", st.ino, exc)
            self._abandon(st)
            return
        st.submitted.add(idx)

    def _make_room(self, st: _Inode, incoming: int) -> None:
        """Commit first when this write would pass a limit, so a failure leaves it unwritten."""
        if st.dirty and st.dirty_bytes + incoming > self.inode_limit:
            self._commit(st)
        elif self._total + incoming > self.total_limit:
            if st.dirty:
                self._commit(st)
            self._wake.set()

    # -- truncation --

    def truncate(self, ino: int, size: int, mtime: int | None = None) -> None:
        """Set the size (buffered while the inode has users, committed otherwise); mtime
        becomes ``mtime`` or now, ctime now."""
        if size < 0:
            raise errors.InvalidArgument("negative size")
        if not self.tree.getattr(ino).is_file:
            raise errors.IsADirectory(f"inode {ino} is not a regular file")
        st = self._enter(ino)
        try:
            with st.lock:
                self._start(st)
                if size < st.size:
                    self._shrink(st, size)
                st.size = size
                self._touch(st, mtime)
        finally:
            self._leave_checked(st)

    def _leave_checked(self, st: _Inode) -> None:
        """``_leave`` for a call that must report a failed commit (truncate with no handle)."""
        with self._lock:
            last = st.users == 1
        error = None
        if last:
            with st.lock:
                try:
                    self._commit(st)
                except BaseException as exc:
                    error = exc
                    self._discard(st)
        self._leave(st)
        if error is not None:
            raise error

    def _shrink(self, st: _Inode, size: int) -> None:
        bs = self.bs
        keep = -(-size // bs)
        for idx in [i for i in st.blocks if i >= keep]:
            st.dirty_bytes -= len(st.blocks[idx])
            with self._lock:
                self._total -= len(st.blocks[idx])
            del st.blocks[idx]
            st.submitted.discard(idx)
        tail, idx = size % bs, size // bs
        if tail:
            block = st.blocks.get(idx)
            old_len = 0 if block is None else len(block)
            if block is None:
                block = bytearray(self._committed(st, idx * bs, tail))
            else:
                block = bytearray(block[:tail])
            st.submitted.discard(idx)
            self._account(st, idx, block, old_len)
        st.cut = size if st.cut is None else min(st.cut, size)

    # -- committing --

    def flush(self, ino: int) -> None:
        """Commit the inode's buffer; durable when this returns (also ``fsync``)."""
        st = self._states.get(ino)
        if st is None:
            return
        with st.lock:
            if not st.gone:
                self._commit(st)

    fsync = flush

    def _commit(self, st: _Inode) -> None:
        if not st.dirty:
            return
        storer = st.storer or self.vol.publisher.storer(None, durable=not self.tree.db.deferred)
        st.storer = None
        try:
            if self.vol.max_bytes is not None:   # refuse before encoding; publishing rechecks
                self.vol.check_room(st.size - self.tree.getattr(st.ino).size)
            for idx, block in st.blocks.items():
                if idx not in st.submitted:
                    storer.submit(idx, block)
            st.submitted = set(st.blocks)
            if storer.pending or storer.done:
                storer.wait()   # blocks fsynced and indexed before metadata names them
            attr = self._publish(st, storer)
        except errors.NotFound:
            storer.abandon()
            st.submitted.clear()
            self._discard(st)   # the inode went away: nothing to save
            return
        except BaseException:
            storer.abandon()
            st.submitted.clear()
            raise
        storer.finish()
        with self._lock:
            self._total -= st.dirty_bytes
        st.blocks, st.submitted, st.dirty_bytes = {}, set(), 0
        st.size = st.mtime = st.ctime = st.cut = st.dirty_since = None
        if self.on_commit is not None:
            self.on_commit(st.ino, attr)

    def _publish(self, st: _Inode, storer: BlockStorer) -> Attr:
        truncate_from = None if st.cut is None else -(-st.cut // self.bs)
        changes = {i: name for i, name in storer.done.items() if i in st.blocks}
        # ctime is the last change, not the commit, unless something changed it since.
        return self.vol.publisher.publish(st.ino, st.size, changes, storer,
                                          truncate_from=truncate_from, mtime=st.mtime,
                                          ctime=st.ctime)

    def _abandon(self, st: _Inode) -> None:
        if st.storer is not None:
            st.storer.abandon()
            st.storer = None
        st.submitted.clear()

    def _discard(self, st: _Inode) -> None:
        """Forget the buffer unsaved (the file has no link left, or saving failed for good)."""
        self._abandon(st)
        with self._lock:
            self._total -= st.dirty_bytes
        st.blocks, st.dirty_bytes = {}, 0
        st.size = st.mtime = st.ctime = st.cut = st.dirty_since = None

    # -- attributes --

    def attr(self, ino: int) -> Attr:
        """The inode's attributes with its buffered size and times. The buffer is read before
        the tree, so a commit finishing in between cannot hide the new size."""
        pending = self._pending(ino)
        return self._apply(self.tree.getattr(ino), pending)

    def overlay(self, attr: Attr) -> Attr:
        """``attr`` (just read from the tree) with the buffered size and times, if any."""
        return self._apply(attr, self._pending(attr.ino))

    def _pending(self, ino: int) -> tuple | None:
        st = self._states.get(ino)
        if st is None:
            return None
        pending = st.size, st.mtime, st.ctime
        return None if None in pending else pending

    @staticmethod
    def _apply(attr: Attr, pending: tuple | None) -> Attr:
        if pending is None:
            return attr
        size, mtime, ctime = pending
        return dataclasses.replace(attr, size=size, mtime=mtime, ctime=max(ctime, attr.ctime))

    def quick(self, ino: int, offset: int | None = None, length: int = 0) -> bool:
        """Whether committing ``ino`` now (after a write of ``length`` bytes at ``offset``,
        if given) takes only memory, SQLite and a short local write: no committed bytes to
        read back (maybe from the store), no block for the encoding pool, no wait for upload
        room or for another thread's commit. Faces run such calls in their event loop rather
        than pay two thread switches for them. A hint: a state that changes meanwhile costs
        at most a short wait."""
        st = self._states.get(ino)
        if st is None:
            return True
        if st.lock.locked() or st.storer is not None:
            return False
        pending = st.dirty_bytes + length
        if offset is not None:
            end = offset + length
            if end >= self.bs or self._total + length > self.total_limit:
                return False
            if not isinstance(st.blocks.get(0), bytearray) and self.tree.getattr(ino).size:
                return False   # the write may merge committed bytes
        cache = self.vol.cache
        return pending <= INLINE_BLOCK and cache.dirty_bytes + pending <= cache.dirty_limit

    def is_dirty(self, ino: int) -> bool:
        st = self._states.get(ino)
        return st is not None and st.dirty

    def figures(self) -> dict:
        with self._lock:
            return {"open_inodes": len(self._states), "buffered_bytes": self._total}

    # -- background commits and shutdown --

    def _flush_loop(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(1.0)
            self._wake.clear()
            if self._stop.is_set():
                return
            for st in self._due():
                try:
                    with st.lock:
                        if not st.gone:
                            self._commit(st)
                except Exception as exc:
                    log.warning("inode %d: background commit failed, will retry: %s",
                                st.ino, exc)
                finally:
                    self._leave(st)

    def _due(self) -> list[_Inode]:
        """Inodes to commit now (each entered, so it stays): the old ones, then the biggest
        while the total is over its limit."""
        now = time.monotonic()
        with self._lock:
            dirty = [st for st in self._states.values() if st.dirty_since is not None]
            due = [st for st in dirty if now - st.dirty_since >= self.max_age]
            over = self._total - self.total_limit
            for st in sorted(dirty, key=lambda s: -s.dirty_bytes):
                if over <= 0:
                    break
                if st not in due:
                    due.append(st)
                    over -= st.dirty_bytes
            for st in due:
                st.users += 1
            return due

    def close_all(self) -> None:
        """Commit every buffer and forget every state (at unmount); stops the flusher."""
        self._stop.set()
        self._wake.set()
        self._flusher.join()
        with self._lock:
            states = list(self._states.values())
            for st in states:
                st.users = 1
        for st in states:
            self._leave(st)
