"""``razordav mount``: mounting, clean unmounts (SIGTERM, fusermount3 -u), clear errors."""
import errno
import os
import subprocess
import sys
import time

from mounts import RazorMount, is_mounted


def razordav(*args, timeout=60):
    return subprocess.run([sys.executable, "-m", "razordav.cli", *args], capture_output=True,
                          text=True, timeout=timeout)


def test_sigterm_commits_and_remount_keeps_everything(tmp_path):
    m = RazorMount(tmp_path / "data", tmp_path / "mnt").start()
    mnt = m.mountpoint
    with open(os.path.join(mnt, "f"), "wb") as f:
        f.write(b"x" * 3_000_000)          # still buffered when SIGTERM comes
    os.mkdir(os.path.join(mnt, "d"))
    os.symlink("../f", os.path.join(mnt, "d", "s"))
    assert m.stop() == 0
    assert not is_mounted(mnt) and os.listdir(mnt) == []
    m.start()
    assert open(os.path.join(mnt, "d", "s"), "rb").read() == b"x" * 3_000_000
    m.stop()


def test_fusermount_unmount_ends_the_process(tmp_path):
    m = RazorMount(tmp_path / "data", tmp_path / "mnt").start()
    with open(os.path.join(m.mountpoint, "f"), "w") as f:
        f.write("kept")
    subprocess.run(["fusermount3", "-u", m.mountpoint], check=True)
    assert m.proc.wait(30) == 0
    m.proc = None
    m.start()
    assert open(os.path.join(m.mountpoint, "f")).read() == "kept"
    m.stop()


def test_background_mount_returns_once_mounted(tmp_path):
    mnt, data = tmp_path / "mnt", tmp_path / "data"
    mnt.mkdir()
    r = razordav("mount", "--data-dir", str(data), str(mnt))
    try:
        assert r.returncode == 0, r.stderr
        assert "mounted on" in r.stdout and is_mounted(str(mnt))
        (mnt / "a").write_text("hello")
        assert (mnt / "a").read_text() == "hello"
    finally:
        subprocess.run(["fusermount3", "-u", str(mnt)], check=True)
    deadline = time.monotonic() + 30
    while "unmounted" not in (data / "mount.log").read_text() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert "all writes committed" in (data / "mount.log").read_text()


def test_mount_point_missing_or_busy_is_one_clear_line(tmp_path, mounted):
    r = razordav("mount", "-f", "--data-dir", str(tmp_path / "d2"), str(tmp_path / "nope"))
    assert r.returncode == 1
    assert r.stderr.strip() == f"razordav: error: mount point {tmp_path / 'nope'} does not exist"
    r = razordav("mount", "-f", "--data-dir", str(tmp_path / "d2"), mounted.mountpoint)
    assert r.returncode == 1 and "is busy" in r.stderr and r.stderr.count("\n") == 1
    (tmp_path / "file").write_text("")
    r = razordav("mount", "-f", "--data-dir", str(tmp_path / "d2"), str(tmp_path / "file"))
    assert r.returncode == 1 and "is not a directory" in r.stderr


def test_no_dev_fuse_is_one_clear_line(tmp_path):
    """FUSE missing: run the check in a mount namespace where /dev/fuse is hidden."""
    (tmp_path / "mnt").mkdir()
    script = ("mount -t tmpfs none /dev/shm 2>/dev/null; mount --bind /dev/null /dev/fuse && "
              f"exec {sys.executable} -m razordav.cli mount -f --data-dir {tmp_path}/d "
              f"{tmp_path}/mnt")
    r = subprocess.run(["unshare", "--mount", "sh", "-c", script], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 1, r.stderr
    assert r.stderr.startswith("razordav: error: FUSE is not available") or \
        r.stderr.startswith("razordav: error: FUSE is not permitted"), r.stderr
    assert r.stderr.count("\n") == 1


def test_mount_one_tenant_with_its_quota(tmp_path):
    data = tmp_path / "data"
    r = razordav("tenant", "add", "acme", "--quota", "2M", "--data-dir", str(data))
    assert r.returncode == 0, r.stderr
    m = RazorMount(data, tmp_path / "mnt", extra=["--tenant", "acme"]).start()
    try:
        st = os.statvfs(m.mountpoint)
        assert st.f_blocks * st.f_frsize == 2 << 20
        with open(os.path.join(m.mountpoint, "a"), "wb") as f:
            f.write(b"a" * 1000)
        try:
            with open(os.path.join(m.mountpoint, "big"), "wb") as f:
                f.write(b"b" * (3 << 20))
            raise AssertionError("a write over the quota was accepted")
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
    finally:
        m.stop()
    assert list((data / "tenants").glob("acme.*/meta.db"))
    r = razordav("mount", "-f", "--tenant", "initech", "--data-dir", str(data),
                 str(tmp_path / "mnt"))
    assert r.returncode == 1 and "no tenant 'initech'" in r.stderr
