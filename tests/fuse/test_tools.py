"""Real programs in a real mount: shell tools, tar, git, SQLite; and the two faces of one
process (``serve --mount``) seeing each other's writes."""
import os
import sqlite3
import subprocess
import time

import requests

from mounts import RazorMount


def sh(cmd, cwd=None, **kw):
    return subprocess.run(cmd, shell=True, cwd=cwd, check=True, capture_output=True, text=True,
                          timeout=300, **kw).stdout


def make_tree(root):
    """A small real tree: nested dirs, empty and binary files, symlinks, hard links."""
    os.makedirs(os.path.join(root, "src/pkg/deep"))
    for i in range(40):
        with open(os.path.join(root, "src/pkg", f"m{i}.py"), "w") as f:
            f.write(f"# module {i}\n" + "x = 1\n" * i)
    with open(os.path.join(root, "src/pkg/deep/blob.bin"), "wb") as f:
        f.write(os.urandom(5 << 20))          # spans two 4 MiB blocks
    open(os.path.join(root, "empty"), "w").close()
    os.symlink("src/pkg/m1.py", os.path.join(root, "link"))
    os.symlink("nowhere", os.path.join(root, "dangling"))
    os.link(os.path.join(root, "src/pkg/m2.py"), os.path.join(root, "hard"))
    os.chmod(os.path.join(root, "src/pkg/m3.py"), 0o751)


def listing(root):
    """Everything tar would keep: type, mode, size, link target, hard-link groups, bytes."""
    return sh("find . -type d -printf '%y %m %n %P\\n' | sort && "   # a directory's size varies
              "find . ! -type d -printf '%y %m %s %n %l %P\\n' | sort && "
              "find . -type f -print0 | sort -z | xargs -0 sha1sum", cwd=root)


def test_shell_tools_and_tar_round_trip(mounted, tmp_path):
    mnt = mounted.mountpoint
    src = tmp_path / "src"
    make_tree(src)
    sh(f"cp -a {src} {mnt}/copy")
    assert listing(f"{mnt}/copy") == listing(src)
    sh(f"tar -C {src} -cf {tmp_path}/t.tar . && mkdir {mnt}/untar && tar -C {mnt}/untar -xf "
       f"{tmp_path}/t.tar")
    assert listing(f"{mnt}/untar") == listing(src)
    sh(f"tar -C {mnt}/untar -cf {tmp_path}/back.tar . && mkdir {tmp_path}/back && "
       f"tar -C {tmp_path}/back -xf {tmp_path}/back.tar")
    assert listing(tmp_path / "back") == listing(src)
    assert int(sh(f"find {mnt}/untar -type f | wc -l")) == 43
    du = int(sh(f"du -sk {mnt}/untar").split()[0])
    assert 5 * 1024 <= du <= 6 * 1024, du     # the blob, counted once for the hard link
    sh(f"mv {mnt}/untar {mnt}/copy/moved && rm -r {mnt}/copy")
    assert os.listdir(mnt) == []


def test_git_clone_commit_mv_gc(mounted, tmp_path):
    mnt = mounted.mountpoint
    origin = tmp_path / "origin"
    make_tree(origin)
    git = "git -c user.name=t -c user.email=t@t -c init.defaultBranch=main"
    sh(f"{git} init -q && {git} add -A && {git} commit -qm one", cwd=origin)
    sh(f"{git} clone -q file://{origin} {mnt}/clone")
    repo = f"{mnt}/clone"
    with open(f"{repo}/src/pkg/m5.py", "a") as f:
        f.write("y = 2\n")
    sh(f"{git} mv src/pkg/m6.py src/renamed.py && {git} commit -qam two", cwd=repo)
    sh(f"{git} gc -q --aggressive --prune=now && {git} fsck --full --strict", cwd=repo)
    assert sh(f"{git} status --porcelain", cwd=repo) == ""
    assert sh(f"{git} log --format=%s", cwd=repo).split() == ["two", "one"]
    assert "y = 2" in sh(f"{git} show HEAD:src/pkg/m5.py", cwd=repo)


def test_sqlite_database_in_the_mount(mounted):
    path = os.path.join(mounted.mountpoint, "db.sqlite")
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
    with db:
        db.executemany("INSERT INTO t (v) VALUES (?)", ((f"row {i}" * 5,) for i in range(20_000)))
    with db:   # a second transaction rewrites pages in place
        db.execute("UPDATE t SET v = 'changed' WHERE id % 7 = 0")
    db.close()
    mounted.stop()
    mounted.start()
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    assert db.execute("SELECT COUNT(*), SUM(v = 'changed') FROM t").fetchone() == (20_000, 2857)
    db.execute("PRAGMA journal_mode=WAL")
    with db:
        db.execute("DELETE FROM t WHERE id > 10000")
    db.close()
    db = sqlite3.connect(path)
    assert db.execute("SELECT COUNT(*) FROM t").fetchone() == (10_000,)
    assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    db.close()


def wait_for(predicate, timeout=5.0):
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result or time.monotonic() > deadline:
            return result
        time.sleep(0.05)


def test_webdav_and_mount_see_each_other(tmp_path):
    """serve --mount: one process, one core, both faces. A change through one is seen
    through the other within a second (the kernel's entry and attribute timeouts)."""
    m = RazorMount(tmp_path / "data", tmp_path / "mnt", dav=True).start()
    try:
        mnt, url = m.mountpoint, m.url
        assert requests.put(f"{url}/from-dav.txt", data=b"written over WebDAV").status_code == 201
        t0 = time.monotonic()
        assert wait_for(lambda: os.path.exists(f"{mnt}/from-dav.txt"), 1.0)
        assert open(f"{mnt}/from-dav.txt", "rb").read() == b"written over WebDAV"
        # the kernel has the old content cached: an overwrite through DAV must show anyway
        assert requests.put(f"{url}/from-dav.txt", data=b"second version!").status_code == 204
        assert wait_for(lambda: open(f"{mnt}/from-dav.txt", "rb").read() == b"second version!",
                        1.0)
        assert time.monotonic() - t0 < 3
        with open(f"{mnt}/from-mount.bin", "wb") as f:
            f.write(b"m" * 5_000_000)
        r = requests.get(f"{url}/from-mount.bin")
        assert r.status_code == 200 and r.content == b"m" * 5_000_000
        os.mkdir(f"{mnt}/dir")
        os.rename(f"{mnt}/from-mount.bin", f"{mnt}/dir/moved.bin")
        assert requests.get(f"{url}/dir/moved.bin").content == b"m" * 5_000_000
        assert requests.request("MOVE", f"{url}/dir", headers={
            "Destination": f"{url}/dir2"}).status_code == 201
        assert wait_for(lambda: os.path.exists(f"{mnt}/dir2/moved.bin"), 1.0)
        assert requests.delete(f"{url}/from-dav.txt").status_code == 204
        assert wait_for(lambda: not os.path.exists(f"{mnt}/from-dav.txt"), 1.0)
    finally:
        assert m.stop() == 0
    m.start()   # both faces again, after a clean stop: everything is still there
    try:
        assert open(f"{m.mountpoint}/dir2/moved.bin", "rb").read() == b"m" * 5_000_000
        assert requests.get(f"{m.url}/dir2/moved.bin").content == b"m" * 5_000_000
    finally:
        m.stop()
