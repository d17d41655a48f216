"""The local block cache: stored blocks on disk, LRU eviction, the dirty set and its uploader,
fetches with read-ahead.

Owns the cache directory and its index (sqlitedict, JSON-encoded: ``hex -> {size, dirty, t}``).
It holds blocks as stored (compressed, with header), verifies them on every read through the
codec, and never evicts a dirty block. It does not decide which blocks are wanted: the volume
asks it to drop the ones no metadata refers to.

Write-back protocol (see docs/notes/cache.md): ``put_dirty`` writes and fsyncs the object
file (and the directory it is in), after which the block survives a crash and will be
uploaded. The index is a hint, never part of that promise: its commits are queued (``sync``)
and flushed to disk only when something relies on them (eviction, shutdown); a row a power
loss took is rebuilt by ``adopt`` from the metadata that names the block.
Uploads drain oldest first through ``uploaders`` threads; a transient store error puts the
block back at the head of the queue and pauses that thread with a growing delay. With an
``upload_delay`` each upload starts only once no block was written (and no face reported a
request, ``touch``) for that long: a burst of writes - a git checkout, an untar, a big copy -
runs without uploads competing for the CPU, as with rclone's ``--vfs-write-back``. A block
waits at most ``upload_delay_max``; none wait when half the dirty limit is used or someone
waits for the uploads (``wait_uploaded``).

Lock order: ``_lock`` guards ``_entries``, ``_queue``, ``_inflight``, the byte counters and
``stats``; it is never held during disk or store I/O. ``_index`` is sqlitedict's own thread.
"""

from __future__ import annotations

import bisect
import collections
import contextlib
import json
import logging
import os
import sqlite3
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Callable

from sqlitedict import SqliteDict

from .. import store as store_mod
from ..fsutil import fsync_path
from .lease import LeaseLapsed, LeaseLost
from . import errors, space
from .blocks import CODEC_FRAMES, FRAME, HEADER, SEEK, SEEK_END, BlockCodec, block_key, \
    frame_table, header_of, is_raw, table_size
from .db import Database, table
from .packs import PackBuilder, PackMap, new_pack_id, pack_key

log = logging.getLogger(__name__)

# Blocks stored this small (or smaller) wait for upload in the metadata database, not in
# files: their commit rides in the log ahead of the commit that names them, so one flush of
# the log makes both durable (a file costs a create, an fsync and a directory fsync).
SMALL_BLOCK = (64 << 10) + HEADER.size
# Decompressed frames of codec-2 blocks kept in memory (a hot 4 KiB page costs no
# decompression), and how many blocks' frame tables are remembered.
FRAME_CACHE = 16 << 20
FRAME_TABLES = 4096
# A cold read of at most this many bytes of a block in frames fetches only its frames (the
# block is not cached then; its decoded frames stay in memory). A bigger one, or one the
# read-ahead already fetches, takes the whole block into the cache.
RANGE_READ_MAX = 256 << 10
# Pack read-ahead: how far a GET runs on past a block that follows the previous miss in its
# pack, and the gap between blocks it reads across (dead bytes are read too).
PACK_READAHEAD = 1 << 20
PACK_GAP = 64 << 10

table("cache_blocks", """
CREATE TABLE IF NOT EXISTS cache_blocks (
    hash BLOB PRIMARY KEY, t REAL NOT NULL, data BLOB NOT NULL) WITHOUT ROWID;
""", replicated=False, snapshot=False)   # keyed by hash alone: no second b-tree to write


def _is_block_name(name: str) -> bool:
    try:
        return len(name) == 64 and bytes.fromhex(name).hex() == name
    except ValueError:
        return False


class _Entry:
    __slots__ = ("size", "dirty", "t", "plain", "in_db")

    def __init__(self, size: int, dirty: bool, t: float, in_db: bool = False):
        self.size, self.dirty, self.t = size, dirty, t
        # The file is stored raw and was verified (or written) by this process: a range of
        # it can be read straight from the file. Not persisted: a restart verifies again.
        self.plain = False
        # Held in ``cache_blocks`` (the metadata database), not in a file.
        self.in_db = in_db

    def to_json(self) -> dict:
        return {"size": self.size, "dirty": self.dirty, "t": self.t}


class BlockCache:
    def __init__(self, directory: str | os.PathLike, store: store_mod.ObjectStore,
                 codec: BlockCodec, max_bytes: int = 10 << 30, dirty_limit: int | None = None,
                 uploaders: int = 8, downloaders: int = 4, hot_blocks: int = 8,
                 upload_paused: bool = False, upload_delay: float = 0.0,
                 upload_delay_max: float = 30.0, db: Database | None = None,
                 small_block: int = SMALL_BLOCK, packs: PackMap | None = None,
                 pack_threshold: int = 0, pack_size: int = 8 << 20):
        self.dir = Path(directory)
        # Where blocks up to ``small_block`` bytes (as stored) wait for upload; None: files.
        self.db = db
        self.small_block = small_block if db is not None else 0
        if db is not None:
            db.create_tables()
        (self.dir / "blocks").mkdir(parents=True, exist_ok=True)
        self.store = store
        self.codec = codec
        self.max_bytes = max_bytes
        self.dirty_limit = dirty_limit if dirty_limit is not None else max_bytes * 8 // 10
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._entries: collections.OrderedDict[str, _Entry] = collections.OrderedDict()
        self._queue: collections.deque[str] = collections.deque()
        # Blocks that go to the bucket in packs (stored size up to ``pack_threshold``), in
        # the order they came, and their bytes; ``packs`` says where uploaded ones went.
        self.packs = packs
        # Compared with stored sizes: a block of pack_threshold raw bytes stored raw counts
        # its header too.
        self.pack_threshold = pack_threshold + HEADER.size \
            if packs is not None and pack_threshold else 0
        self.pack_size = pack_size
        self._small: collections.OrderedDict[str, None] = collections.OrderedDict()
        self._small_bytes = 0
        self._abandoned: set[str] = set()  # discarded while uploading (``discard``)
        # Called with the names of abandoned blocks once their upload is over (whether it
        # worked or not); the owner discards what is still unused (``Publisher``).
        self.on_abandoned: Callable[[list[bytes]], None] | None = None
        # name -> (raw size, stored size) from the metadata, or None (``_read_remote_frames``)
        self.block_sizes: Callable[[bytes], tuple[int, int] | None] | None = None
        # pack -> where the last miss in it ended (``_get_stored``'s read-ahead)
        self._pack_next: collections.OrderedDict[str, int] = collections.OrderedDict()
        self._uploading: set[str] = set()
        self._inflight: dict[str, Future] = {}
        self._hot: collections.OrderedDict[str, bytes] = collections.OrderedDict()
        # Frame tables of cached blocks (None: not a codec-2 block) and decompressed frames.
        self._tables: collections.OrderedDict[str, list | None] = collections.OrderedDict()
        self._frames: collections.OrderedDict[tuple[str, int], bytes] = \
            collections.OrderedDict()
        self._frames_bytes = 0
        self._hot_max = hot_blocks
        self.total_bytes = 0
        self.dirty_bytes = 0
        self.db_blocks = 0           # entries held in ``cache_blocks``, and their bytes
        self.db_bytes = 0
        self.stats = collections.Counter()
        self.last_error: str | None = None
        self.last_error_time: float | None = None
        self._closing = False
        self._paused = upload_paused
        self.upload_delay = upload_delay
        self.upload_delay_max = max(upload_delay_max, upload_delay)
        self._last_change = 0.0      # time.monotonic() of the newest block or touch()
        self._draining = 0        # callers of wait_uploaded: no delay meanwhile
        self.room_timeout = 30.0
        # WAL: one flush per commit instead of a rollback journal's several; no outer_stack:
        # sqlitedict would capture a traceback on every request to report errors with it.
        self._index = SqliteDict(str(self.dir / "index.sqlite"), tablename="blocks",
                                 encode=json.dumps, decode=json.loads, autocommit=False,
                                 journal_mode="WAL", outer_stack=False)
        # Commits survive a crash of the process at once; ``flush_index`` flushes them.
        self._index.conn.execute("PRAGMA synchronous = NORMAL")
        self._unsynced: set[str] = set()   # block files written without fsync
        self._index_changed = False        # index rows written since the last ``sync``
        self._shards: set[str] = set()     # block subdirectories known to exist on disk
        self._unindexed: list[str] = []    # block files without an index row (``adopt``)
        self._load()
        self._downloads = ThreadPoolExecutor(downloaders, thread_name_prefix="rzd-fetch")
        self._uploaders = [threading.Thread(target=self._upload_loop, name=f"rzd-upload-{i}",
                                            daemon=True) for i in range(uploaders)]

    def start(self) -> None:
        """Start the uploaders (after the owner has dropped blocks it does not want)."""
        for t in self._uploaders:
            t.start()

    # -- start-up --

    def _load(self) -> None:
        """Rebuild the LRU and the upload queue from the blocks held in the database (all
        of them dirty: whether one was uploaded is not recorded, at worst it goes twice) and
        the index; drop files neither knows."""
        found = {}
        if self.db is not None:
            for name, t, size in self.db.reader().execute(
                    "SELECT hash, t, length(data) FROM cache_blocks"):
                found[name.hex()] = _Entry(size, True, t, in_db=True)
        for hexname, e in self._index.items():
            if hexname in found:     # a move to a file was cut short: the row is the copy
                del self._index[hexname]
            elif not self._path(hexname).exists():
                if e["dirty"]:
                    log.error("dirty block %s is missing from the cache directory", hexname)
                del self._index[hexname]
            else:
                found[hexname] = _Entry(e["size"], e["dirty"], e["t"])
        for hexname, entry in sorted(found.items(), key=lambda kv: kv[1].t):
            self._add(hexname, entry)
            if entry.dirty:
                self._enqueue(hexname, entry)
        for sub in (self.dir / "blocks").iterdir():
            self._shards.add(sub.name)
            for f in sub.iterdir():
                entry = self._entries.get(f.name)
                if entry is not None:
                    if entry.in_db:
                        f.unlink(missing_ok=True)    # the file of an unfinished move
                    continue
                if _is_block_name(f.name):
                    self._unindexed.append(f.name)   # ``adopt`` decides
                else:
                    f.unlink(missing_ok=True)        # a temp file
        self._index.commit(blocking=True)
        if self._queue or self._small:
            log.info("upload queue rebuilt: %d blocks, %d bytes",
                     len(self._queue) + len(self._small), self.dirty_bytes)

    def adopt(self, wanted: Callable[[bytes], bool]) -> list[bytes]:
        """Settle the block files that have no index row: written by a ``put_dirty`` whose
        index commit a crash overtook (``sync`` does not wait for it, and the index reaches
        the disk only at ``flush_index``). Those ``wanted`` (named by committed metadata) are
        verified and queued for upload again; the rest are deleted. Call before ``start``;
        returns the names deleted (an uploader may have stored them before the crash)."""
        kept, dropped = 0, []
        for hexname in self._unindexed:
            path, name = self._path(hexname), bytes.fromhex(hexname)
            if not wanted(name):
                path.unlink(missing_ok=True)    # a write that never committed
                dropped.append(name)
                continue
            try:
                data = path.read_bytes()
                self.codec.decode(data, name)
            except (OSError, errors.Corrupt) as exc:
                log.error("block %s named by the metadata is damaged in the cache: %s",
                          hexname[:16], exc)
                path.unlink(missing_ok=True)
                continue
            entry = _Entry(len(data), True, time.time())
            self._add(hexname, entry)
            self._index[hexname] = entry.to_json()
            self._enqueue(hexname, entry)
            kept += 1
        self._unindexed = []
        self._index.commit(blocking=True)
        if kept:
            log.info("%d cached blocks had lost their index rows in a crash; queued again", kept)
        return dropped

    def _path(self, hexname: str) -> Path:
        return self.dir / "blocks" / hexname[:2] / hexname

    def _add(self, hexname: str, entry: _Entry) -> None:
        """Count a new entry in (caller holds ``_lock``, or is ``__init__``)."""
        self._entries[hexname] = entry
        self.total_bytes += entry.size
        if entry.dirty:
            self.dirty_bytes += entry.size
        if entry.in_db:
            self.db_blocks += 1
            self.db_bytes += entry.size

    def _packable(self, entry: _Entry) -> bool:
        return entry.size <= self.pack_threshold

    def _enqueue(self, hexname: str, entry: _Entry, front: bool = False) -> None:
        """Queue a dirty block for upload, alone or in a pack (caller holds ``_lock``)."""
        if self._packable(entry):
            if hexname not in self._small:
                self._small[hexname] = None
                self._small_bytes += entry.size
                if front:
                    self._small.move_to_end(hexname, last=False)
        elif front:
            self._queue.appendleft(hexname)
        else:
            self._queue.append(hexname)

    def _forget(self, hexname: str) -> _Entry | None:
        """Take an entry out (caller holds ``_lock``); its bytes are the caller's to remove."""
        entry = self._entries.pop(hexname, None)
        self._hot.pop(hexname, None)
        self._forget_frames(hexname)
        if entry is None:
            return None
        self.total_bytes -= entry.size
        if entry.dirty:
            self.dirty_bytes -= entry.size
            if self._small.pop(hexname, 1) is None:
                self._small_bytes -= entry.size
            else:
                try:
                    self._queue.remove(hexname)
                except ValueError:
                    pass
        if entry.in_db:   # never has an index row
            self.db_blocks -= 1
            self.db_bytes -= entry.size
        else:
            self._index.pop(hexname, None)
            self._index_changed = True
        return entry

    # -- writing --

    def put_dirty(self, name: bytes, data: bytes | tuple, durable: bool = True) -> None:
        """Store a new block (the stored object, or its pieces: header, payload) on local
        disk and queue it for upload: flushed to disk, or, with ``durable`` false, only
        written (safe from a crash of the process; the disk gets it before the next
        durable commit of the database, or at its ``sync``). Raises ``NoSpace`` when the
        blocks not yet uploaded would pass the dirty limit.

        A block up to ``small_block`` bytes goes into ``cache_blocks`` in its own commit
        (deferred unless ``durable``): the database's log keeps commits in order, so it is
        on disk before any later commit is. A bigger one goes into a file (made durable by
        ``make_durable`` when not ``durable``), whose index entry is kept after ``sync()``.
        """
        hexname = name.hex()
        parts = data if isinstance(data, tuple) else (data,)
        size = sum(len(p) for p in parts)
        with self._lock:
            if hexname in self._entries:
                return
            self._wait_for_room(size)
        in_db, t = size <= self.small_block, time.time()
        if in_db:
            self._insert_row(name, b"".join(parts), t, durable)
        else:
            self._write_file(hexname, parts, fsync=durable)
        with self._lock:
            if not durable and not in_db:
                self._unsynced.add(hexname)
            if hexname in self._entries:
                return
            entry = _Entry(size, True, t, in_db)
            entry.plain = is_raw(parts[0])   # our own encoding of bytes hashed here
            self._add(hexname, entry)
            if not in_db:
                self._index[hexname] = entry.to_json()
                self._index_changed = True
            self._enqueue(hexname, entry)
            self._last_change = time.monotonic()
            # With a delay, the uploaders need waking only to start their timed wait, or
            # when the delay ends early; a wake per block would cost a thread switch each.
            if (not self.upload_delay or len(self._queue) + len(self._small) == 1
                    or self._small_bytes >= self.pack_size > self._small_bytes - size
                    or self.dirty_bytes * 2 >= self.dirty_limit):
                self._wake.notify()
        self._evict()

    def _insert_row(self, name: bytes, data: bytes, t: float, durable: bool) -> None:
        with (contextlib.nullcontext() if durable else self.db.deferred_sync()), \
                self.db.write() as c:
            c.execute("INSERT OR IGNORE INTO cache_blocks VALUES (?, ?, ?)", (name, t, data))

    def _delete_rows(self, hexnames: list[str]) -> None:
        """Delete blocks from ``cache_blocks`` in one deferred commit (a row a power loss
        brings back is dropped or uploaded again at the next start)."""
        if not hexnames:
            return
        try:
            with self.db.deferred_sync(), self.db.write() as c:
                c.executemany("DELETE FROM cache_blocks WHERE hash = ?",
                              [(bytes.fromhex(h),) for h in hexnames])
        except (errors.FsError, sqlite3.Error) as exc:   # the lease, a full disk
            log.warning("could not drop %d blocks from the database, the next start "
                        "will: %s", len(hexnames), exc)

    def _wait_for_room(self, size: int) -> None:
        """Backpressure: while the store works, wait for uploads to make room under the dirty
        limit; when it is failing (or stays too slow), refuse with ``NoSpace``."""
        deadline = time.monotonic() + self.room_timeout
        while self.dirty_bytes + size > self.dirty_limit:
            remaining = deadline - time.monotonic()
            if self.last_error or self._paused or remaining <= 0:
                self.stats["nospace"] += 1
                why = f"the store fails: {self.last_error}" if self.last_error else \
                    "uploads are paused" if self._paused else "uploads are too slow"
                raise errors.NoSpace(f"{self.dirty_bytes} bytes wait for upload, the limit is "
                                     f"{self.dirty_limit}; {why}")
            self._wake.wait(min(remaining, 0.5))

    def sync(self) -> None:
        """Queue the index commit of every ``put_dirty`` so far, without waiting for it
        (sqlitedict's thread costs two thread switches per small file). The promise of
        ``put_dirty`` does not depend on it: ``adopt`` finds a block whose row was lost by
        the metadata that names it. Nothing to commit (blocks held in the database have no
        index rows): no commit, and no wake-up of sqlitedict's thread."""
        if self._index_changed:
            self._index_changed = False
            self._index.commit(blocking=False)

    def make_durable(self) -> None:
        """Flush to disk the block files ``put_dirty(durable=False)`` left in memory. The
        tree calls this before any commit that reaches the disk, so metadata never becomes
        durable before the blocks it names (a file system's ordered mode)."""
        if self._unsynced:
            self._flush()

    def _flush(self) -> None:
        with self._lock:
            names, self._unsynced = self._unsynced, set()
        dirs = set()
        for hexname in names:
            path = self._path(hexname)
            if fsync_path(path):
                dirs.add(path.parent)
        for d in dirs:
            fsync_path(d)

    def flush_index(self) -> None:
        """Commit the index and flush it to disk: before a block file goes whose row a
        power loss could otherwise bring back as dirty (a clean mark not yet on disk)."""
        self._index.commit(blocking=True)
        fsync_path(self.dir / "index.sqlite-wal")

    def _shard(self, path: Path) -> None:
        """Make the block's subdirectory exist on disk: created once, and its entry in
        ``blocks/`` flushed, so no fsynced block can be lost with an unflushed directory."""
        if path.parent.name in self._shards:
            return
        with space.guard(self.dir):
            path.parent.mkdir(exist_ok=True)
        fsync_path(path.parent.parent)
        with self._lock:
            self._shards.add(path.parent.name)

    def _write_file(self, hexname: str, parts: tuple, fsync: bool,
                    sync_dir: bool = True) -> None:
        path = self._path(hexname)
        self._shard(path)
        tmp = path.with_name(f"{hexname}.tmp{threading.get_ident()}")
        try:
            with space.guard(self.dir):
                with open(tmp, "wb") as f:
                    f.writelines(parts)
                    if fsync:
                        f.flush()
                        os.fsync(f.fileno())
                os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)   # never a half-written block behind
            raise
        if fsync and sync_dir:
            fsync_path(path.parent)

    # -- reading --

    def get(self, name: bytes) -> bytes:
        """The raw bytes of a block, from memory, the cache directory, or the store."""
        hexname = name.hex()
        with self._lock:
            raw = self._hot.get(hexname)
            if raw is not None:
                self._hot.move_to_end(hexname)
                self.stats["hits"] += 1
                return raw
            entry = self._entries.get(hexname)
            if entry is not None:
                self._entries.move_to_end(hexname)
            fut = self._inflight.get(hexname)
        if entry is not None:
            raw = self._read_cached(name, entry)
            if raw is not None:
                with self._lock:
                    self.stats["hits"] += 1
                self._remember(hexname, raw)
                return raw
        if fut is None:
            fut = self._start_fetch(name)
        return fut.result()

    def read(self, name: bytes, offset: int, length: int) -> bytes:
        """``length`` raw bytes of a block from ``offset`` (fewer past its end). A block
        stored raw and already verified by this process is read from its file in place, and
        a block in frames (codec 2) has only the frames that hold the range read, checked
        and decompressed: a 4 KiB random read costs 4 KiB or one frame, not a whole block
        read, decompressed and hashed."""
        hexname = name.hex()
        with self._lock:
            raw = self._hot.get(hexname)
            entry = self._entries.get(hexname)
            plain = raw is None and entry is not None and entry.plain and not entry.in_db
            framed = raw is None and entry is not None and not entry.in_db and \
                not entry.plain and self._tables.get(hexname, 1) is not None
            if plain or framed:
                self._entries.move_to_end(hexname)
        if framed:
            data = self._read_frames(hexname, entry, offset, length)
            if data is not None:
                return data
        if plain:
            try:
                with open(self._path(hexname), "rb") as f:
                    data = os.pread(f.fileno(), length, HEADER.size + offset)
                with self._lock:
                    self.stats["hits"] += 1
                return data
            except OSError:
                pass   # evicted meanwhile: the usual way
        if entry is None and raw is None and self._wants_range(hexname, length):
            data = self._read_remote_frames(name, offset, length)
            if data is not None:
                return data
        return self.get(name)[offset:offset + length]

    def _wants_range(self, hexname: str, length: int) -> bool:
        """A cold read fetches frames rather than the whole block when it is small and
        nobody fetches the block already (read-ahead does, for sequential reads)."""
        with self._lock:
            return length <= RANGE_READ_MAX and hexname not in self._inflight

    def _read_frames(self, hexname: str, entry: _Entry, offset: int,
                     length: int) -> bytes | None:
        """A range of a cached codec-2 block from its frames; None when the block is not
        in frames, or its file went meanwhile (the caller reads it whole)."""
        try:
            with open(self._path(hexname), "rb") as f:
                fd = f.fileno()
                table = self._table(hexname, fd)
                if table is None:
                    return None
                with self._lock:
                    self.stats["hits"] += 1
                return self._from_frames(hexname, table, offset, length,
                                         lambda at, n: os.pread(fd, n, HEADER.size + at))
        except OSError:
            return None      # evicted meanwhile: the usual way
        except errors.Corrupt as exc:
            if entry.dirty:  # the only copy is damaged: nothing can bring it back
                raise errors.Corrupt(f"cached dirty block {hexname[:16]}: {exc}") from None
            log.warning("cached block %s unusable (%s); fetching it again", hexname[:16], exc)
            self._drop(hexname)
            return None

    def _from_frames(self, hexname: str, table: list, offset: int, length: int,
                     read) -> bytes:
        """Raw bytes ``offset``..``+length`` of a codec-2 block: frames kept in memory, the
        rest read with one ``read(payload offset, length)`` of their span, each checked
        and decompressed alone. Raises ``Corrupt``."""
        total = table[-1].raw_at + table[-1].raw_length
        end = min(offset + length, total)
        if offset >= end:
            return b""
        starts = [fr.raw_at for fr in table]
        first = bisect.bisect_right(starts, offset) - 1
        last = bisect.bisect_right(starts, end - 1) - 1
        got = {}
        with self._lock:
            for i in range(first, last + 1):
                raw = self._frames.get((hexname, i))
                if raw is not None:
                    self._frames.move_to_end((hexname, i))
                    got[i] = raw
            self.stats["frame_hits"] += len(got)
        missing = [i for i in range(first, last + 1) if i not in got]
        if missing:
            lo, hi = table[missing[0]], table[missing[-1]]
            buf = read(lo.at, hi.at + hi.length - lo.at)
            if len(buf) != hi.at + hi.length - lo.at:
                raise errors.Corrupt(f"block {hexname[:16]}: frames cut short")
            for i in missing:
                fr = table[i]
                got[i] = self.codec.decode_frame(
                    buf[fr.at - lo.at:fr.at - lo.at + fr.length], fr, hexname[:16])
            self._keep_frames(hexname, {i: got[i] for i in missing})
        start = offset - table[first].raw_at
        if first == last:
            return got[first][start:start + end - offset]
        return b"".join(got[i] for i in range(first, last + 1))[start:start + end - offset]

    def _read_remote_frames(self, name: bytes, offset: int, length: int) -> bytes | None:
        """A range of an uncached block with ranged GETs of its frame table (once, then
        remembered) and of the frames the range needs, wherever the block lives (its own
        object or a pack). None when that does not apply: no sizes known, a block not in
        frames (raw: nothing to check a range by; one frame: the whole is as cheap), or a
        pack rewritten meanwhile; the caller fetches the whole block."""
        sizes = self.block_sizes(name) if self.block_sizes else None
        if sizes is None:
            return None
        raw_len, stored = sizes
        if raw_len <= FRAME or stored >= raw_len + HEADER.size:
            return None
        hexname = name.hex()
        loc = self._locate(name)
        key, base = (loc.key, loc.offset) if loc is not None else (block_key(name), 0)
        payload_len = stored - HEADER.size
        try:
            with self._lock:
                table = self._tables.get(hexname, 0)
            if table == 0:     # not known yet: the table's size follows from the sizes
                size = -(-raw_len // FRAME) * SEEK.size + SEEK_END.size
                tail = self.store.get(key, base + stored - size, size)
                try:
                    table = frame_table(tail, payload_len, raw_len, hexname[:16])
                except errors.Corrupt:
                    table = None   # a version-1 block of one big frame
                with self._lock:
                    self._tables[hexname] = table
                    self.stats["frame_fetches"] += 1
            if table is None:
                return None
            data = self._from_frames(
                hexname, table, offset, length,
                lambda at, n: self.store.get(key, base + HEADER.size + at, n))
            with self._lock:
                self.stats["misses"] += 1
                self.stats["frame_fetches"] += 1
            return data
        except store_mod.NotFound:
            return None        # moved to another pack meanwhile: fetched whole
        except errors.Corrupt as exc:
            log.warning("block %s: a ranged read failed its check (%s); fetching it whole",
                        hexname[:16], exc)
            return None
        except Exception as exc:
            if not (isinstance(exc, store_mod.StoreError) or self.store.is_transient(exc)):
                raise
            self._note_error(exc)
            raise errors.Unavailable(f"cannot fetch block {hexname[:16]}: {exc}") from None

    def _table(self, hexname: str, fd: int) -> list | None:
        """The frame table of a cached block (read from its file once), None if the block
        is not in frames."""
        with self._lock:
            if hexname in self._tables:
                self._tables.move_to_end(hexname)
                return self._tables[hexname]
        _version, codec, raw_len = header_of(os.pread(fd, HEADER.size, 0))
        table = None
        if codec == CODEC_FRAMES:
            payload_len = os.fstat(fd).st_size - HEADER.size
            tail = os.pread(fd, SEEK_END.size, HEADER.size + payload_len - SEEK_END.size)
            size = table_size(tail)
            data = os.pread(fd, size, HEADER.size + payload_len - size)
            table = frame_table(tail, payload_len, raw_len, hexname[:16], data)
        with self._lock:
            self._tables[hexname] = table
            while len(self._tables) > FRAME_TABLES:
                old, old_table = self._tables.popitem(last=False)
                self._drop_frames(old, old_table)
        return table

    def _keep_frames(self, hexname: str, frames: dict[int, bytes]) -> None:
        with self._lock:
            for i, raw in frames.items():
                if (hexname, i) not in self._frames:
                    self._frames[(hexname, i)] = raw
                    self._frames_bytes += len(raw)
            while self._frames_bytes > FRAME_CACHE and self._frames:
                _key, raw = self._frames.popitem(last=False)
                self._frames_bytes -= len(raw)
            self.stats["frames_decoded"] += len(frames)

    def _forget_frames(self, hexname: str) -> None:
        """Drop what is remembered of a block's frames (caller holds ``_lock``)."""
        self._drop_frames(hexname, self._tables.pop(hexname, None))

    def _drop_frames(self, hexname: str, table: list | None) -> None:
        for i in range(len(table) if table else 0):
            raw = self._frames.pop((hexname, i), None)
            if raw is not None:
                self._frames_bytes -= len(raw)

    def _stored(self, hexname: str, entry: _Entry) -> bytes:
        """A cached block as stored, from its row or its file (a block moved out of the
        database meanwhile is in its file). Raises ``FileNotFoundError`` when neither has it."""
        if entry.in_db:
            row = self.db.reader().execute("SELECT data FROM cache_blocks WHERE hash = ?",
                                           (bytes.fromhex(hexname),)).fetchone()
            if row is not None:
                return row[0]
        return self._path(hexname).read_bytes()

    def stored_copy(self, name: bytes) -> bytes | None:
        """The cached copy of a block as stored (not verified), or None."""
        with self._lock:
            entry = self._entries.get(name.hex())
        try:
            return None if entry is None else self._stored(name.hex(), entry)
        except OSError:
            return None

    def _read_cached(self, name: bytes, entry: _Entry) -> bytes | None:
        hexname = name.hex()
        try:
            data = self._stored(hexname, entry)
            raw = self.codec.decode(data, name)
            entry.plain = is_raw(data)
            return raw
        except (OSError, errors.Corrupt) as exc:
            if entry.dirty:
                # The only copy is damaged: nothing can bring it back.
                raise errors.Corrupt(f"cached dirty block {hexname[:16]}: {exc}") from None
            log.warning("cached block %s unusable (%s); fetching it again", hexname[:16], exc)
            self._drop(hexname)
            return None

    def _remember(self, hexname: str, raw: bytes) -> None:
        with self._lock:
            self._hot[hexname] = raw
            while len(self._hot) > self._hot_max:
                self._hot.popitem(last=False)

    def _start_fetch(self, name: bytes) -> Future:
        hexname = name.hex()
        with self._lock:
            fut = self._inflight.get(hexname)
            if fut is not None:
                return fut
            fut = self._downloads.submit(self._fetch, name)
            self._inflight[hexname] = fut
            self.stats["misses"] += 1
        return fut

    def _get_stored(self, name: bytes) -> tuple[bytes, list]:
        """A block's stored form from the bucket: a ranged GET of its bytes in a pack, or its
        own object. A pack rewritten meanwhile (``repack.py``) is looked up again.

        Pack read-ahead: when this miss follows the previous miss in the same pack (small
        files read in the order they were written: a copy, a restore, a build), the GET
        runs on over the blocks after it, up to ``PACK_READAHEAD`` bytes; those come back as
        (location, stored bytes) pairs for ``_keep_fetched``. A lone miss reads its block only.
        """
        for _attempt in range(3):
            loc = self._locate(name)
            if loc is None:
                return self.store.get(block_key(name)), []
            run = self._pack_run(loc)
            end = run[-1].offset + run[-1].length if run else loc.offset + loc.length
            try:
                data = self.store.get(loc.key, loc.offset, end - loc.offset)
            except store_mod.NotFound:
                if self.packs.locate(name) != loc:
                    continue      # moved to another pack while we asked
                raise
            if len(data) != end - loc.offset:
                raise errors.Corrupt(f"block {name.hex()[:16]}: pack {loc.pack} is shorter "
                                     "than its index says")
            with self._lock:
                self._pack_next[loc.pack] = end
                while len(self._pack_next) > 64:
                    self._pack_next.popitem(last=False)
            more = [(e, data[e.offset - loc.offset:e.offset - loc.offset + e.length])
                    for e in run]
            return data[:loc.length], more
        raise store_mod.NotFound(f"block {name.hex()[:16]} keeps moving between packs")

    def _locate(self, name: bytes):
        """Where a block lives in a pack (``packs.Location``), None: its own object."""
        return self.packs.locate(name) if self.packs is not None else None

    def _pack_run(self, loc) -> list:
        """The blocks after ``loc`` in its pack worth reading along (see ``_get_stored``)."""
        with self._lock:
            last = self._pack_next.get(loc.pack)
        if last is None or not 0 <= loc.offset - last <= PACK_GAP:
            return []
        run, end = [], loc.offset + loc.length
        for e in self.packs.after(loc.pack, end, PACK_READAHEAD):
            if e.offset - end > PACK_GAP:
                break
            with self._lock:
                if e.name.hex() in self._entries or e.name.hex() in self._inflight:
                    break
            run.append(e)
            end = e.offset + e.length
        return run

    def _keep_fetched(self, more: list) -> None:
        """Verify and cache, clean, the blocks a pack read-ahead brought along; a damaged
        one is skipped (a read of it later fetches it again and reports it)."""
        for e, data in more:
            hexname = e.name.hex()
            try:
                self.codec.decode(data, e.name)
            except errors.Corrupt:
                continue
            self._cache_clean(hexname, data)
            with self._lock:
                self.stats["readahead_blocks"] += 1
        self._evict()

    def _cache_clean(self, hexname: str, data: bytes) -> None:
        """Keep a verified block fetched from the store (no flush: the store has it)."""
        with self._lock:
            self.stats["fetched_bytes"] += len(data)
            if hexname in self._entries:
                return
        self._write_file(hexname, (data,), fsync=False)
        with self._lock:
            if hexname not in self._entries:
                entry = _Entry(len(data), False, time.time())
                entry.plain = is_raw(data)   # just verified by decode
                self._add(hexname, entry)
                self._index[hexname] = entry.to_json()
                self._index_changed = True

    def _fetch(self, name: bytes) -> bytes:
        hexname = name.hex()
        try:
            try:
                data, more = self._get_stored(name)
            except store_mod.NotFound:
                raise errors.Corrupt(f"block {hexname[:16]} is missing from the store") from None
            except Exception as exc:
                if not (isinstance(exc, store_mod.StoreError) or self.store.is_transient(exc)):
                    raise
                self._note_error(exc)
                raise errors.Unavailable(f"cannot fetch block {hexname[:16]}: {exc}") from None
            raw = self.codec.decode(data, name)
            self._cache_clean(hexname, data)
            self._remember(hexname, raw)
            self._evict()
            if more:   # kept before the read returns, so the next read finds them
                self._keep_fetched(more)
            return raw
        finally:
            with self._lock:
                self._inflight.pop(hexname, None)

    def prefetch(self, names: list[bytes]) -> None:
        """Start fetching blocks that are not cached (read-ahead); returns at once."""
        for name in names:
            hexname = name.hex()
            with self._lock:
                if hexname in self._entries or hexname in self._hot or hexname in self._inflight:
                    continue
            self._start_fetch(name)

    def contains(self, name: bytes) -> bool:
        with self._lock:
            return name.hex() in self._entries

    # -- eviction and dropping --

    def _evict(self) -> None:
        victims = []
        with self._lock:
            if self.total_bytes <= self.max_bytes:
                return
            excess = self.total_bytes - self.max_bytes
            for hexname, entry in self._entries.items():
                if excess <= 0:
                    break
                if entry.dirty or hexname in self._inflight:
                    continue
                victims.append((hexname, entry))
                excess -= entry.size
            for hexname, _entry in victims:
                self._forget(hexname)
                self.stats["evictions"] += 1
        if victims:   # their clean marks on disk first: a crash cannot call them dirty
            self.flush_index()
        self._remove(victims)

    def _remove(self, gone: list[tuple[str, _Entry]]) -> None:
        """Delete the bytes of entries taken out: rows in one commit, files one by one."""
        if self.db is not None:
            self._delete_rows([h for h, e in gone if e.in_db])
        for hexname, entry in gone:
            if not entry.in_db:
                self._path(hexname).unlink(missing_ok=True)

    def _drop(self, hexname: str) -> None:
        with self._lock:
            entry = self._forget(hexname)
        if entry is not None:
            self._remove([(hexname, entry)])

    def discard(self, names: list[bytes], wait: bool = True) -> list[bytes]:
        """Forget blocks no metadata refers to any more (dirty ones are never uploaded);
        return the names forgotten. A block being uploaded is waited for, or with ``wait``
        false left to its upload: an aborted write must not wait for one that may take the
        store's whole retry time (and with packs, an upload holds many blocks). Once that
        upload is over, ``on_abandoned`` gets the names."""
        gone = []
        for name in names:
            hexname = name.hex()
            with self._lock:
                if not wait and hexname in self._uploading:
                    self._abandoned.add(hexname)
                    continue
                while hexname in self._uploading:
                    self._wake.wait(0.1)
                entry = self._forget(hexname)
            if entry is not None:
                gone.append((hexname, entry))
        self._remove(gone)
        return [bytes.fromhex(h) for h, _e in gone]

    def names(self) -> list[bytes]:
        with self._lock:
            return [bytes.fromhex(h) for h in self._entries]

    def dirty_names(self) -> list[bytes]:
        with self._lock:
            return [bytes.fromhex(h) for h, e in self._entries.items() if e.dirty]

    # -- uploading --

    def pause_uploads(self, paused: bool = True) -> None:
        with self._lock:
            self._paused = paused
            self._wake.notify_all()

    def _upload_loop(self) -> None:
        delay = 0.0
        while True:
            with self._lock:
                job = None
                while not self._closing:
                    if self._paused or not (self._queue or self._small):
                        self._wake.wait()
                        continue
                    job = self._next_job()
                    if not isinstance(job, float):
                        break
                    self._wake.wait(job)
                if self._closing:
                    return
                if self._queue or self._small:
                    self._wake.notify()   # the next uploader joins in (after a delay)
                self._uploading.update(job)
            try:
                # A lone block goes as itself: a pack of one would cost the same request.
                ok = self._upload(job[0]) if len(job) == 1 else self._upload_pack(job)
            finally:
                with self._lock:
                    self._uploading.difference_update(job)
                    abandoned = [h for h in job if h in self._abandoned]
                    self._abandoned.difference_update(abandoned)
                    self._wake.notify_all()
            if abandoned and self.on_abandoned is not None:
                try:
                    self.on_abandoned([bytes.fromhex(h) for h in abandoned])
                except Exception:   # left as garbage: the next start drops it
                    log.exception("could not drop %d blocks of aborted writes", len(abandoned))
            if ok:
                delay = 0.0
            else:
                delay = min(30.0, max(0.5, delay * 2))
                with self._lock:
                    if not self._closing:   # close() must not wait out a back-off
                        self._wake.wait(delay)

    def _next_job(self) -> list[str] | float:
        """What an uploader takes now: one block, or the blocks of one pack, out of their
        queue; or how long to wait before asking again (caller holds ``_lock``)."""
        waits = []
        if self._queue:
            wait = self._upload_wait()
            if wait <= 0:
                return [self._queue.popleft()]
            waits.append(wait)
        if self._small:
            wait = self._pack_wait()
            if wait <= 0:
                job, size = [], 0
                while self._small and size < self.pack_size:
                    hexname, _ = self._small.popitem(last=False)
                    entry = self._entries[hexname]
                    self._small_bytes -= entry.size
                    size += entry.size
                    job.append(hexname)
                return job
            waits.append(wait)
        return min(waits)
    def touch(self) -> None:
        """A face served a request: uploads keep waiting for a pause (``upload_delay``)."""
        self._last_change = time.monotonic()

    def busy(self) -> bool:
        """Whether a block was written or a face reported a request within ``upload_delay``."""
        return bool(self.upload_delay) and time.monotonic() - self._last_change < self.upload_delay

    def _pack_wait(self) -> float:
        """Seconds until the blocks waiting for a pack go (caller holds ``_lock``): a full
        pack at the same pause as other uploads, a partial one once its oldest block waited
        ``upload_delay_max``; at once when someone drains the queue or under pressure."""
        if self._draining or self.dirty_bytes * 2 >= self.dirty_limit:
            return 0.0
        head = self._entries.get(next(iter(self._small)))
        oldest = 0.0 if head is None else head.t + self.upload_delay_max - time.time()
        if self._small_bytes < self.pack_size:
            return max(0.0, oldest)
        if not self.upload_delay:
            return 0.0
        quiet = self._last_change + self.upload_delay - time.monotonic()
        return max(0.0, min(quiet, oldest))

    def _upload_wait(self) -> float:
        """Seconds until the head of the queue may be uploaded (caller holds ``_lock``)."""
        if not self.upload_delay or self._draining or self.dirty_bytes * 2 >= self.dirty_limit:
            return 0.0
        quiet = self._last_change + self.upload_delay - time.monotonic()
        head = self._entries.get(self._queue[0])
        oldest = 0.0 if head is None else head.t + self.upload_delay_max - time.time()
        return max(0.0, min(quiet, oldest))

    def _upload(self, hexname: str) -> bool:
        """Upload one dirty block; False if the store failed and the block is queued again.
        A block held in the database then moves to a file."""
        got = self._dirty_copy(hexname)
        if got is None:
            return True  # dropped meanwhile
        entry, data = got
        try:
            self.store.put(block_key(bytes.fromhex(hexname)), data)
        except Exception as exc:  # any failure: keep the block queued, never lose it
            self._failed([hexname], exc, f"block {hexname[:16]}")
            return False
        moved = entry.in_db and self._to_file(hexname, data)
        with self._lock:
            self.stats["uploads"] += 1
            self.stats["uploaded_bytes"] += len(data)
        self._mark_clean({hexname: moved})
        return True

    def _dirty_copy(self, hexname: str) -> tuple[_Entry, bytes] | None:
        """A queued block's entry and stored bytes for its upload; None when it went
        meanwhile, or has no bytes (a deferred commit that was rolled back: nothing names
        it, and it is dropped)."""
        with self._lock:
            entry = self._entries.get(hexname)
        if entry is None:
            return None
        try:
            return entry, self._stored(hexname, entry)
        except FileNotFoundError:
            with self._lock:
                lost = self._entries.get(hexname) is entry
            if lost:
                log.error("dirty block %s has no bytes in the cache; dropped", hexname[:16])
                self._drop(hexname)
            return None

    def _failed(self, job: list[str], exc: BaseException, what: str) -> None:
        """An upload of ``job`` failed: its blocks go back to the head of their queue."""
        self._note_error(exc)
        with self._lock:
            for hexname in reversed(job):
                entry = self._entries.get(hexname)
                if entry is not None and entry.dirty:
                    self._enqueue(hexname, entry, front=True)
            self.stats["upload_errors"] += 1
        if isinstance(exc, (LeaseLost, LeaseLapsed)):
            log.debug("upload of %s not sent: %s", what, exc)
        else:
            log.warning("upload of %s failed, will retry: %s", what, exc)

    def _mark_clean(self, done: dict[str, bool]) -> None:
        """Blocks that reached the bucket (``done``: name -> whether its copy moved from the
        database into a file) are no longer dirty; the moved ones' rows go in one commit."""
        gone = []
        with self._lock:
            for hexname, moved in done.items():
                entry = self._entries.get(hexname)
                if entry is None:
                    if moved:
                        gone.append(hexname)   # dropped while it moved: no file without entry
                    continue
                if entry.dirty:
                    entry.dirty = False
                    self.dirty_bytes -= entry.size
                    if moved and entry.in_db:
                        entry.in_db = False
                        self.db_blocks -= 1
                        self.db_bytes -= entry.size
                    if not entry.in_db:
                        self._index[hexname] = entry.to_json()
                        self._index_changed = True
            self.last_error = None
            self._wake.notify_all()
        self._delete_rows([h for h, moved in done.items() if moved])
        for hexname in gone:
            self._path(hexname).unlink(missing_ok=True)

    def _upload_pack(self, job: list[str]) -> bool:
        """Upload the blocks of ``job`` as one pack, then record where each went (one durable
        commit) before any counts as uploaded: the journal ships a block's row only once it
        is clean, so the bucket never names a block it cannot locate. False if the store or
        the commit failed; the blocks are queued again (a pack that reached the bucket
        without its rows is an orphan, collected by ``fsck --repair``)."""
        builder, stored, placed = PackBuilder(), {}, {}
        for hexname in job:
            got = self._dirty_copy(hexname)
            if got is None:
                continue
            # In a pack already: a crash came between its pack's rows and its clean mark.
            # Not uploaded twice.
            if self.packs.locate(bytes.fromhex(hexname)) is not None:
                placed[hexname] = got
            else:
                builder.add(bytes.fromhex(hexname), got[1])
                stored[hexname] = got
        if placed:
            self._mark_clean({h: e.in_db and self._to_file(h, d, fsync=False)
                              for h, (e, d) in placed.items()})
        if not builder:
            return True
        pack_id = new_pack_id()
        try:
            self.store.put(pack_key(pack_id), builder.finish())
            self.packs.record(pack_id, builder.size, builder.entries)
        except Exception as exc:   # any failure: keep the blocks queued, never lose them
            self._failed(job, exc, f"a pack of {len(builder)} blocks")
            return False
        # Clean copies need no flush: after a power loss a torn or missing file is fetched
        # again from the pack, and the rows stay until the files are written.
        done = {h: entry.in_db and self._to_file(h, data, fsync=False)
                for h, (entry, data) in stored.items()}
        with self._lock:
            self.stats["packs_uploaded"] += 1
            self.stats["packed_blocks"] += len(builder)
            self.stats["uploads"] += 1
            self.stats["uploaded_bytes"] += builder.size
        self._mark_clean(done)
        return True

    def _to_file(self, hexname: str, data: bytes, fsync: bool = True) -> bool:
        """Copy an uploaded block from the database into its file, so that the database
        holds only what waits for upload. The file is fsynced before its row goes: after a
        power loss the row or a whole file is there (or no file: the store has the block).
        On failure the block stays in the database, clean, until evicted."""
        try:
            self._write_file(hexname, (data,), fsync=fsync, sync_dir=False)
            return True
        except (OSError, errors.FsError) as exc:
            log.warning("block %s stays in the database: %s", hexname[:16], exc)
            return False

    def _note_error(self, exc: BaseException) -> None:
        with self._lock:
            self.last_error = str(exc)
            self.last_error_time = time.time()

    def queue_length(self) -> int:
        with self._lock:
            return len(self._queue) + len(self._small) + len(self._uploading)

    def wait_uploaded(self, timeout: float | None = None) -> bool:
        """Block until nothing is dirty (uploading without delay meanwhile); False on
        timeout."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            self._draining += 1
            self._wake.notify_all()
            try:
                while self.dirty_bytes > 0 or self._uploading:
                    remaining = None if deadline is None else deadline - time.monotonic()
                    if remaining is not None and remaining <= 0:
                        return False
                    self._wake.wait(min(remaining or 0.5, 0.5))
            finally:
                self._draining -= 1
        self.flush_index()
        return True

    # -- figures and shutdown --

    def _oldest_dirty_time(self) -> float | None:
        """When the oldest block still waiting for upload was written (caller holds
        ``_lock``). The queue drains oldest first and a failed upload goes back to its head,
        so only its head and the blocks being uploaded can be the oldest."""
        waiting = list(self._uploading) + ([self._queue[0]] if self._queue else []) + \
            ([next(iter(self._small))] if self._small else [])
        times = [e.t for e in map(self._entries.get, waiting) if e is not None]
        return min(times, default=None)

    def figures(self) -> dict:
        with self._lock:
            hits, misses = self.stats["hits"], self.stats["misses"]
            oldest = self._oldest_dirty_time()
            return {
                "cache_bytes": self.total_bytes, "cache_limit": self.max_bytes,
                "dirty_bytes": self.dirty_bytes, "dirty_limit": self.dirty_limit,
                "cache_db_blocks": self.db_blocks, "cache_db_bytes": self.db_bytes,
                "upload_queue": len(self._queue) + len(self._small) + len(self._uploading),
                "upload_oldest_age": None if oldest is None else max(0.0, time.time() - oldest),
                "hit_rate": hits / (hits + misses) if hits + misses else None,
                "last_store_error": self.last_error, "hits": hits, "misses": misses,
                **self.stats,
            }

    def close(self) -> None:
        with self._lock:
            self._closing = True
            self._wake.notify_all()
        for t in self._uploaders:
            if t.is_alive():
                t.join(timeout=60)
        self._downloads.shutdown(wait=True, cancel_futures=True)
        self._index.commit(blocking=True)
        self._index.close()
