"""The local disk as the oracle for the FUSE tests: run the same calls on a razordav mount and
on a plain directory, record what each returned, compare the records.

A record holds only what should be equal on two POSIX file systems: return values, errno
names, and ``attrs`` of a stat. Times are recorded as relations ("later", "same") to a stat
taken before, never as values, except times a test sets itself.

``run_as(user, fn, *args)`` calls ``fn`` in a forked child with that uid/gid (no extra groups),
so permission checks are the kernel's for an unprivileged user; the result comes back pickled.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import hashlib
import os
import pathlib
import pickle
import shutil
import stat
import tempfile
import time
import traceback

NOBODY = 65534
USERS = {"root": 0, "nobody": NOBODY}
PAIR = ("m", "p")   # mount point and plain directory: names of one length, so paths are too

_libc = ctypes.CDLL(None, use_errno=True)
AT_FDCWD = -100
RENAME_NOREPLACE, RENAME_EXCHANGE = 1, 2
UTIME_NOW, UTIME_OMIT = (1 << 30) - 1, (1 << 30) - 2


def renameat2(old: str, new: str, flags: int) -> None:
    if _libc.renameat2(AT_FDCWD, os.fsencode(old), AT_FDCWD, os.fsencode(new), flags) != 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e), old)


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


def utimensat(path: str, atime: tuple[int, int], mtime: tuple[int, int]) -> None:
    """``utimensat`` with (seconds, nanoseconds) pairs, where nanoseconds may be UTIME_NOW or
    UTIME_OMIT (os.utime cannot say either)."""
    times = (_Timespec * 2)(_Timespec(*atime), _Timespec(*mtime))
    if _libc.utimensat(AT_FDCWD, os.fsencode(path), times, 0) != 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e), path)


def err_name(exc: OSError) -> str:
    return errno.errorcode.get(exc.errno, str(exc.errno))


def attrs(s: os.stat_result) -> dict:
    """The stat fields two file systems must agree on. Left out: st_size of a directory (each
    file system picks its own), st_blocks (allocation), st_dev, st_ino, and the times."""
    out = {"type": stat.S_IFMT(s.st_mode), "mode": oct(stat.S_IMODE(s.st_mode)),
           "nlink": s.st_nlink, "uid": s.st_uid, "gid": s.st_gid}
    if not stat.S_ISDIR(s.st_mode):
        out["size"] = s.st_size
    if stat.S_ISCHR(s.st_mode) or stat.S_ISBLK(s.st_mode):
        out["rdev"] = s.st_rdev
    return out


def relation(after: int, before: int) -> str:
    return "later" if after > before else "same" if after == before else "earlier"


class Rec:
    """What one run of a case saw, in order: (label, value) pairs. Paths are relative to
    ``root``; ``do`` records "ok" or the errno name and hands back the result (None on error)."""

    def __init__(self, root: str, user: str):
        self.root = root
        self.user = user
        self.log: list[tuple[str, object]] = []

    def p(self, *names: str) -> str:
        return os.path.join(self.root, *names)

    def rec(self, label: str, value) -> None:
        self.log.append((label, value))

    def do(self, label: str, fn, *args, **kw):
        try:
            out = fn(*args, **kw)
        except OSError as exc:
            self.rec(label, err_name(exc))
            return None
        self.rec(label, "ok")
        return out

    def val(self, label: str, fn, *args, **kw):
        """Like ``do``, but records the value returned."""
        try:
            out = fn(*args, **kw)
        except OSError as exc:
            self.rec(label, err_name(exc))
            return None
        self.rec(label, out)
        return out

    def open(self, label: str, name: str, flags: int, mode: int = 0o644) -> None:
        """Record whether ``name`` opens with ``flags``; the descriptor is closed at once."""
        fd = self.do(label, os.open, self.p(name), flags, mode)
        if fd is not None:
            os.close(fd)

    def stat(self, label: str, name: str, follow: bool = False) -> os.stat_result | None:
        try:
            s = os.stat(self.p(name), follow_symlinks=follow)
        except OSError as exc:
            self.rec(label, err_name(exc))
            return None
        self.rec(label, attrs(s))
        return s

    def times(self, label: str, name: str, before: os.stat_result, follow: bool = False):
        """How mtime and ctime of ``name`` relate to ``before``; also records attrs."""
        s = os.stat(self.p(name), follow_symlinks=follow)
        self.rec(label, {"mtime": relation(s.st_mtime_ns, before.st_mtime_ns),
                         "ctime": relation(s.st_ctime_ns, before.st_ctime_ns), **attrs(s)})
        return s

    @staticmethod
    def tick() -> None:
        """Let the clock move past a coarse timestamp (ext4 may use the tick clock), so a
        change is "later" on both sides rather than "same" by chance on one."""
        time.sleep(0.012)

    def read(self, name: str) -> bytes:
        with open(self.p(name), "rb") as f:
            return f.read()

    def content(self, label: str, name: str) -> None:
        """Size and digest of a file's content (a digest keeps the record short)."""
        try:
            data = self.read(name)
        except OSError as exc:
            self.rec(label, err_name(exc))
            return
        self.rec(label, (len(data), hashlib.sha1(data).hexdigest()))

    def write(self, name: str, data: bytes, mode: int | None = None) -> None:
        """Create or overwrite a file; ``mode``, if given, is set exactly (no umask)."""
        fd = os.open(self.p(name), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            with memoryview(data) as view:
                while view:
                    view = view[os.write(fd, view):]
            if mode is not None:
                os.fchmod(fd, mode)
        finally:
            os.close(fd)


def run_as(user: str, fn, *args):
    """``fn(*args)`` as ``user`` (a key of USERS) in a forked child; its return value, or an
    AssertionError carrying the child's traceback."""
    if user == "root":
        return fn(*args)
    uid = USERS[user]
    rfd, wfd = os.pipe()
    pid = os.fork()
    if pid == 0:   # the child: drop privileges for good, run, report, exit without cleanup
        try:
            os.close(rfd)
            os.setgroups([])
            os.setresgid(uid, uid, uid)
            os.setresuid(uid, uid, uid)
            result = ("ok", fn(*args))
        except BaseException:
            result = ("error", traceback.format_exc())
        try:
            with os.fdopen(wfd, "wb") as out:
                pickle.dump(result, out)
        finally:
            os._exit(0)
    os.close(wfd)
    with os.fdopen(rfd, "rb") as inp:
        data = inp.read()
    os.waitpid(pid, 0)
    kind, value = pickle.loads(data)
    if kind == "error":
        raise AssertionError(f"as {user}:\n{value}")
    return value


def tree_of(root: str) -> dict[str, dict]:
    """Every entry below ``root`` by relative path: attrs, plus the content digest of a file
    and the target of a symlink."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            s = os.lstat(path)
            entry = attrs(s)
            if stat.S_ISREG(s.st_mode):
                with open(path, "rb") as f:
                    entry["sha1"] = hashlib.sha1(f.read()).hexdigest()
            elif stat.S_ISLNK(s.st_mode):
                entry["target"] = os.readlink(path)
            out[os.path.relpath(path, root)] = entry
    return out


@contextlib.contextmanager
def reachable_dir(prefix: str):
    """A fresh directory right under /tmp that any user can reach, removed afterwards.
    Not under pytest's temp root: that is 0700, and every pytest session that starts makes
    it 0700 again, so opening it up would hold only until someone else runs a test."""
    path = tempfile.mkdtemp(prefix=prefix, dir="/tmp")
    os.chmod(path, 0o755)
    try:
        yield pathlib.Path(path)
    finally:
        shutil.rmtree(path, ignore_errors=True)
