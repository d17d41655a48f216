"""Metadata in the bucket: journal segments, snapshots, restore, ordering rules, lease."""

import os
import shutil
import stat
import time

import pytest

from razordav.core import errors
from razordav.core.check import check_tree
from razordav.core.journal import SEGMENT_PREFIX, SNAPSHOT_PREFIX, restore
from razordav.core.tree import Tree
from razordav.store import open_store

from .conftest import BS


def tree_state(vol):
    """Everything a restore must bring back, by path."""
    out = {}

    def walk(ino, path):
        for name, attr in vol.tree.readdir(ino):
            p = f"{path}/{name}"
            content = vol.read_file(p) if attr.is_file else None
            out[p] = (attr.mode, attr.size, attr.mtime, attr.nlink, attr.target, content,
                      vol.tree.props(attr.ino), vol.tree.xattrs(attr.ino))
            if attr.is_dir:
                walk(attr.ino, p)
    walk(1, "")
    return out


def populate(vol):
    vol.mkdir("/docs")
    vol.mkdir("/docs/deep")
    vol.write_file("/docs/a.txt", b"alpha" * 1000, mtime=1_500_000_000 * 10**9)
    vol.write_file("/docs/deep/b.bin", os.urandom(3 * BS + 7))
    vol.write_file("/gone", b"deleted later")
    vol.unlink("/gone")
    f = vol.stat("/docs/a.txt")
    vol.tree.set_props(f.ino, {("urn:x", "color"): b"<x:color xmlns:x='urn:x'>red</x:color>"})
    vol.tree.set_xattr(f.ino, "user.tag", b"\x00\x01binary")
    vol.tree.link(f.ino, vol.stat("/docs/deep").ino, "hardlink")
    vol.tree.symlink(1, "sym", b"docs/a.txt")
    vol.rename("/docs/deep", "/moved")
    vol.pwrite(vol.stat("/moved/b.bin").ino, 5, b"patched")


def test_restore_from_journal_segments(open_volume, tmp_path):
    vol = open_volume()
    populate(vol)
    expected = tree_state(vol)
    vol.collect_garbage()
    assert vol.shipper.pending() == 0
    assert list(vol.store.list(SEGMENT_PREFIX))
    vol.close()
    shutil.rmtree(tmp_path / "data")               # the gateway's disk is gone
    db = tmp_path / "restored.db"
    store = vol.store.__class__(tmp_path / "store") if False else None
    from razordav.store import open_store
    seq = restore(open_store((tmp_path / "store").as_uri()), db)
    assert seq > 0
    t = Tree(db)
    assert check_tree(t) == []
    t.close()
    (tmp_path / "data").mkdir()
    shutil.move(str(db), tmp_path / "data" / "meta.db")
    vol2 = open_volume()
    assert tree_state(vol2) == expected


def test_restore_from_snapshot_plus_later_segments(open_volume, tmp_path):
    vol = open_volume()
    populate(vol)
    vol.collect_garbage()
    snap_seq = vol.shipper.snapshot()
    assert snap_seq > 0
    assert [o.key for o in vol.store.list(SNAPSHOT_PREFIX)]
    assert list(vol.store.list(SEGMENT_PREFIX)) == []   # folded into the snapshot
    vol.write_file("/after-snapshot", b"later")
    vol.rmdir("/moved") if False else vol.remove_tree("/moved")
    expected = tree_state(vol)
    vol.collect_garbage()
    vol.close()
    from razordav.store import open_store
    shutil.rmtree(tmp_path / "data")
    (tmp_path / "data").mkdir()
    assert restore(open_store((tmp_path / "store").as_uri()),
                   tmp_path / "data" / "meta.db") > snap_seq
    vol2 = open_volume()
    assert tree_state(vol2) == expected
    vol2.write_file("/new-after-restore", b"x")       # the journal goes on from there
    vol2.collect_garbage()
    segs = [o.key for o in vol2.store.list(SEGMENT_PREFIX)]
    assert len(segs) == len(set(segs)) >= 2


def test_journal_gap_is_detected(open_volume, tmp_path):
    vol = open_volume()
    vol.write_file("/a", b"1")
    vol.collect_garbage()
    vol.write_file("/b", b"2")
    vol.collect_garbage()
    vol.write_file("/c", b"3")
    vol.collect_garbage()
    segs = sorted(o.key for o in vol.store.list(SEGMENT_PREFIX))
    vol.store.delete(segs[1])
    vol.close()
    from razordav.store import open_store
    with pytest.raises(errors.Corrupt, match="journal gap"):
        restore(open_store((tmp_path / "store").as_uri()), tmp_path / "r.db")


def test_segments_wait_for_their_blocks(open_volume):
    vol = open_volume(upload_paused=True)
    vol.write_file("/f", os.urandom(2 * BS))
    assert vol.shipper.run_once() is False           # its blocks are not in the store yet
    assert vol.shipper.pending() > 0
    assert all(".json" not in o.key for o in vol.store.list(SEGMENT_PREFIX))
    vol.cache.pause_uploads(False)
    vol.collect_garbage()
    assert vol.shipper.pending() == 0


def test_blocks_are_deleted_only_after_the_unlink_is_shipped(open_volume):
    vol = open_volume(pack_threshold=0)     # one object per block (packs: test_pack_store.py)
    vol.write_file("/f", os.urandom(2 * BS))
    vol.collect_garbage()
    vol.unlink("/f")
    assert len(list(vol.store.list("blocks/"))) == 2  # nothing shipped, nothing deleted
    assert vol.collect_garbage() == 2
    assert list(vol.store.list("blocks/")) == []


def test_second_gateway_is_refused_then_takes_over(open_volume, tmp_path):
    first = open_volume("one", lease_ttl=3)
    first.write_file("/x", b"shipped")
    first.collect_garbage()                       # uploaded and shipped
    (tmp_path / "two").mkdir()
    restore(open_store((tmp_path / "store").as_uri()), tmp_path / "two" / "meta.db")
    with pytest.raises(errors.VolumeError, match="in use by another gateway"):
        open_volume("two")
    second = open_volume("two", takeover=True)    # waits out the live lease (3 s)
    first.lease.renew()
    assert first.lease.lost
    with pytest.raises(errors.VolumeError, match="took over"):
        first.write_file("/x", b"must not land")
    second.write_file("/y", b"ok")
    assert second.read_file("/x") == b"shipped"
    first.close()
    second.close()


def test_same_data_dir_reclaims_its_lease_after_a_crash(open_volume):
    vol = open_volume()
    vol.write_file("/f", b"x")
    # crash: nothing released
    vol._closed = True
    vol.publisher.pool.shutdown()
    vol.cache.close()
    vol.tree.close()
    again = open_volume()
    assert again.read_file("/f") == b"x"


def test_clean_close_releases_the_lease(open_volume, tmp_path):
    one = open_volume("one", lease_ttl=30)
    one.write_file("/x", b"x")
    one.close()
    (tmp_path / "two").mkdir()
    restore(open_store((tmp_path / "store").as_uri()), tmp_path / "two" / "meta.db")
    t = time.monotonic()
    two = open_volume("two", lease_ttl=30)       # no wait for a released lease
    assert time.monotonic() - t < 5 and two.lease.term == 2
    two.close()


def test_file_modes_and_special_files_replicate(open_volume, tmp_path):
    vol = open_volume()
    vol.tree.mknod(1, "fifo", stat.S_IFIFO | 0o640, uid=7, gid=8)
    vol.collect_garbage()
    vol.close()
    from razordav.store import open_store
    restore(open_store((tmp_path / "store").as_uri()), tmp_path / "r.db")
    t = Tree(tmp_path / "r.db")
    a = t.lookup(1, "fifo")
    assert stat.S_ISFIFO(a.mode) and a.uid == 7 and a.gid == 8
    t.close()


def test_shipping_rests_while_the_faces_are_busy(open_volume):
    """Rounds wait for a pause in requests (upload_delay), as uploads do, at most
    upload_delay_max; the lease is renewed all the same."""
    import time
    vol = open_volume(journal_interval=0.1, upload_delay=0.8, upload_delay_max=30)
    renewals = []
    vol.shipper.on_tick.append(lambda: renewals.append(time.monotonic()))
    time.sleep(0.3)
    base = vol.shipper.shipped()
    t_end = time.monotonic() + 1.5
    i = 0
    while time.monotonic() < t_end:
        vol.mkdir(f"/d{i}")          # metadata only: nothing for the uploaders
        vol.cache.touch()
        i += 1
        time.sleep(0.05)
    assert vol.shipper.shipped() == base, "shipped while requests kept coming"
    assert len(renewals) >= 10
    deadline = time.monotonic() + 5
    while vol.shipper.pending() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert vol.shipper.pending() == 0 and vol.shipper.shipped() > base


def test_shipping_waits_no_longer_than_upload_delay_max(open_volume):
    import time
    vol = open_volume(journal_interval=0.1, upload_delay=2, upload_delay_max=2.5)
    vol.mkdir("/d")
    t0 = time.monotonic()
    while vol.shipper.pending() and time.monotonic() - t0 < 10:
        vol.cache.touch()
        time.sleep(0.05)
    assert vol.shipper.pending() == 0 and time.monotonic() - t0 < 4
