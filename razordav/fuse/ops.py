"""The FUSE face: libfuse3's low-level (inode) API through pyfuse3, over one open ``Volume``.

Binding: pyfuse3, not mfusepy. ``Tree`` speaks inode numbers, and hard links are several
entries of one inode; so does libfuse's low-level API, which pyfuse3 wraps: lookup counts and
forget, readdirplus with 64-bit resumable offsets, setattr with a field mask and nanosecond
times (UTIME_NOW/UTIME_OMIT resolved), rename flags (RENAME_NOREPLACE, RENAME_EXCHANGE), 1 MiB
reads and writes. mfusepy wraps the high-level path API: every call resolves a path again, a
hard link is just another path to libfuse (which renames open files to .fuse_hidden* on
unlink unless hard_remove), and each call pays ctypes conversions. pyfuse3 is compiled
(Cython): a request reaches us after a few microseconds. Its trio loop is one thread, so work
that may wait runs on our own thread pool.

Owns protocol translation and nothing else: bytes names to checked names, core errors to errno
(``errno_of``, one table), the kernel's lookup counts, directory positions, handle numbers.
Contents go through the volume's write buffers (``vol.files``); the namespace through the
volume's calls by inode. Nothing here touches the core's parts directly.

Kernel caches (a change through WebDAV must show here within a second; big I/O at disk speed):
entries, attributes and negative lookups are cached ``TIMEOUT`` seconds. An open keeps the
kernel's page cache only if the content is still the one the kernel last saw (same etag);
besides, the kernel drops the pages of a file whose mtime or size changed when it refreshes its
attributes (auto_inval_data). No writeback cache: ``OpenFiles`` already merges writes, and the
kernel would otherwise own size and mtime.

Lifetimes: an inode the kernel knows (lookup count > 0) is held (``Volume.hold``), so an unlink
through any face keeps it until the kernel forgets it, and its number is not reused meanwhile.
A directory removed by rmdir or a rename while the kernel knows it stays likewise, empty and
unlinked, so an fstat of an open one answers as on a disk. One removed by another face goes at
once; if the kernel still knows it, the inode number gets a new generation should it come back.

Threading: handlers are trio tasks on one thread. SQLite reads, which never wait for writers
(getattr, lookup, readlink, xattrs), run inline; everything that may wait (commits, block I/O)
runs on ``_pool``, whose threads live as long as the mount, so each keeps one SQLite
connection. ``_lock`` guards ``_refs``, ``_generation`` and ``_kernel_etag``.
"""

from __future__ import annotations

import errno
import functools
import itertools
import logging
import os
import stat
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import outcome
import pyfuse3
import trio

from ..core import errors
from ..core.volume import Attr
from ..store import StoreError

log = logging.getLogger(__name__)

TIMEOUT = 0.8          # seconds the kernel may trust an entry or attributes
BLKSIZE = 128 << 10    # st_blksize: the I/O size tools pick for their buffers
THREADS = 8
DIR_PAGE = 128         # entries read per readdir query
_RENAME_FLAGS = pyfuse3.RENAME_NOREPLACE | pyfuse3.RENAME_EXCHANGE
_XATTR_NAMESPACES = ("user.", "trusted.", "security.")


def errno_of(exc: BaseException) -> int:
    """The one table from errors to errno: core errors carry theirs."""
    if isinstance(exc, errors.FsError):
        if isinstance(exc, (errors.NoSpace, errors.Unavailable, errors.Corrupt,
                            errors.VolumeError)):
            log.warning("%s: %s", type(exc).__name__, exc)
        return exc.errno
    if isinstance(exc, UnicodeError):
        return errno.EINVAL      # a name that is not UTF-8
    if isinstance(exc, StoreError):
        log.warning("object store: %s", exc)
        return errno.EIO
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        log.warning("cache disk: %s", exc)
        return errno.ENOSPC
    log.error("unexpected error in a FUSE request", exc_info=exc)
    return errno.EIO


def _translated(fn):
    """Run a handler; whatever it raises reaches the kernel as an errno."""
    @functools.wraps(fn)
    async def handler(self, *args):
        try:
            return await fn(self, *args)
        except pyfuse3.FUSEError:
            raise
        except Exception as exc:
            raise pyfuse3.FUSEError(errno_of(exc)) from None
    return handler


def _name(raw: bytes) -> str:
    return raw.decode("utf-8")   # strict: an undecodable name is EINVAL (errno_of)


class _Listing:
    """An open directory: the key after which each offset handed to the kernel resumes, so
    a listing goes on correctly while entries come and go. Offsets 1 and 2 follow '.' and '..'."""

    def __init__(self, ino: int):
        self.ino = ino
        self.keys: list[str] = []
        self.rows: list[tuple[bytes, Attr, int]] = []   # prepared, not yet sent
        self.rows_after = -1                             # the offset ``rows`` follow
        self.rows_time = 0.0

    def after(self, offset: int) -> str:
        if offset <= 2:
            return ""
        try:
            return self.keys[offset - 3]
        except IndexError:
            raise errors.InvalidArgument(f"bad directory offset {offset}") from None

    def add(self, key: str) -> int:
        self.keys.append(key)
        return len(self.keys) + 2


class _KernelHeld:
    """``keep`` for unlink and rename: the inodes the kernel still knows."""

    def __init__(self, refs: dict[int, int]):
        self._refs = refs

    def __contains__(self, ino: int) -> bool:
        return ino in self._refs

    def __iter__(self):
        return iter(list(self._refs))


class RazorOps(pyfuse3.Operations):
    supports_dot_lookup = True
    enable_writeback_cache = False
    enable_acl = False

    def __init__(self, vol, threads: int = THREADS, timeout: float = TIMEOUT):
        super().__init__()
        self.vol = vol
        self.timeout = timeout
        self.files = vol.files            # the volume's write buffers, shared with pwrite
        self.files.on_commit = self._committed
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="rzd-fuse")
        self._lock = threading.Lock()
        self._refs: dict[int, int] = {}
        self._generation: dict[int, int] = {}
        self._kernel_etag: dict[int, str] = {}
        self._keep = _KernelHeld(self._refs)
        self._handles: dict[int, int] = {}       # fh -> ino
        self._dirs: dict[int, _Listing] = {}
        self._next_fh = itertools.count(1)
        self._statfs: tuple[float, pyfuse3.StatvfsData] | None = None

    # -- plumbing --

    async def _call(self, fn, *args):
        """Run ``fn(*args)`` on the pool; the trio loop serves other requests meanwhile."""
        task = trio.lowlevel.current_task()
        token = trio.lowlevel.current_trio_token()

        def done(fut):
            token.run_sync_soon(trio.lowlevel.reschedule, task, outcome.capture(fut.result))

        self._pool.submit(self._deferred, fn, *args).add_done_callback(done)
        return await trio.lowlevel.wait_task_rescheduled(lambda _: trio.lowlevel.Abort.FAILED)

    async def _run(self, fn, *args, quick: bool = True):
        """Run ``fn(*args)``: in the loop when ``quick`` (SQLite and memory only: cheaper than
        the two thread switches of ``_call``), else on the pool."""
        if not quick:
            return await self._call(fn, *args)
        return self._deferred(fn, *args)

    def _deferred(self, fn, *args):
        """Metadata commits of a request are atomic at once and durable at the next fsync,
        as on a local file system (a flush to disk per create or chmod would bound git and
        tar to the disk's flush rate)."""
        with self.vol.deferred_sync():
            return fn(*args)

    def _entry(self, attr: Attr) -> pyfuse3.EntryAttributes:
        e = pyfuse3.EntryAttributes()
        e.st_ino = attr.ino
        e.generation = self._generation.get(attr.ino, 0)
        e.entry_timeout = e.attr_timeout = self.timeout
        e.st_mode = attr.mode
        e.st_nlink = attr.nlink
        e.st_uid = attr.uid
        e.st_gid = attr.gid
        e.st_rdev = attr.rdev
        e.st_size = attr.size
        e.st_blksize = BLKSIZE
        e.st_blocks = (attr.size + 511) // 512
        e.st_atime_ns = attr.atime
        e.st_mtime_ns = attr.mtime
        e.st_ctime_ns = attr.ctime
        return e

    def _looked_up(self, attr: Attr) -> pyfuse3.EntryAttributes:
        """An entry handed to the kernel: one more reference it will forget."""
        entry = self._entry(attr)
        self._ref(attr.ino)
        return entry

    def _ref(self, ino: int) -> None:
        with self._lock:
            count = self._refs.get(ino, 0)
            self._refs[ino] = count + 1
            if count == 0:
                self.vol.hold(ino)

    def _release_inodes(self, inos: list[int]) -> None:
        try:
            self.vol.release_many(inos)
        except Exception:
            log.exception("releasing %d inodes failed", len(inos))

    def _gone(self, ino: int | None) -> None:
        """``ino`` was removed from the tree: a kernel that knows it must not take a new inode
        with that number for the old one."""
        if ino is None:
            return
        with self._lock:
            if ino in self._refs:
                self._generation[ino] = self._generation.get(ino, 0) + 1

    def _committed(self, ino: int, attr: Attr) -> None:
        with self._lock:
            if ino in self._refs:
                self._kernel_etag[ino] = attr.etag

    def _owner(self, parent: int, mode: int, ctx) -> tuple[int, int, int]:
        """uid, gid and mode of a new inode: a set-group-ID directory passes on its group
        (and, to subdirectories, the bit itself). The kernel already applied the umask and
        stripped a set-group-ID bit the caller may not set."""
        pattr = self.vol.getattr(parent)
        gid = ctx.gid
        if pattr.mode & stat.S_ISGID:
            gid = pattr.gid
            if stat.S_ISDIR(mode):
                mode |= stat.S_ISGID
        return ctx.uid, gid, mode

    # -- names --

    @_translated
    async def lookup(self, parent, name, ctx):
        attr = self._lookup(parent, name)
        if attr is None:
            entry = pyfuse3.EntryAttributes()
            entry.st_ino = 0              # cached as absent for ``timeout``
            entry.entry_timeout = self.timeout
            return entry
        return self._looked_up(self.files.overlay(attr))

    def _lookup(self, parent: int, raw: bytes) -> Attr | None:
        if raw == b".":
            return self.vol.getattr(parent)
        if raw == b"..":
            return self.vol.getattr(self.vol.parent_of(parent))
        try:
            return self.vol.lookup(parent, _name(raw))
        except (errors.NotFound, UnicodeDecodeError):
            return None   # an undecodable name cannot exist

    async def forget(self, inode_list):
        gone = []
        with self._lock:
            for ino, n in inode_list:
                count = self._refs.get(ino, 0) - n
                if count > 0:
                    self._refs[ino] = count
                else:
                    self._refs.pop(ino, None)
                    self._kernel_etag.pop(ino, None)
                    gone.append(ino)
        if gone:
            try:
                await self._run(self._release_inodes, gone)
            except Exception:
                log.exception("forget failed")

    @_translated
    async def getattr(self, inode, ctx):
        return self._entry(self.files.attr(inode))

    @_translated
    async def setattr(self, inode, attr, fields, fh, ctx):
        quick = (not fields.update_size or attr.st_size == 0) and self.files.quick(inode)
        return self._entry(await self._run(self._setattr, inode, attr, fields, quick=quick))

    def _setattr(self, ino: int, new, fields) -> Attr:
        self.vol.check_unlocked(ino)
        changes = {}
        if fields.update_mode:
            changes["mode"] = stat.S_IFMT(self.vol.getattr(ino).mode) | (new.st_mode & 0o7777)
        if fields.update_uid:
            changes["uid"] = new.st_uid
        if fields.update_gid:
            changes["gid"] = new.st_gid
        if fields.update_atime:
            changes["atime"] = new.st_atime_ns
        if fields.update_mtime:
            changes["mtime"] = new.st_mtime_ns
        if fields.update_ctime:
            changes["ctime"] = new.st_ctime_ns
        if fields.update_size:
            self.files.truncate(ino, new.st_size, mtime=changes.pop("mtime", None))
        if changes or not fields.update_size:
            # Every setattr is a change of the inode (ctime: now, Tree.setattr's default),
            # also one with no field left: the kernel keeps ctime to itself unless it
            # trusts its own times (writeback cache), so chown(f, -1, -1) arrives empty.
            self.files.flush(ino)   # explicit attributes win over those of buffered writes
            self.vol.setattr(ino, **changes)
        return self.files.attr(ino)

    @_translated
    async def readlink(self, inode, ctx):
        attr = self.vol.getattr(inode)
        if not stat.S_ISLNK(attr.mode):
            raise pyfuse3.FUSEError(errno.EINVAL)
        return attr.target or b""

    # -- creating and removing --

    @_translated
    async def mknod(self, parent, name, mode, rdev, ctx):
        return self._looked_up(await self._run(self._make, parent, _name(name), mode, ctx,
                                                {"rdev": rdev}))

    @_translated
    async def mkdir(self, parent, name, mode, ctx):
        mode = stat.S_IFDIR | (mode & 0o7777)
        return self._looked_up(await self._run(self._make, parent, _name(name), mode, ctx, {}))

    @_translated
    async def symlink(self, parent, name, target, ctx):
        mode = stat.S_IFLNK | 0o777
        return self._looked_up(await self._run(self._make, parent, _name(name), mode, ctx,
                                                {"target": target}))

    def _make(self, parent: int, name: str, mode: int, ctx, extra: dict) -> Attr:
        self.vol.check_unlocked(parent, name)
        uid, gid, mode = self._owner(parent, mode, ctx)
        return self.vol.mknod(parent, name, mode, uid=uid, gid=gid, **extra)

    @_translated
    async def create(self, parent, name, mode, flags, ctx):
        mode = stat.S_IFREG | (mode & 0o7777)
        attr = await self._run(self._create, parent, _name(name), mode, flags, ctx)
        fh = next(self._next_fh)
        self._handles[fh] = attr.ino
        return pyfuse3.FileInfo(fh=fh), self._looked_up(attr)

    def _create(self, parent: int, name: str, mode: int, flags: int, ctx) -> Attr:
        try:
            attr = self._make(parent, name, mode, ctx, {})
        except errors.Exists:
            if flags & os.O_EXCL:
                raise
            attr = self.vol.lookup(parent, name)   # made by another face meanwhile: open it
            if not attr.is_file:
                raise errors.IsADirectory(f"{name!r} is not a regular file") from None
            if flags & os.O_TRUNC:
                self.files.truncate(attr.ino, 0)
        self.files.open(attr.ino)
        self._committed(attr.ino, attr)
        return self.files.attr(attr.ino)

    @_translated
    async def link(self, inode, new_parent_inode, new_name, ctx):
        attr = await self._run(self._link, inode, new_parent_inode, _name(new_name))
        return self._looked_up(self.files.overlay(attr))

    def _link(self, ino: int, parent: int, name: str) -> Attr:
        self.vol.check_unlocked(parent, name)
        return self.vol.link(ino, parent, name)

    @_translated
    async def unlink(self, parent_inode, name, ctx):
        await self._run(self._unlink, parent_inode, _name(name))

    def _unlink(self, parent: int, name: str) -> int:
        self.vol.check_unlocked(parent, name)
        return self.vol.unlink_at(parent, name, self._keep)

    @_translated
    async def rmdir(self, parent_inode, name, ctx):
        self._gone(await self._run(self._rmdir, parent_inode, _name(name)))

    def _rmdir(self, parent: int, name: str) -> int:
        self.vol.check_unlocked(parent, name)
        return self.vol.rmdir_at(parent, name, self._keep)

    @_translated
    async def rename(self, parent_inode_old, name_old, parent_inode_new, name_new, flags, ctx):
        if flags & ~_RENAME_FLAGS:
            raise pyfuse3.FUSEError(errno.EINVAL)   # RENAME_WHITEOUT: overlayfs only
        replaced = await self._run(
            functools.partial(self._rename, parent_inode_old, _name(name_old),
                              parent_inode_new, _name(name_new),
                              replace=not flags & pyfuse3.RENAME_NOREPLACE,
                              exchange=bool(flags & pyfuse3.RENAME_EXCHANGE), keep=self._keep))
        if replaced is not None and not self._exists(replaced):
            self._gone(replaced)

    def _rename(self, old_parent: int, old_name: str, new_parent: int, new_name: str,
                **kw) -> int | None:
        self.vol.check_unlocked(old_parent, old_name)
        self.vol.check_unlocked(new_parent, new_name)
        return self.vol.rename_at(old_parent, old_name, new_parent, new_name, **kw)

    def _exists(self, ino: int) -> bool:
        try:
            self.vol.getattr(ino)
            return True
        except errors.NotFound:
            return False

    # -- file contents --

    @_translated
    async def open(self, inode, flags, ctx):
        keep_cache = await self._run(self._open, inode, flags,
                                     quick=not flags & os.O_TRUNC or self.files.quick(inode))
        fh = next(self._next_fh)
        self._handles[fh] = inode
        return pyfuse3.FileInfo(fh=fh, keep_cache=keep_cache)

    def _open(self, ino: int, flags: int) -> bool:
        """Open ``ino``; True if the kernel may keep the pages it has cached."""
        if flags & (os.O_WRONLY | os.O_RDWR | os.O_TRUNC):
            self.vol.check_unlocked(ino)   # a WebDAV lock keeps writers out (EACCES)
        self.files.open(ino)
        if flags & os.O_TRUNC:
            # libfuse asks for atomic_o_trunc: the kernel leaves O_TRUNC to us, no setattr.
            try:
                self.files.truncate(ino, 0)
            except BaseException:
                self.files.close(ino)
                raise
        attr = self.files.attr(ino)
        with self._lock:
            seen = self._kernel_etag.get(ino)
            self._kernel_etag[ino] = attr.etag
        return seen == attr.etag

    @_translated
    async def read(self, fh, off, size):
        return await self._call(self.files.read, self._handles[fh], off, size)

    @_translated
    async def write(self, fh, off, buf):
        ino = self._handles[fh]
        return await self._run(self.files.write, ino, off, buf,
                               quick=self.files.quick(ino, off, len(buf)))

    @_translated
    async def flush(self, fh):
        ino = self._handles[fh]
        await self._run(self.files.flush, ino, quick=self.files.quick(ino))

    @_translated
    async def fsync(self, fh, datasync):
        await self._call(self._fsync, self._handles[fh])

    def _fsync(self, ino: int) -> None:
        self.files.fsync(ino)
        self.vol.sync()

    @_translated
    async def release(self, fh):
        ino = self._handles.pop(fh)
        await self._run(self.files.close, ino, quick=self.files.quick(ino))

    # -- directories --

    @_translated
    async def opendir(self, inode, ctx):
        if not self.vol.getattr(inode).is_dir:
            raise errors.NotADirectory(f"inode {inode} is not a directory")
        fh = next(self._next_fh)
        self._dirs[fh] = _Listing(inode)
        return fh

    @_translated
    async def readdir(self, fh, start_id, token):
        listing = self._dirs[fh]
        rows = await self._run(self._rows, listing, start_id)
        sent = 0
        for raw, attr, offset in rows:
            if not pyfuse3.readdir_reply(token, raw, self._entry(attr), offset):
                break
            sent += 1
            if raw not in (b".", b".."):   # the kernel takes no reference for these two
                self._ref(attr.ino)
        listing.rows = rows[sent:]
        listing.rows_after = rows[sent - 1][2] if sent else start_id
        listing.rows_time = time.monotonic()

    def _rows(self, listing: _Listing, start: int) -> list[tuple[bytes, Attr, int]]:
        """Entries after offset ``start``: the ones prepared last time if they follow it."""
        if listing.rows and listing.rows_after == start and \
                time.monotonic() - listing.rows_time < self.timeout:
            return listing.rows
        rows = []
        if start < 1:
            rows.append((b".", self.vol.getattr(listing.ino), 1))
        if start < 2:
            rows.append((b"..", self.vol.getattr(self.vol.parent_of(listing.ino)), 2))
        for name, attr in self.vol.readdir(listing.ino, after=listing.after(start),
                                            limit=DIR_PAGE):
            offset = listing.add(self.vol.name_key(name))
            rows.append((name.encode("utf-8"), self.files.overlay(attr), offset))
        return rows

    @_translated
    async def releasedir(self, fh):
        self._dirs.pop(fh, None)

    @_translated
    async def fsyncdir(self, fh, datasync):
        """Every namespace change is committed when it returns; this makes them durable."""
        await self._call(self.vol.sync)

    # -- extended attributes --

    @staticmethod
    def _xattr_name(raw: bytes) -> str:
        """Names in the namespaces a Linux disk file system keeps; others are EOPNOTSUPP
        there (ext4, xfs), so a copy from here to a local disk never meets a name it cannot
        set. system.* (POSIX ACLs and such) is not stored either."""
        name = _name(raw)
        if not name.startswith(_XATTR_NAMESPACES):
            raise pyfuse3.FUSEError(errno.EOPNOTSUPP)
        return name

    @_translated
    async def setxattr(self, inode, name, value, ctx):
        await self._run(self._set_xattr, inode, self._xattr_name(name), bytes(value))

    @_translated
    async def getxattr(self, inode, name, ctx):
        value = self.vol.xattrs(inode).get(self._xattr_name(name))
        if value is None:
            self.vol.getattr(inode)   # ENOENT for a missing inode
            raise pyfuse3.FUSEError(pyfuse3.ENOATTR)
        return value

    @_translated
    async def listxattr(self, inode, ctx):
        self.vol.getattr(inode)
        return [name.encode("utf-8") for name in self.vol.xattrs(inode)]

    @_translated
    async def removexattr(self, inode, name, ctx):
        await self._run(self._set_xattr, inode, self._xattr_name(name), None)

    def _set_xattr(self, ino: int, name: str, value: bytes | None) -> None:
        self.vol.check_unlocked(ino)
        self.vol.set_xattr(ino, name, value)

    # -- permissions and the file system --

    @_translated
    async def access(self, inode, mode, ctx):
        """Only asked without default_permissions (the kernel checks modes itself)."""
        attr = self.vol.getattr(inode)
        if ctx.uid == 0:
            return not (mode & os.X_OK) or attr.is_dir or bool(attr.mode & 0o111)
        if ctx.uid == attr.uid:
            bits = (attr.mode >> 6) & 7
        elif attr.gid == ctx.gid or attr.gid in pyfuse3.get_sup_groups(ctx.pid):
            bits = (attr.mode >> 3) & 7
        else:
            bits = attr.mode & 7
        return mode & bits == mode

    @_translated
    async def statfs(self, ctx):
        cached = self._statfs
        if cached is None or time.monotonic() - cached[0] > 2.0:
            cached = self._statfs = (time.monotonic(), await self._call(self._statvfs))
        return cached[1]

    def _statvfs(self) -> pyfuse3.StatvfsData:
        """Size: what the store holds plus what may still be written. Free: the room left
        under the dirty limit (writes wait in the cache for upload), at most the free space
        of the cache disk."""
        fig = self.vol.figures()
        disk = os.statvfs(self.vol.data_dir)
        room = max(0, fig["dirty_limit"] - fig["dirty_bytes"])
        free = min(room, disk.f_bavail * disk.f_frsize)
        s = pyfuse3.StatvfsData()
        s.f_bsize = BLKSIZE
        s.f_frsize = 4096
        s.f_blocks = (fig["block_stored_bytes"] + free) // s.f_frsize
        s.f_bfree = s.f_bavail = free // s.f_frsize
        s.f_files = fig["inodes"] + (1 << 32)
        s.f_ffree = s.f_favail = 1 << 32
        s.f_namemax = 255
        self._apply_quota(s, free)
        return s

    def _apply_quota(self, s: pyfuse3.StatvfsData, free: int) -> None:
        """Under a quota, df shows the quota: its size, and what is left of it (or of the
        cache's room, if that is less); the file counts likewise."""
        vol = self.vol
        if vol.max_bytes is None and vol.max_files is None:
            return
        used = vol.usage()
        if vol.max_bytes is not None:
            s.f_blocks = vol.max_bytes // s.f_frsize
            left = min(free, max(0, vol.max_bytes - used["bytes"]))
            s.f_bfree = s.f_bavail = left // s.f_frsize
        if vol.max_files is not None:
            s.f_files = vol.max_files
            s.f_ffree = s.f_favail = max(0, vol.max_files - used["files"])

    # -- shutdown --

    def shutdown(self) -> None:
        """After the session ends: commit every buffer, drop the kernel's references."""
        self.files.close_all()
        self.vol.sync()
        with self._lock:
            inos = list(self._refs)
            self._refs.clear()
        self._release_inodes(inos)
        self._pool.shutdown(wait=True)

