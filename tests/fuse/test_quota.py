"""Quotas through a real FUSE mount: ENOSPC past the quota, and the quota in statfs.

The mount runs in-process (``razordav.fuse.mount.mount`` in a thread) over a Volume this
test opened and gave a quota; the test thread uses plain os calls on the mount point."""

import errno
import os
import threading
import time

import pytest

from razordav.core.volume import Volume
from razordav.fuse.mount import mount
from mounts import force_unmount

BS = 64 * 1024
QUOTA = 64 * BS            # 4 MiB, a multiple of statfs' 4 KiB fragment
MAX_FILES = 5


class Mounted:
    def __init__(self, tmp_path, max_bytes=QUOTA, max_files=MAX_FILES):
        self.vol = Volume.open(tmp_path / "data", block_size=BS, journal_interval=0)
        self.vol.set_quota(max_bytes, max_files)
        self.mnt = str(tmp_path / "mnt")
        os.makedirs(self.mnt)
        self.handle = None
        self.error = None
        live = threading.Event()

        def ready(handle):
            self.handle = handle
            live.set()

        def run():
            try:
                mount(self.vol, self.mnt, ready=ready)
            except BaseException as exc:   # reported by the test thread
                self.error = exc
                live.set()

        self.thread = threading.Thread(target=run, name="test-mount", daemon=True)
        self.thread.start()
        assert live.wait(30), "the mount did not come up"
        assert self.error is None, self.error

    def path(self, name):
        return os.path.join(self.mnt, name)

    def close(self):
        if self.handle is not None:
            self.handle.stop()
        self.thread.join(30)
        force_unmount(self.mnt)
        self.vol.close()


@pytest.fixture
def mounted(tmp_path):
    m = Mounted(tmp_path)
    try:
        yield m
    finally:
        m.close()


def write_all(path, total, chunk=1 << 20, flags=os.O_WRONLY | os.O_CREAT | os.O_TRUNC):
    """Write ``total`` bytes; return (bytes written, errno of the first failure or None),
    counting a failure of close as one."""
    fd = os.open(path, flags, 0o644)
    written, failure = 0, None
    try:
        while written < total:
            written += os.write(fd, b"q" * min(chunk, total - written))
    except OSError as exc:
        failure = exc.errno
    try:
        os.close(fd)
    except OSError as exc:
        failure = failure or exc.errno
    return written, failure


def mkdir_soon(path, within=10.0):
    """mkdir once a removed inode stopped counting: one the kernel still knows stays (unlinked,
    as on a disk) until the kernel forgets it, which it does soon but asynchronously."""
    deadline = time.monotonic() + within
    while True:
        try:
            return os.mkdir(path)
        except OSError as exc:
            if exc.errno != errno.ENOSPC or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def test_statfs_reports_the_quota(mounted):
    with open(mounted.path("f"), "wb") as f:
        f.write(b"x" * (10 * 4096))
    os.mkdir(mounted.path("d"))
    s = os.statvfs(mounted.mnt)
    assert s.f_blocks * s.f_frsize == QUOTA
    assert s.f_bfree * s.f_frsize == s.f_bavail * s.f_frsize == QUOTA - 10 * 4096
    assert (s.f_files, s.f_ffree, s.f_favail) == (MAX_FILES, MAX_FILES - 2, MAX_FILES - 2)


def test_write_past_the_quota_is_enospc_and_saves_nothing(mounted):
    with open(mounted.path("keep"), "wb") as f:
        f.write(b"k" * BS)
    usage = mounted.vol.usage()
    written, failure = write_all(mounted.path("big"), QUOTA)   # BS too many
    assert failure == errno.ENOSPC
    assert mounted.vol.usage() == {"bytes": usage["bytes"], "files": usage["files"] + 1}
    # close(2) returned with the error of the flush; the release that drops the buffer
    # reaches the file system just after, and the kernel may show its cached size till then
    deadline = time.monotonic() + 5
    while os.stat(mounted.path("big")).st_size != 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert os.stat(mounted.path("big")).st_size == 0          # created empty, nothing saved
    with open(mounted.path("keep"), "rb") as f:
        assert f.read() == b"k" * BS
    # What fits still fits, including a rewrite that replaces the old content.
    assert write_all(mounted.path("big"), QUOTA - BS) == (QUOTA - BS, None)
    assert os.stat(mounted.path("big")).st_size == QUOTA - BS
    assert write_all(mounted.path("keep"), BS) == (BS, None)


def test_a_long_write_fails_at_a_write_call(tmp_path):
    """Past the write buffer of an inode (32 MiB) the commit runs inside write(2)."""
    m = Mounted(tmp_path, max_bytes=QUOTA, max_files=None)
    try:
        written, failure = write_all(m.path("long"), 48 << 20)
        assert failure == errno.ENOSPC and written < 48 << 20
        assert m.vol.usage() == {"bytes": 0, "files": 1}
    finally:
        m.close()


def test_truncate_up_past_the_quota_is_enospc(mounted):
    with open(mounted.path("t"), "wb") as f:
        f.write(b"t" * 100)
    with pytest.raises(OSError) as exc:
        os.truncate(mounted.path("t"), QUOTA + 1)
    assert exc.value.errno == errno.ENOSPC
    assert os.stat(mounted.path("t")).st_size == 100
    os.truncate(mounted.path("t"), QUOTA)            # up to the limit is allowed
    assert os.stat(mounted.path("t")).st_size == QUOTA


def test_files_quota_is_enospc_for_every_new_inode(mounted):
    for i in range(MAX_FILES - 1):
        os.mkdir(mounted.path(f"d{i}"))
    with open(mounted.path("last"), "wb"):
        pass
    for make in (lambda: os.mkdir(mounted.path("more")),
                 lambda: os.open(mounted.path("more"), os.O_CREAT | os.O_WRONLY, 0o644),
                 lambda: os.symlink("last", mounted.path("more")),
                 lambda: os.mkfifo(mounted.path("more"))):
        with pytest.raises(OSError) as exc:
            make()
        assert exc.value.errno == errno.ENOSPC
    assert not os.path.lexists(mounted.path("more"))
    os.link(mounted.path("last"), mounted.path("hard"))   # no new inode: allowed
    os.rmdir(mounted.path("d0"))
    mkdir_soon(mounted.path("more"))
    time.sleep(2.1)                                   # statfs answers are cached for 2 s
    s = os.statvfs(mounted.mnt)
    assert (s.f_files, s.f_ffree) == (MAX_FILES, 0)
