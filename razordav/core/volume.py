"""A volume: one data dir (tree database, block cache) over one object store. This is the
object every face receives.

``Volume`` offers ``os``-like calls by path (stat, listdir, mkdir, unlink, rename, open
for reading, a streaming writer, copy) and by inode (``tree`` for the namespace,
``pwrite``/``truncate`` for contents), so WebDAV and FUSE are thin shims over it.

It also owns the lifecycle around the parts: the volume descriptor ``volume.json`` in the
store, the worker pool that encodes blocks, garbage collection of unreferenced blocks, and
the clean-up after a crash (unlinked inodes, blocks never committed). It sets the quota
(``set_quota``) and refuses early what cannot fit (``check_room``); the tree enforces it
where each change commits.

Threading: all methods are safe to call from many threads. Per-inode locks serialise
in-place writes to one file; ``Pins`` keeps GC away from blocks in use (see files.py).
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
import uuid
from pathlib import Path

from .. import store as store_mod
from . import errors, space
from .blocks import BlockCodec, block_key
from .cache import SMALL_BLOCK, BlockCache
from .files import FileReader, FileWriter
from .handles import OpenFiles
from .publish import Publisher
from .journal import Shipper, begin_term
from .lease import Lease, gateway_id
from .extents import Extents
from .packs import PackMap
from .repack import Repacker
from .tree import Attr, Tree, check_name, split_path

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
DEFAULT_BLOCK_SIZE = 4 << 20
DEFAULT_CACHE_SIZE = 10 << 30
# Packs (docs/design.md, "Packs"): blocks stored this small or smaller travel in packs of
# about PACK_SIZE; a pack whose live bytes fall under REPACK_BELOW of it is rewritten, with
# at most REPACK_SHARE of the time spent on uploads. Chosen by scripts/bench_packs.py.
PACK_THRESHOLD = 512 << 10
PACK_SIZE = 8 << 20
REPACK_BELOW = 0.5
REPACK_SHARE = 0.1


class Volume:
    def __init__(self, data_dir: Path, store: store_mod.ObjectStore, tree: Tree,
                 block_size: int, cache: BlockCache, codec: BlockCodec, volume_id: str,
                 workers: int, readahead: int):
        self.data_dir = data_dir
        self.store = store
        self.tree = tree
        self.extents = Extents(tree)
        self.block_size = block_size
        self.cache = cache
        self.codec = codec
        self.volume_id = volume_id
        self.readahead = readahead
        self.lease: Lease | None = None
        self.shipper: Shipper | None = None
        self.packs: PackMap = cache.packs or PackMap(tree.db)
        cache.block_sizes = self.extents.block_sizes   # cold reads of a few frames
        self.repacker: Repacker | None = None
        self.publisher = Publisher(tree, self.extents, cache, codec, workers)
        self.files: OpenFiles | None = None     # the write buffers, from ``open`` on
        # ``lock_check(path)`` raises ``errors.Locked`` when a WebDAV lock covers ``path``;
        # set by the wiring that owns the lock storage (cli), asked by faces that send no
        # lock tokens (FUSE). None: no locks to honour.
        self.lock_check = None
        self._locks_lock = threading.Lock()
        self._open_readers: dict[int, int] = {}
        self._closed = False
        # The quota, mirrored from the tree so that unlimited volumes skip every early check.
        self.max_bytes: int | None = None
        self.max_files: int | None = None

    @classmethod
    def open(cls, data_dir: str | os.PathLike, store_url: str | None = None, *,
             endpoint: str | None = None, store: store_mod.ObjectStore | None = None,
             block_size: int | None = None, cache_size: int = DEFAULT_CACHE_SIZE,
             dirty_limit: int | None = None, uploaders: int = 8, upload_paused: bool = False,
             upload_delay: float = 0.0, upload_delay_max: float = 30.0,
             workers: int | None = None, readahead: int = 4, journal_interval: float = 2.0,
             snapshot_interval: float = 600.0, lease_ttl: float = 30.0,
             takeover: bool = False, small_block: int = SMALL_BLOCK,
             pack_threshold: int = PACK_THRESHOLD, pack_size: int = PACK_SIZE,
             repack_below: float = REPACK_BELOW,
             repack_share: float = REPACK_SHARE) -> "Volume":
        """Open (creating if needed) the volume in ``data_dir`` over the given store.

        ``store_url`` defaults to a local store inside the data dir. The block size is fixed
        when the volume is created; a different ``block_size`` later is ignored. Metadata
        changes are shipped to the store every ``journal_interval`` seconds (0: only when
        ``collect_garbage``/``close`` ask). Raises ``VolumeError`` when another gateway
        holds the volume's lease (unless ``takeover``). Blocks up to ``small_block`` bytes
        (as stored) wait for upload in the metadata database (0: every block in a file).
        Blocks up to ``pack_threshold`` bytes (as stored; 0: none) go to the store in packs
        of about ``pack_size`` bytes; packs with less than ``repack_below`` of their bytes
        still in use are rewritten, taking at most ``repack_share`` of the upload time.
        """
        data_dir = Path(data_dir).resolve()
        data_dir.mkdir(parents=True, exist_ok=True)
        if store is None:
            store = store_mod.open_store(store_url or default_store_url(data_dir),
                                         endpoint=endpoint)
        lease = Lease(store, gateway_id(data_dir), ttl=lease_ttl)
        store.limit_write_time(lease.request_bound)
        try:
            lease.acquire(takeover)
        except store_mod.StoreError as exc:
            raise errors.VolumeError(f"cannot take the volume's lease: {exc}") from None
        lease.start()
        # From here on every store write and every change of the tree asks the lease.
        store = _fenced(store, lease.check)
        tree = None
        try:
            desc = _load_or_create_descriptor(store, block_size or DEFAULT_BLOCK_SIZE)
            if block_size and block_size != desc["block_size"]:
                log.warning("volume block size is %d; ignoring %d", desc["block_size"],
                            block_size)
            tree = Tree(data_dir / "meta.db")
            tree.db.write_guard = lease.check_local_write
            known = tree.meta("volume_id")
            if known is None:
                tree.set_meta("volume_id", desc["volume_id"])
                tree.set_meta("block_size", str(desc["block_size"]))
            elif known != desc["volume_id"]:
                raise errors.VolumeError(
                    f"data dir {data_dir} belongs to volume {known}, but {store.url} holds "
                    f"volume {desc['volume_id']}; use another --data-dir")
            try:
                caught = begin_term(store, tree, lease)
            except errors.Corrupt as exc:
                raise errors.VolumeError(f"cannot bring this data dir up to date with the "
                                         f"bucket ({exc}); restore into a new --data-dir") \
                    from None
            if caught:
                log.info("applied %d journal segments the bucket gained after this data dir "
                         "was restored", caught)
        except BaseException:
            if tree is not None:
                tree.close()
            lease.release()
            raise
        codec = BlockCodec()
        cache = BlockCache(data_dir / "cache", store, codec, max_bytes=cache_size,
                           dirty_limit=dirty_limit, uploaders=uploaders,
                           upload_paused=upload_paused, upload_delay=upload_delay,
                           upload_delay_max=upload_delay_max, db=tree.db,
                           small_block=small_block, packs=PackMap(tree.db),
                           pack_threshold=pack_threshold, pack_size=pack_size)
        vol = cls(data_dir, store, tree, desc["block_size"], cache, codec, desc["volume_id"],
                  workers or max(2, os.cpu_count() or 2), readahead)
        vol.lease = lease
        vol.repacker = Repacker(vol, below=repack_below, share=repack_share,
                                pack_size=pack_size)
        tree.db.before_durable.append(cache.make_durable)
        vol._recover()
        cache.start()
        vol.files = OpenFiles(vol)
        vol.shipper = Shipper(vol, interval=journal_interval or 2.0,
                              snapshot_interval=snapshot_interval)
        vol.shipper.on_tick.append(vol._write_stats)
        vol._write_stats()
        if journal_interval > 0:
            vol.shipper.start()
        return vol

    def _recover(self) -> None:
        """After a crash: drop inodes unlinked while open and blocks no commit refers to."""
        n = self.tree.purge_orphans()
        if n:
            log.info("removed %d unlinked inodes left by an earlier run", n)
        unindexed = self.cache.adopt(lambda name: bool(self.extents.block_refs_row(name)))
        stray = [name for name in self.cache.names() if not self.extents.block_refs_row(name)]
        if stray or unindexed:
            # Blocks of writes that never committed: no metadata, here or in the bucket,
            # refers to them. Some may have reached the store before the crash.
            log.info("dropping %d cached blocks of writes that never completed",
                     len(stray) + len(unindexed))
            self.cache.discard(stray)
            stray += unindexed
            with self.tree.db.write() as c:     # packed before the crash: locations go too
                self.packs.forget(c, stray)
            try:
                self.store.delete_many(block_key(n) for n in stray)
            except Exception as exc:  # the store is down: fsck --repair finds them later
                log.warning("could not delete %d unfinished blocks from the store: %s",
                            len(stray), exc)

    # -- quota --

    def set_quota(self, max_bytes: int | None, max_files: int | None) -> None:
        """Limit the logical bytes of all files and the number of inodes (None: unlimited,
        the default). A change that would grow past a limit raises ``NoSpace`` and leaves
        nothing behind; removing and shrinking always work, also over a lowered limit.
        Limits last while this volume is open: whoever opens it sets them again."""
        for value in (max_bytes, max_files):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                      or not 0 <= value < 1 << 63):   # SQLite's INTEGER
                raise errors.InvalidArgument(f"a quota is a count >= 0 or None, not {value!r}")
        self.tree.set_limits(max_bytes, max_files)
        self.max_bytes, self.max_files = max_bytes, max_files

    def usage(self) -> dict[str, int]:
        """In O(1): ``bytes`` (logical size of all regular files, hard links once) and
        ``files`` (inodes of every kind but the root)."""
        u = self.tree.usage()
        return {"bytes": u["bytes"], "files": u["files"]}

    def room(self) -> int | None:
        """Bytes that may still be added under the quota (0 when over it); None: no quota."""
        if self.max_bytes is None:
            return None
        return max(0, self.max_bytes - self.tree.usage()["bytes"])

    def check_room(self, more_bytes: int, more_files: int = 0) -> None:
        """Refuse early (``NoSpace``) a change that would add more than the quota leaves.

        Advice only, to fail before work is done: the transaction that publishes a change
        checks again, and only that check holds against parallel writers."""
        if self.max_bytes is None and self.max_files is None:
            return
        u = self.tree.usage()
        if self.max_bytes is not None and more_bytes > 0 and \
                u["bytes"] + more_bytes > self.max_bytes:
            raise errors.NoSpace(f"quota exceeded: {u['bytes']} of {self.max_bytes} bytes "
                                 f"used, {more_bytes} more do not fit")
        if self.max_files is not None and more_files > 0 and \
                u["files"] + more_files > self.max_files:
            raise errors.NoSpace(f"quota exceeded: {u['files']} of {self.max_files} files "
                                 "used")

    # -- the namespace by inode: what the faces call (FUSE all of it, DAV and the API some) --
    #
    # Every call of the faces records that a request happened (``request``): uploads and
    # journal rounds wait for a pause in them. Internal work calls ``tree`` directly.

    def request(self) -> None:
        """Note a client request now (uploads wait for a pause of ``upload_delay``)."""
        self.cache.touch()

    def getattr(self, ino: int) -> Attr:
        self.cache.touch()
        return self.tree.getattr(ino)

    def lookup(self, parent: int, name: str) -> Attr:
        self.cache.touch()
        return self.tree.lookup(parent, name)

    def readdir(self, ino: int, after: str | None = None,
                limit: int = -1) -> list[tuple[str, Attr]]:
        """Entries in name-key order; ``after``: the ``name_key`` of the last one seen."""
        self.cache.touch()
        return self.tree.readdir(ino, after, limit)

    def count_below(self, ino: int, limit: int) -> int:
        return self.tree.count_below(ino, limit)

    def parent_of(self, ino: int) -> int:
        return self.tree.parent_of(ino)

    def path_of(self, ino: int) -> str:
        """A path of ``ino`` (of a hard-linked file: one of them)."""
        return self.tree.path_of(ino)

    def check_unlocked(self, ino: int, name: str | None = None) -> None:
        """Raise ``errors.Locked`` when a WebDAV lock covers inode ``ino`` (with ``name``: the
        entry ``name`` in directory ``ino``, and the directory's membership)."""
        if self.lock_check is None:
            return
        try:
            path = self.tree.path_of(ino)
        except errors.NotFound:
            return                           # unlinked while open: nobody can lock it
        if name is not None:
            self.lock_check(path)            # adding or removing a member changes the parent
            path = path.rstrip("/") + "/" + name
        self.lock_check(path)

    def mknod(self, parent: int, name: str, mode: int, **kw) -> Attr:
        self.cache.touch()
        return self.tree.mknod(parent, name, mode, **kw)

    def link(self, ino: int, parent: int, name: str) -> Attr:
        self.cache.touch()
        return self.tree.link(ino, parent, name)

    def unlink_at(self, parent: int, name: str, keep=()) -> int:
        """Remove an entry that is not a directory; inodes in ``keep`` (open, known to a
        face) outlive their last link until released."""
        self.cache.touch()
        return self.tree.unlink(parent, name, keep=self._kept(keep))

    def rmdir_at(self, parent: int, name: str, keep=()) -> int:
        self.cache.touch()
        return self.tree.rmdir(parent, name, keep=self._kept(keep))

    def rename_at(self, old_parent: int, old_name: str, new_parent: int, new_name: str, *,
                  replace: bool = True, exchange: bool = False, keep=()) -> int | None:
        self.cache.touch()
        return self.tree.rename(old_parent, old_name, new_parent, new_name, replace=replace,
                                exchange=exchange, keep=self._kept(keep))

    def setattr(self, ino: int, **fields) -> Attr:
        self.cache.touch()
        return self.tree.setattr(ino, **fields)

    def props(self, ino: int) -> dict[tuple[str, str], bytes]:
        return self.tree.props(ino)

    def set_props(self, ino: int, changes: dict[tuple[str, str], bytes | None]) -> None:
        self.cache.touch()
        self.tree.set_props(ino, changes)

    def xattrs(self, ino: int) -> dict[str, bytes]:
        return self.tree.xattrs(ino)

    def set_xattr(self, ino: int, name: str, value: bytes | None, **flags) -> None:
        self.cache.touch()
        self.tree.set_xattr(ino, name, value, **flags)

    @staticmethod
    def name_key(name: str) -> str:
        """The key a name is looked up and ordered by (its NFC form); ``InvalidName`` for
        a name that cannot exist."""
        return check_name(name)

    def snapshot(self):
        """A context in which this thread's reads all see one committed state (a listing
        streamed over many queries, for one)."""
        return self.tree.db.snapshot()

    def sync(self) -> None:
        """Make every change so far durable (fsync of a mount, for one)."""
        self.tree.db.sync()

    def deferred_sync(self):
        """Changes of this thread inside are atomic at once and durable at the next
        ``sync`` (see ``Database.deferred_sync``)."""
        return self.tree.db.deferred_sync()

    def _kept(self, keep) -> "_Kept":
        return _Kept(self._open_readers, keep)

    # -- namespace by path --

    def stat(self, path: str) -> Attr:
        self.cache.touch()
        return self.tree.resolve(path)

    def listdir(self, path: str) -> list[tuple[str, Attr]]:
        attr = self.stat(path)
        if not attr.is_dir:
            raise errors.NotADirectory(f"{path} is not a directory")
        return self.tree.readdir(attr.ino)

    def _parent(self, path: str) -> tuple[int, str]:
        self.cache.touch()
        names = split_path(path)
        if not names:
            raise errors.InvalidArgument("the root has no parent")
        parent = self.tree.resolve("/" + "/".join(names[:-1]))
        if not parent.is_dir:
            raise errors.NotADirectory(f"{path}: parent is not a directory")
        return parent.ino, names[-1]

    def mkdir(self, path: str, mode: int = 0o755) -> Attr:
        parent, name = self._parent(path)
        return self.tree.mkdir(parent, name, mode)

    def unlink(self, path: str) -> None:
        parent, name = self._parent(path)
        self.tree.unlink(parent, name, keep=self._open_inodes())

    def rmdir(self, path: str) -> None:
        parent, name = self._parent(path)
        self.tree.rmdir(parent, name)

    def remove_tree(self, path: str) -> int:
        """Remove a file, or a directory with everything below it, in one transaction."""
        parent, name = self._parent(path)
        return self.tree.remove_tree(parent, name, keep=self._open_inodes())

    def rename(self, src: str, dst: str, replace: bool = True) -> None:
        sp, sn = self._parent(src)
        dp, dn = self._parent(dst)
        self.tree.rename(sp, sn, dp, dn, replace=replace, keep=self._open_inodes())

    def copy(self, src: str, dst: str, replace: bool = True) -> Attr:
        """Copy a file in O(1) data: the copy shares the source's blocks. Dead properties
        are not copied (``copy_entry`` copies them)."""
        self.cache.touch()
        sattr = self.tree.resolve(src)
        if not sattr.is_file:
            raise errors.IsADirectory(f"{src} is not a file")
        parent, name = self._parent(dst)
        with self.tree.db.write():
            try:
                dattr = self.tree.lookup(parent, name)
                if not replace:
                    raise errors.Exists(f"{dst} exists")
                if not dattr.is_file:
                    raise errors.IsADirectory(f"{dst} is not a file")
            except errors.NotFound:
                dattr = self.tree.create(parent, name, sattr.mode & 0o7777)
            return self.extents.copy_content(sattr.ino, dattr.ino)

    def copy_entry(self, src: str, dst: str, replace: bool = True) -> Attr:
        """Copy one entry, with its dead properties: a file (sharing its blocks), or a
        directory without its members (an existing one at ``dst`` is kept with
        ``replace``). What WebDAV COPY does per resource, and ``copy_tree`` per entry."""
        sattr = self.stat(src)
        if sattr.is_dir:
            try:
                dattr = self.mkdir(dst, sattr.mode & 0o7777)
            except errors.Exists:
                dattr = self.stat(dst)
                if not replace or not dattr.is_dir:
                    raise
        else:
            dattr = self.copy(src, dst, replace=replace)
        props = self.tree.props(sattr.ino)
        if props:
            self.tree.set_props(dattr.ino, props)
        return dattr

    def copy_tree(self, src: str, dst: str, replace: bool = True) -> int:
        """Copy a file or a directory with everything below it, dead properties kept;
        return how many entries. Not one transaction: a walk of ``copy_entry``, as WebDAV
        COPY is."""
        if (dst.rstrip("/") + "/").startswith(src.rstrip("/") + "/"):
            raise errors.InvalidArgument(f"cannot copy {src} into itself")
        self.copy_entry(src, dst, replace=replace)
        count = 1
        if self.stat(src).is_dir:
            for name, _attr in self.listdir(src):
                count += self.copy_tree(f"{src.rstrip('/')}/{name}", f"{dst.rstrip('/')}/{name}",
                                        replace=replace)
        return count

    # -- contents --

    def open_read(self, path_or_ino: str | int) -> FileReader:
        self.cache.touch()
        ino = path_or_ino if isinstance(path_or_ino, int) else self.tree.resolve(path_or_ino).ino
        attr = self.tree.getattr(ino)
        if not attr.is_file:
            raise errors.IsADirectory(f"inode {ino} is not a regular file")
        self.hold(ino)
        try:
            return FileReader(self, ino)
        except BaseException:
            self.release(ino)
            raise

    def hold(self, ino: int) -> None:
        """Count an open handle on ``ino``: its data outlives its last link until the
        matching ``release`` (POSIX: unlinked files stay readable while open)."""
        with self._locks_lock:
            self._open_readers[ino] = self._open_readers.get(ino, 0) + 1

    def release(self, ino: int) -> None:
        """End one ``hold``; an inode without links is deleted with its last handle."""
        self.release_many([ino])

    def release_many(self, inos: list[int]) -> None:
        """``release`` each of ``inos``, looking for unlinked ones in one query (the kernel
        forgets thousands of inodes at once when its caches are dropped)."""
        last = []
        with self._locks_lock:
            for ino in inos:
                n = self._open_readers.get(ino, 0) - 1
                if n > 0:
                    self._open_readers[ino] = n
                else:
                    self._open_readers.pop(ino, None)
                    last.append(ino)
        if last and not self._closed:
            self.tree.purge_if_unlinked_many(last)

    def read_file(self, path: str) -> bytes:
        with self.open_read(path) as r:
            return r.read()

    def open_write(self, path: str, mtime: int | None = None, expect_etag: str | None = None,
                   hashes: tuple[str, ...] = (), length: int | None = None) -> FileWriter:
        """A writer of a whole new content for ``path`` (created on close if missing);
        ``hashes`` names whole-file checksums (hashlib names) to compute and keep. With the
        announced ``length``, a write that cannot fit the quota fails here, before any byte."""
        parent, name = self._parent(path)
        return self.open_write_in(parent, name, mtime=mtime, expect_etag=expect_etag,
                                  hashes=hashes, length=length)

    def open_write_in(self, parent: int, name: str, mtime: int | None = None,
                      expect_etag: str | None = None, hashes: tuple[str, ...] = (),
                      length: int | None = None) -> FileWriter:
        """``open_write`` of the entry ``name`` of directory inode ``parent``: for a caller
        that has just resolved the directory (a PUT to a new URL)."""
        self.cache.touch()
        attr = self.tree.find(parent, name)
        if attr is not None and attr.is_dir:
            raise errors.IsADirectory(f"{name!r} is a directory")
        return FileWriter(self, parent, name, mtime=mtime, expect_etag=expect_etag, hashes=hashes,
                          old_size=None if attr is None else attr.size, length=length)

    def write_file(self, path: str, data: bytes, mtime: int | None = None) -> Attr:
        with self.open_write(path, mtime=mtime) as w:
            w.write(data)
        return self.stat(path)

    def pwrite(self, ino: int, offset: int, data: bytes) -> Attr:
        """Write ``data`` at ``offset`` (past the end leaves a hole), committed before this
        returns: the write buffers' path (``files``), as the FUSE face writes."""
        self.files.open(ino)
        try:
            self.files.write(ino, offset, data)
            self.files.flush(ino)
        finally:
            self.files.close(ino)
        return self.tree.getattr(ino)

    def truncate(self, ino: int, size: int) -> Attr:
        """Set a file's size, committed; bytes past the old end read as zeros."""
        self.files.open(ino)
        try:
            self.files.truncate(ino, size)
            self.files.flush(ino)
        finally:
            self.files.close(ino)
        return self.tree.getattr(ino)

    # -- open handles and garbage --

    def _open_inodes(self) -> set[int]:
        with self._locks_lock:
            return set(self._open_readers)

    def _delete_blocks(self, candidates: list[bytes]) -> int:
        """Delete unreferenced blocks from the cache, the store and the metadata; return how
        many. A block in use by a writer or reader (pinned), or referenced again since, is
        left alone. Only the journal shipper calls this, once the change that left the
        blocks unreferenced is in the bucket."""
        total = 0
        for i in range(0, len(candidates), 1000):
            claimed = self.publisher.pins.claim(candidates[i:i + 1000],
                                      lambda n: self.extents.block_refs(n) == 0)
            if not claimed:
                continue
            try:
                packed = self.packs.located(claimed)
                self.cache.discard(claimed)
                # A packed block's bytes stay in its pack until the repacker rewrites it.
                self.store.delete_many(block_key(n) for n in claimed if n not in packed)
                total += len(self.extents.forget_blocks(claimed))
            finally:
                self.publisher.pins.release(claimed)
        return total

    def collect_garbage(self, timeout: float = 30.0) -> int:
        """Upload what is pending, ship the metadata, and delete the blocks it no longer
        references; return how many blocks went."""
        before = self.shipper.collected
        self.cache.wait_uploaded(timeout)
        for _ in range(100):
            if self.shipper.run_once() and self.shipper.pending() == 0:
                break
        return self.shipper.collected - before

    def _write_stats(self) -> None:
        """Figures for `razordav stats`, rewritten after every journal round."""
        figures = {**self.figures(), "time": time.time(), "pid": os.getpid()}
        tmp = self.data_dir / "stats.json.tmp"
        tmp.write_text(json.dumps(figures, indent=1, default=str))
        os.replace(tmp, self.data_dir / "stats.json")

    def problems(self) -> list[str]:
        """What keeps this volume from serving now, one line each (empty: ready): the store
        does not answer, the metadata cannot be read, the lease is not held, the data dir
        is not writable or its disk is full. Reads only: no lock is taken."""
        found = []
        try:
            self.store.head("volume.json")   # a small object every volume has
        except Exception as exc:  # any failure means not ready; the reason goes in the line
            found.append(f"store: {type(exc).__name__}: {exc}")
        try:
            self.tree.meta("volume_id")
            if self.lease is not None and self.lease.state() != "held":   # writes refuse
                found.append(f"lease: {self.lease.state()}")
            elif not os.access(self.data_dir, os.W_OK):
                found.append("metadata: the data dir is not writable")
        except Exception as exc:
            found.append(f"metadata: {type(exc).__name__}: {exc}")
        return found + space.full(self.data_dir)   # writes answer 507 until one succeeds

    def fsck(self, full: bool = False, repair: bool = False, progress=None,
             counters: bool | None = None):
        """Check the metadata against the store (``core.fsck``); a ``Report``."""
        from .fsck import fsck
        return fsck(self, full=full, repair=repair, progress=progress, counters=counters)

    def cache_size(self) -> int:
        """The block cache's size limit in bytes."""
        return self.cache.max_bytes

    def figures(self) -> dict:
        comp = self.codec.snapshot()
        raw = sum(k["bytes_in"] for k in comp.values())
        stored = sum(k["bytes_stored"] for k in comp.values())
        tree = {**self.tree.stats(), **self.extents.stats()}
        counts = getattr(self.store, "request_counts", dict)()
        return {"volume_id": self.volume_id, "block_size": self.block_size,
                **tree, **self.cache.figures(), **self.packs.stats(),
                **(self.repacker.stats if self.repacker else {}),
                # logical bytes per unique block byte: 2.0 means every block is stored once
                # for two uses
                "dedup_ratio": tree["logical_bytes"] / tree["block_raw_bytes"]
                if tree["block_raw_bytes"] else None,
                "store_requests": {op: {"calls": n, "failed": f}
                                   for op, (n, f) in counts.items()},
                "journal_pending": self.shipper.pending() if self.shipper else None,
                "journal_last_ship": self.shipper.last_ship if self.shipper else None,
                "journal_error": self.shipper.last_error if self.shipper else None,
                **(self.lease.figures() if self.lease else {}),
                "local_disk_full": space.full(self.data_dir) or None,
                "local_disk_full_errors": space.failures(self.data_dir),
                "compression_ratio": stored / raw if raw else None, "compression": comp}

    def close(self) -> None:
        """Finish work in flight, ship the metadata, and close; uploads still queued resume
        at the next open."""
        if self._closed:
            return
        self._closed = True
        if self.shipper:
            self.shipper.stop(flush=True)
        if self.files:
            self.files.close_all()
        self.publisher.close()
        self.tree.db.sync()   # deferred commits and their blocks to disk, before the cache closes
        self.cache.close()
        if self.shipper:
            self._write_stats()
        self.lease.release()
        self.tree.close()
        self.store.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class _Kept:
    """Inodes that outlive their last link: held open in the core, or named by a face
    (``keep``). Membership only, without copying either (a mount knows thousands)."""

    def __init__(self, held: dict, keep):
        self.held, self.keep = held, keep

    def __contains__(self, ino) -> bool:
        return ino in self.held or ino in self.keep


def _fenced(store: store_mod.ObjectStore, guard) -> store_mod.ObjectStore:
    """``store`` with ``guard`` asked before every write; below the retries, so that every
    attempt is asked."""
    if isinstance(store, store_mod.RetryingStore):
        return store.guarded(guard)
    return store_mod.GuardedStore(store, guard)


def default_store_url(data_dir: str | os.PathLike) -> str:
    """The embedded default: a local object store inside the data dir."""
    return (Path(data_dir).resolve() / "store").as_uri()


def _load_or_create_descriptor(store: store_mod.ObjectStore, block_size: int) -> dict:
    try:
        desc = json.loads(store.get("volume.json"))
    except store_mod.NotFound:
        desc = {"format": FORMAT_VERSION, "volume_id": uuid.uuid4().hex,
                "block_size": block_size, "hash": "sha256", "created": time.time()}
        try:
            store.put("volume.json", json.dumps(desc, indent=1).encode(), if_absent=True)
        except store_mod.PreconditionFailed:
            desc = json.loads(store.get("volume.json"))  # another gateway created it first
    except store_mod.StoreError as exc:
        raise errors.VolumeError(f"cannot read volume.json from {store.url}: {exc}") from None
    if desc.get("format", 0) > FORMAT_VERSION:
        raise errors.VolumeError(f"volume format {desc['format']} is newer than this razordav")
    return desc
