"""Quotas in the core: O(1) usage counters kept by the tree, and limits that refuse a change
which would pass them while leaving nothing behind (no file, no block, old content intact)."""

import shutil
import stat
import threading

import pytest

from razordav.core import errors
from razordav.core.handles import OpenFiles
from razordav.core.journal import restore
from razordav.core.tree import ROOT, Tree
from razordav.store import open_store

from .conftest import BS


def recount(vol):
    """Usage the slow way, from every inode: what the counters must always equal."""
    c = vol.tree.db.reader()
    size, files = c.execute(
        "SELECT COALESCE(SUM(CASE WHEN (mode & 61440) = 32768 THEN size ELSE 0 END), 0), "
        "COUNT(*) FROM inodes WHERE ino != ?", (ROOT,)).fetchone()
    return {"bytes": size, "files": files}


def nothing_left(vol, before_usage, before_blocks):
    """The state after a refused change: usage, block rows and cached blocks as before."""
    assert vol.usage() == before_usage == recount(vol)
    assert set(vol.tree.db.reader().execute("SELECT hash FROM blocks").fetchall()) == before_blocks
    assert {(n,) for n in vol.cache.names()} <= before_blocks


def blocks_of(vol):
    return set(vol.tree.db.reader().execute("SELECT hash FROM blocks").fetchall())


# -- counters --

def test_unlimited_by_default(vol):
    assert vol.max_bytes is None and vol.max_files is None and vol.room() is None
    vol.write_file("/big", bytes(5 * BS))
    assert vol.usage() == {"bytes": 5 * BS, "files": 1}


def test_counters_follow_every_kind_of_change(vol):
    vol.mkdir("/d")
    vol.write_file("/d/a", b"a" * 1000)
    vol.write_file("/b", b"b" * (3 * BS + 5))
    vol.tree.symlink(ROOT, "link", b"/d/a")               # symlinks count as files, 0 bytes
    assert vol.usage() == {"bytes": 3 * BS + 1005, "files": 4} == recount(vol)
    a = vol.stat("/d/a")
    vol.tree.link(a.ino, ROOT, "hard")                    # a hard link adds no inode, no bytes
    assert vol.usage() == {"bytes": 3 * BS + 1005, "files": 4}
    vol.unlink("/d/a")                                    # the other link keeps the inode
    assert vol.usage()["files"] == 4
    vol.pwrite(a.ino, 2 * BS, b"x" * 10)                  # grows with a hole
    vol.truncate(vol.stat("/b").ino, 7)
    assert vol.usage() == recount(vol) == {"bytes": 2 * BS + 10 + 7, "files": 4}
    vol.copy("/b", "/b2")
    vol.write_file("/b", b"new content")                  # replaced content is freed
    vol.rename("/b2", "/hard")                            # rename onto a file drops it
    assert vol.usage() == recount(vol) == {"bytes": 11 + 7, "files": 4}
    vol.tree.mknod(ROOT, "fifo", stat.S_IFIFO | 0o644)
    vol.remove_tree("/d")
    assert vol.usage() == recount(vol) == {"bytes": 18, "files": 4}
    for name in ("/b", "/hard", "/link", "/fifo"):
        vol.unlink(name)
    assert vol.usage() == {"bytes": 0, "files": 0}


def test_unlinked_open_file_counts_until_its_last_handle(vol):
    vol.write_file("/f", b"z" * 100)
    r = vol.open_read("/f")
    vol.unlink("/f")
    assert vol.usage() == {"bytes": 100, "files": 1}      # the data still exists
    r.close()
    assert vol.usage() == {"bytes": 0, "files": 0}


def test_counters_are_kept_across_reopen_and_recounted_only_when_unknown(open_volume):
    vol = open_volume()
    vol.mkdir("/d")
    vol.write_file("/d/f", b"q" * 3000)
    want = vol.usage()
    vol.close()
    vol = open_volume()
    assert vol.usage() == want == recount(vol)
    # An open trusts counters marked valid (no scan): a damaged row stays until fsck.
    with vol.tree.db.write() as c:
        c.execute("UPDATE usage SET bytes = 1, files = 99")
    vol.close()
    vol = open_volume()
    assert vol.usage() == {"bytes": 1, "files": 99}
    vol.tree.invalidate_counters()                   # what a restore does while replaying
    vol.close()
    vol = open_volume()
    assert vol.usage() == want


def test_counters_right_after_restore(open_volume, tmp_path):
    vol = open_volume()
    vol.set_quota(10 * BS, 100)
    for i in range(5):
        vol.write_file(f"/f{i}", bytes([i]) * (i * 1000 + 1))
    vol.write_file("/f1", b"shorter")                     # replayed as INSERT OR REPLACE
    vol.unlink("/f2")
    want = vol.usage()
    vol.collect_garbage()
    vol.close()
    shutil.rmtree(tmp_path / "data")
    (tmp_path / "data").mkdir()
    restore(open_store((tmp_path / "store").as_uri()), tmp_path / "data" / "meta.db")
    vol = open_volume()
    assert vol.usage() == want == recount(vol)
    assert vol.max_bytes is None and vol.tree.usage()["max_bytes"] is None  # the opener's


def test_limits_are_cleared_by_a_new_tree(tmp_path):
    t = Tree(tmp_path / "m.db")
    t.set_limits(10, 1)
    t.close()
    t = Tree(tmp_path / "m.db")
    assert t.usage() == {"bytes": 0, "files": 0, "max_bytes": None, "max_files": None}
    t.close()


# -- bytes --

def test_streaming_write_over_quota_leaves_old_content(vol):
    vol.set_quota(4 * BS, None)
    vol.write_file("/f", b"old" * 1000)
    before, blocks = vol.usage(), blocks_of(vol)
    w = vol.open_write("/f")
    with pytest.raises(errors.NoSpace) as exc:
        for _ in range(10):
            w.write(b"n" * BS)
    w.abort()
    assert exc.value.errno == 28 and exc.value.http_status == 507
    assert w.size <= 4 * BS + 3000                      # stopped as the bytes arrived
    assert vol.read_file("/f") == b"old" * 1000
    nothing_left(vol, before, blocks)


def test_streaming_write_over_quota_creates_nothing(vol):
    vol.set_quota(2 * BS, None)
    before, blocks = vol.usage(), blocks_of(vol)
    with pytest.raises(errors.NoSpace):
        with vol.open_write("/new") as w:
            w.write(b"a" * BS)
            w.write(b"b" * (BS + 1))
    with pytest.raises(errors.NotFound):
        vol.stat("/new")
    nothing_left(vol, before, blocks)


def test_replaced_content_counts_as_freed(vol):
    vol.set_quota(3 * BS, None)
    vol.write_file("/f", b"1" * (3 * BS))              # exactly full
    assert vol.room() == 0
    vol.write_file("/f", b"2" * (3 * BS))              # a rewrite of the same size fits
    assert vol.read_file("/f") == b"2" * (3 * BS)
    with pytest.raises(errors.NoSpace):
        vol.write_file("/g", b"x")
    vol.write_file("/f", b"3" * BS)
    vol.write_file("/g", b"x" * (2 * BS))
    assert vol.usage() == {"bytes": 3 * BS, "files": 2}


def test_announced_length_fails_before_any_byte(vol):
    vol.set_quota(BS, None)
    vol.write_file("/f", b"x" * 100)
    with pytest.raises(errors.NoSpace):
        vol.open_write("/g", length=BS)
    w = vol.open_write("/f", length=BS)                 # replacing frees the old 100 bytes
    w.write(b"y" * BS)
    w.close()
    assert vol.usage()["bytes"] == BS


def test_publish_rechecks_against_a_parallel_writer(vol):
    """Two writers that each fit alone: the second to publish is refused whole."""
    vol.set_quota(3 * BS, None)
    w1, w2 = vol.open_write("/one"), vol.open_write("/two")
    w1.write(b"1" * (2 * BS))
    w2.write(b"2" * (2 * BS))
    w1.close()
    before, blocks = vol.usage(), blocks_of(vol)
    with pytest.raises(errors.NoSpace):
        w2.close()
    nothing_left(vol, before, blocks)
    with pytest.raises(errors.NotFound):
        vol.stat("/two")


def test_many_threads_never_overshoot(vol):
    vol.set_quota(10 * BS, None)
    results = []

    def writer(i):
        try:
            vol.write_file(f"/t{i}", bytes([i]) * (3 * BS))
            results.append(True)
        except errors.NoSpace:
            results.append(False)

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results.count(True) == 3
    assert vol.usage() == recount(vol) == {"bytes": 9 * BS, "files": 3}


def test_pwrite_and_truncate_up_over_quota_change_nothing(vol):
    vol.set_quota(2 * BS, None)
    ino = vol.write_file("/f", b"a" * BS).ino
    before, blocks = vol.usage(), blocks_of(vol)
    with pytest.raises(errors.NoSpace):
        vol.pwrite(ino, BS, b"b" * (BS + 1))
    with pytest.raises(errors.NoSpace):
        vol.pwrite(ino, 10 * BS, b"c")                 # a hole counts: logical bytes
    with pytest.raises(errors.NoSpace):
        vol.truncate(ino, 2 * BS + 1)
    assert vol.read_file("/f") == b"a" * BS
    nothing_left(vol, before, blocks)
    vol.truncate(ino, 2 * BS)                          # up to the limit is fine
    vol.pwrite(ino, 0, b"z" * (2 * BS))
    assert vol.room() == 0


def test_copy_counts_logical_bytes(vol):
    vol.set_quota(3 * BS, None)
    vol.write_file("/a", b"a" * (2 * BS))
    before, blocks = vol.usage(), blocks_of(vol)
    with pytest.raises(errors.NoSpace):
        vol.copy("/a", "/b")                           # shares blocks, yet counts 2*BS more
    with pytest.raises(errors.NotFound):
        vol.stat("/b")                                 # the new inode went with the refusal
    nothing_left(vol, before, blocks)
    vol.write_file("/small", b"s" * BS)
    with pytest.raises(errors.NoSpace):
        vol.copy("/a", "/small")                       # replacing BS by 2*BS: one too many
    assert vol.read_file("/small") == b"s" * BS
    vol.copy("/small", "/a")                           # shrinking by a copy is fine
    assert vol.usage() == {"bytes": 2 * BS, "files": 2}


def test_lowered_quota_allows_only_shrinking(vol):
    vol.write_file("/a", b"a" * (4 * BS))
    vol.write_file("/b", b"b" * BS)
    vol.set_quota(2 * BS, None)
    assert vol.room() == 0
    ino = vol.stat("/a").ino
    vol.truncate(ino, 3 * BS)                          # still over, but smaller
    with pytest.raises(errors.NoSpace):
        vol.pwrite(ino, 3 * BS, b"x")
    vol.unlink("/b")
    vol.write_file("/a", b"c" * BS)                    # a smaller rewrite
    assert vol.usage()["bytes"] == BS


def test_open_files_commit_over_quota_keeps_the_buffer(vol):
    """The FUSE write path: a refused commit changes nothing and can be retried."""
    vol.set_quota(2 * BS, None)
    ino = vol.write_file("/f", b"o" * 100).ino
    files = OpenFiles(vol)
    try:
        files.open(ino)
        files.write(ino, 0, b"n" * (3 * BS))
        before, blocks = vol.usage(), blocks_of(vol)
        with pytest.raises(errors.NoSpace):
            files.flush(ino)
        assert vol.read_file("/f") == b"o" * 100
        nothing_left(vol, before, blocks)
        assert files.read(ino, 0, 4) == b"nnnn"       # still buffered
        files.truncate(ino, BS)
        files.flush(ino)
        assert vol.read_file("/f") == b"n" * BS
        files.close(ino)
    finally:
        files.close_all()


# -- files --

def test_files_quota_refuses_new_inodes_of_every_kind(vol):
    vol.set_quota(None, 3)
    vol.mkdir("/d")
    vol.write_file("/d/f", b"x")
    vol.tree.symlink(ROOT, "s", b"/d/f")
    before, blocks = vol.usage(), blocks_of(vol)
    with pytest.raises(errors.NoSpace):
        vol.mkdir("/e")
    with pytest.raises(errors.NoSpace):
        vol.write_file("/g", b"y")
    with pytest.raises(errors.NoSpace):
        vol.open_write("/g")                           # refused before the body
    with pytest.raises(errors.NoSpace):
        vol.tree.symlink(ROOT, "s2", b"x")
    with pytest.raises(errors.NoSpace):
        vol.tree.mknod(ROOT, "fifo", stat.S_IFIFO | 0o600)
    with pytest.raises(errors.NoSpace):
        vol.copy("/d/f", "/copy")
    nothing_left(vol, before, blocks)
    assert [n for n, _ in vol.listdir("/")] == ["d", "s"]
    vol.tree.link(vol.stat("/d/f").ino, ROOT, "hard")  # a link is no new inode
    vol.write_file("/d/f", b"rewrite")                 # rewriting needs no new inode
    vol.rename("/hard", "/d/h")
    vol.unlink("/s")
    vol.mkdir("/e")
    assert vol.usage() == {"bytes": 7, "files": 3}


def test_no_quota_again(vol):
    vol.set_quota(1, 0)
    with pytest.raises(errors.NoSpace):
        vol.mkdir("/d")
    vol.set_quota(None, None)
    vol.mkdir("/d")
    vol.write_file("/d/f", b"x" * BS)
    assert vol.room() is None


@pytest.mark.parametrize("bad", [-1, "10", 1.5, True, 1 << 63])
def test_bad_quota_values_are_refused(vol, bad):
    with pytest.raises(errors.InvalidArgument):
        vol.set_quota(bad, None)
    with pytest.raises(errors.InvalidArgument):
        vol.set_quota(None, bad)
    assert vol.max_bytes is None and vol.tree.usage()["max_bytes"] is None
