"""A WebDAV lock keeps the mount's writers out too (EACCES), in ``serve --mount`` and in a
mount started after the lock was taken; reads go on, and the change works once unlocked."""

import errno
import os

import pytest
import requests

from .mounts import RazorMount

LOCKINFO = (b'<?xml version="1.0"?><D:lockinfo xmlns:D="DAV:"><D:lockscope><D:exclusive/>'
            b'</D:lockscope><D:locktype><D:write/></D:locktype><D:owner>office</D:owner>'
            b'</D:lockinfo>')


def lock(url, depth="0"):
    r = requests.request("LOCK", url, data=LOCKINFO, headers={"Depth": depth,
                                                             "Timeout": "Second-600"})
    assert r.status_code == 200, r.text
    return r.headers["Lock-Token"]


def refused(fn, *args):
    with pytest.raises(OSError) as exc:
        fn(*args)
    assert exc.value.errno == errno.EACCES, exc.value


def test_a_webdav_lock_keeps_the_mounts_writers_out(tmp_path):
    m = RazorMount(tmp_path / "data", tmp_path / "mnt", dav=True).start()
    mnt = m.mountpoint
    try:
        os.mkdir(f"{mnt}/dir")
        for name in ("doc.txt", "dir/inner.txt"):
            with open(f"{mnt}/{name}", "w") as f:
                f.write("before")
        token = lock(m.url + "/doc.txt")
        dir_token = lock(m.url + "/dir", depth="infinity")
        refused(open, f"{mnt}/doc.txt", "w")
        refused(os.unlink, f"{mnt}/doc.txt")
        refused(os.rename, f"{mnt}/doc.txt", f"{mnt}/moved.txt")
        refused(os.chmod, f"{mnt}/doc.txt", 0o600)
        refused(os.setxattr, f"{mnt}/doc.txt", "user.x", b"1")
        refused(open, f"{mnt}/dir/inner.txt", "a")          # below a depth-infinity lock
        refused(open, f"{mnt}/dir/new.txt", "w")             # membership of a locked dir
        with open(f"{mnt}/doc.txt") as f:                    # reads go on
            assert f.read() == "before"
        with open(f"{mnt}/other.txt", "w") as f:             # elsewhere nothing changes
            f.write("free")
        r = requests.request("UNLOCK", m.url + "/doc.txt", headers={"Lock-Token": token})
        assert r.status_code == 204
        with open(f"{mnt}/doc.txt", "w") as f:
            f.write("after")
        assert requests.get(m.url + "/doc.txt").content == b"after"
        assert requests.request("UNLOCK", m.url + "/dir",
                                headers={"Lock-Token": dir_token}).status_code == 204
        os.unlink(f"{mnt}/dir/inner.txt")
    finally:
        m.stop()


def test_locks_taken_before_a_mount_hold_in_it(tmp_path):
    m = RazorMount(tmp_path / "data", tmp_path / "mnt", dav=True).start()
    try:
        with open(f"{m.mountpoint}/doc.txt", "w") as f:
            f.write("x")
        lock(m.url + "/doc.txt")
    finally:
        m.stop()
    plain = RazorMount(tmp_path / "data", tmp_path / "mnt").start()
    try:
        refused(os.unlink, f"{plain.mountpoint}/doc.txt")
    finally:
        plain.stop()
