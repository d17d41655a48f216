"""The block cache: eviction never drops dirty blocks, the upload queue survives a restart,
the dirty limit turns into NoSpace, and a failing store keeps blocks queued."""

import functools
import os
import sqlite3
import time

import pytest

from razordav.core import errors
from razordav.core.blocks import block_key
from razordav.store import ObjectStore
from razordav.store.local import LocalStore

from .conftest import BS, store_objects


@pytest.fixture
def open_volume(open_volume):
    """Blocks upload one object each here (the uploader's queue, delays and crashes);
    packs have their own tests in test_pack_store.py."""
    return functools.partial(open_volume, pack_threshold=0)


def test_eviction_keeps_dirty_blocks(open_volume):
    vol = open_volume(cache_size=4 * BS, dirty_limit=64 * BS, upload_paused=True)
    files = {f"/f{i}": os.urandom(2 * BS) for i in range(8)}   # 16 blocks, cache holds 4
    for path, data in files.items():
        vol.write_file(path, data)
    assert vol.cache.figures()["dirty_bytes"] >= 16 * BS
    assert len(vol.cache.dirty_names()) == 16                  # nothing dirty was evicted
    vol.cache.pause_uploads(False)
    assert vol.cache.wait_uploaded(30)
    # once uploaded, clean blocks are evicted down to the limit
    vol.write_file("/trigger", os.urandom(BS))
    assert vol.cache.wait_uploaded(30)
    assert vol.cache.total_bytes <= 4 * (BS + 64)
    assert vol.cache.stats["evictions"] > 0
    for path, data in files.items():
        assert vol.read_file(path) == data                     # evicted ones come back


def test_restart_with_uploads_paused_drains_queue(open_volume):
    vol = open_volume(upload_paused=True)
    data = os.urandom(5 * BS)
    vol.write_file("/f", data)
    assert store_objects(vol) == []
    vol.close()                                                # queue is still full
    vol = open_volume()
    assert vol.cache.wait_uploaded(30)
    assert len(store_objects(vol)) == 5
    assert vol.read_file("/f") == data
    assert vol.cache.queue_length() == 0


def test_dirty_limit_gives_nospace_and_leaves_old_file(open_volume):
    vol = open_volume(dirty_limit=3 * (BS + 64), upload_paused=True)
    vol.write_file("/small", b"ok")
    with pytest.raises(errors.NoSpace):
        vol.write_file("/big", os.urandom(6 * BS))
    with pytest.raises(errors.NotFound):
        vol.stat("/big")
    assert vol.read_file("/small") == b"ok"
    vol.cache.pause_uploads(False)
    assert vol.cache.wait_uploaded(30)
    vol.write_file("/big", os.urandom(2 * BS))                 # room again after the drain


class Outage(ObjectStore):
    """A local store that can be switched off, like an S3 endpoint going away."""

    def __init__(self, root):
        self.inner = LocalStore(root)
        self.url = self.inner.url
        self.down = False

    def _check(self):
        if self.down:
            raise ConnectionError("endpoint unreachable")

    def put(self, key, data, **kw):
        self._check()
        return self.inner.put(key, data, **kw)

    def get(self, key, offset=0, length=None):
        self._check()
        return self.inner.get(key, offset, length)

    def head(self, key):
        self._check()
        return self.inner.head(key)

    def delete_many(self, keys):
        self._check()
        return self.inner.delete_many(keys)

    def list(self, prefix=""):
        self._check()
        return self.inner.list(prefix)

    def copy(self, src, dst, storage_class=None):
        self._check()
        return self.inner.copy(src, dst, storage_class)


def test_store_outage_keeps_blocks_queued_then_drains(open_volume, tmp_path):
    store = Outage(tmp_path / "outage-store")
    vol = open_volume(store=store)
    vol.write_file("/before", b"cached")
    assert vol.cache.wait_uploaded(10)
    store.down = True
    data = os.urandom(4 * BS)
    vol.write_file("/during", data)                            # acknowledged from the cache
    time.sleep(0.5)
    figures = vol.cache.figures()
    assert figures["upload_queue"] > 0 and "unreachable" in figures["last_store_error"]
    assert vol.read_file("/before") == b"cached"               # cached reads keep working
    store.down = False
    assert vol.cache.wait_uploaded(60)
    assert vol.cache.figures()["last_store_error"] is None
    assert len(list(store.inner.list("blocks/"))) == 5


def test_uncached_read_during_outage_is_unavailable(open_volume, tmp_path):
    store = Outage(tmp_path / "outage-store")
    vol = open_volume(store=store, cache_size=2 * BS, dirty_limit=64 * BS)
    vol.write_file("/f", os.urandom(6 * BS))
    assert vol.cache.wait_uploaded(10)
    vol.write_file("/g", os.urandom(4 * BS))                   # pushes /f out of the cache
    assert vol.cache.wait_uploaded(10)
    store.down = True
    from razordav.store import RetryingStore
    assert not isinstance(store, RetryingStore)
    with pytest.raises(errors.Unavailable):
        vol.read_file("/f")


def test_dirty_blocks_of_an_unfinished_write_are_dropped_at_start(open_volume):
    vol = open_volume(upload_paused=True)
    w = vol.open_write("/f")
    w.write(os.urandom(3 * BS))                                # blocks cached, never committed
    w._storer._reap(block=True)
    vol.cache.sync()
    # simulate a crash: no abort, no close of the writer
    vol._closed = True
    vol.publisher.pool.shutdown()
    vol.cache.close()
    vol.tree.close()
    vol2 = open_volume()
    assert vol2.cache.dirty_names() == []
    assert vol2.cache.wait_uploaded(5) and list(vol2.store.list("blocks/")) == []


@pytest.mark.parametrize("kind", ["random", "text"])
def test_range_reads_match_and_raw_blocks_are_read_in_place(open_volume, kind):
    """Random 4 KiB reads: a raw block this process wrote or verified is read from its file
    in place (no whole-block read); a compressed one through the decoded block. Both give
    exactly the bytes of the file, holes and short last blocks included."""
    vol = open_volume()
    data = os.urandom(3 * BS + 1000) if kind == "random" else \
        b"".join(b"line %d of some text\n" % i for i in range((3 * BS + 1000) // 20))
    vol.write_file("/f", data)
    ino = vol.stat("/f").ino
    vol.pwrite(ino, 5 * BS, b"tail")          # a hole from the end of the data to 5 * BS
    data = data + bytes(5 * BS - len(data)) + b"tail"
    vol.cache._hot.clear()
    reads_before = vol.cache.stats["hits"]
    rng = __import__("random").Random(7)
    with vol.open_read("/f") as r:
        for _ in range(200):
            off = rng.randrange(0, len(data))
            n = rng.choice([1, 4096, BS])
            assert r.pread(off, n) == data[off:off + n]
    first = vol.extents.extents(ino)[0].hex()             # a block of the data, not the tail
    assert vol.cache._entries[first].plain == (kind == "random")
    assert vol.cache.stats["hits"] > reads_before


def test_a_damaged_cache_file_is_found_on_its_first_read(open_volume):
    vol = open_volume()
    data = os.urandom(BS)
    vol.write_file("/f", data)
    assert vol.cache.wait_uploaded(30)
    name = next(iter(vol.extents.extents(vol.stat("/f").ino).values()))
    path = vol.cache._path(name.hex())
    blob = bytearray(path.read_bytes())
    blob[100] ^= 0xFF
    path.write_bytes(bytes(blob))
    vol.cache._hot.clear()
    vol.cache._entries[name.hex()].plain = False      # as after a restart
    assert vol.read_file("/f") == data                # checked, dropped, fetched again


def test_deferred_commits_leave_blocks_unsynced_until_a_durable_point(open_volume):
    """The FUSE face commits a close without a flush to disk: its block files are written,
    not fsynced, and the tree flushes them (and the cache index) before any commit that
    reaches the disk, or at ``sync``, so metadata is never durable before its blocks."""
    from razordav.core.handles import OpenFiles
    vol = open_volume(upload_paused=True, small_block=0)   # blocks in files
    files = OpenFiles(vol)
    try:
        ino = vol.tree.create(1, "f").ino
        with vol.tree.db.deferred_sync():
            files.open(ino)
            files.write(ino, 0, os.urandom(BS + 10))
            files.close(ino)                            # committed, not flushed
        assert vol.read_file("/f") and len(vol.cache._unsynced) == 2
        flushed = []
        real = vol.cache._flush
        vol.cache._flush = lambda: flushed.append(len(vol.cache._unsynced)) or real()
        vol.tree.set_meta("probe", "1")                 # any durable commit flushes first
        assert flushed == [2] and vol.cache._unsynced == set()
        with vol.tree.db.deferred_sync():
            files.open(ino)
            files.write(ino, 0, os.urandom(100))
            files.close(ino)
        assert len(vol.cache._unsynced) == 1
        vol.tree.db.sync()                                 # fsync / fsyncdir of the mount
        assert flushed == [2, 1] and vol.cache._unsynced == set()
    finally:
        files.close_all()
        vol.cache.pause_uploads(False)


def _crash(vol):
    """Stop a volume as a kill -9 would: no commits, no uploads, no close of writers."""
    vol._closed = True
    vol.shipper.stop(flush=False)
    vol.publisher.pool.shutdown()
    vol.cache._closing = True
    with vol.cache._lock:
        vol.cache._wake.notify_all()
    for t in vol.cache._uploaders:   # a killed process has no threads left either
        t.join(10)
    vol.files._stop.set()            # the write buffers' flusher: stopped, nothing committed
    vol.files._wake.set()
    vol.files._flusher.join(10)
    vol.tree.close()
    vol.cache._index.close(do_log=False, force=True)   # queued index writes are lost


@pytest.mark.parametrize("small_block", [0, 64 << 10], ids=["files", "db"])
def test_a_crash_before_the_index_commit_keeps_the_blocks_metadata_names(open_volume, small_block):
    """In deferred mode (the FUSE face) the cache index commit is only queued. Block files a
    crash left without index rows are verified and queued again if committed metadata names
    them, and deleted (here and in the store) if not."""
    from razordav.core.handles import OpenFiles
    vol = open_volume(upload_paused=True, small_block=small_block)
    files = OpenFiles(vol, max_age=3600)
    kept_data, lost_data = os.urandom(BS + 10), os.urandom(BS)
    ino = vol.tree.create(1, "f").ino
    with vol.tree.db.deferred_sync():
        files.open(ino)
        files.write(ino, 0, kept_data)
        files.close(ino)                                  # committed; index commit queued
    orphan = vol.tree.create(1, "g").ino
    w = vol.open_write("/g")
    w.write(lost_data)                                    # one block, never committed
    w._storer._reap(block=True)
    named = set(vol.extents.extents(ino).values())
    stray = {n for n in vol.cache.names()} - named
    assert len(named) == 2 and len(stray) == 1
    vol.tree.db.sync()    # the tree's commit is on disk; drop the index rows it promised
    files._stop.set()
    _crash(vol)
    db = sqlite3.connect(vol.cache.dir / "index.sqlite")
    with db:
        db.execute("DELETE FROM blocks")
    db.close()
    vol.store.put(block_key(next(iter(stray))), b"uploaded before the crash")
    assert orphan

    vol2 = open_volume()
    assert set(vol2.cache.names()) == named               # adopted; the stray one deleted
    assert list(vol2.store.list(block_key(next(iter(stray))))) == []
    assert vol2.read_file("/f") == kept_data
    assert vol2.cache.wait_uploaded(30)
    assert {o.key for o in vol2.store.list("blocks/")} == {block_key(n) for n in named}


def test_a_durable_write_flushes_its_block_never_the_cache_index(open_volume, monkeypatch):
    """A PUT is durable once its block file, that file's directory and the metadata are on
    disk; the cache index is a hint and no part of it (one flush less per small file)."""
    from razordav.core import cache as cache_mod
    vol = open_volume(upload_paused=True, small_block=0)   # blocks in files
    vol.write_file("/warm", os.urandom(100))
    flushed = []
    real_fsync, real_path = os.fsync, cache_mod.fsync_path
    monkeypatch.setattr(os, "fsync", lambda fd: flushed.append(os.readlink(
        f"/proc/self/fd/{fd}")) or real_fsync(fd))
    monkeypatch.setattr(cache_mod, "fsync_path", lambda p: flushed.append(str(p)) or
                        real_path(p))
    vol.write_file("/f", os.urandom(100))
    name = next(iter(vol.extents.extents(vol.stat("/f").ino).values())).hex()
    assert not any("index.sqlite" in p for p in flushed), flushed
    assert any(name in os.path.basename(p) for p in flushed), flushed  # the block file
    assert str(vol.cache._path(name).parent) in flushed               # and its directory


@pytest.mark.parametrize("small_block", [0, 64 << 10], ids=["files", "db"])
def test_a_power_loss_that_takes_index_rows_keeps_acknowledged_blocks(open_volume, small_block):
    """After a durable write the index rows may still be lost (the index is never flushed
    for a write): the block files are on disk, and the metadata naming them brings them
    back, dirty, and uploads them."""
    vol = open_volume(upload_paused=True, small_block=small_block)
    data = {f"/f{i}": os.urandom(BS + 10 * i) for i in range(3)}
    for path, body in data.items():
        vol.write_file(path, body)
    _crash(vol)
    db = sqlite3.connect(vol.cache.dir / "index.sqlite")
    with db:
        db.execute("DELETE FROM blocks")
    db.close()
    vol2 = open_volume(upload_paused=True)
    assert len(vol2.cache.dirty_names()) == 5          # 2 + 2 + 1 blocks, none lost
    for path, body in data.items():
        assert vol2.read_file(path) == body
    vol2.cache.pause_uploads(False)
    assert vol2.cache.wait_uploaded(30)
    assert len(store_objects(vol2)) == 5


def test_a_damaged_unindexed_block_is_not_adopted(open_volume, caplog):
    vol = open_volume(upload_paused=True, small_block=0)   # blocks in files
    vol.write_file("/f", os.urandom(BS))
    name = next(iter(vol.extents.extents(vol.stat("/f").ino).values()))
    path = vol.cache._path(name.hex())
    _crash(vol)
    db = sqlite3.connect(vol.cache.dir / "index.sqlite")
    with db:
        db.execute("DELETE FROM blocks")
    db.close()
    path.write_bytes(path.read_bytes()[:-1] + b"!")
    vol2 = open_volume()
    assert vol2.cache.names() == [] and not path.exists()
    assert "damaged in the cache" in caplog.text


def test_uploads_wait_for_a_pause_in_writes(open_volume):
    """With upload_delay, nothing uploads while blocks keep coming; the backlog goes out in
    the pause after them."""
    vol = open_volume(upload_delay=0.6, upload_delay_max=30)
    t_end = time.monotonic() + 1.5
    i = 0
    while time.monotonic() < t_end:
        vol.write_file(f"/f{i}", os.urandom(100))
        i += 1
        time.sleep(0.05)
        assert vol.cache.stats["uploads"] == 0, f"an upload during the writes (file {i})"
    deadline = time.monotonic() + 10
    while vol.cache.queue_length() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert vol.cache.queue_length() == 0 and vol.cache.stats["uploads"] == i


def test_touch_holds_uploads_back_as_new_blocks_do(open_volume):
    vol = open_volume(upload_delay=0.5)
    vol.write_file("/f", os.urandom(100))
    for _ in range(15):                # a face keeps reporting requests for 1.5 s
        vol.cache.touch()
        time.sleep(0.1)
        assert vol.cache.stats["uploads"] == 0
    time.sleep(1.5)
    assert vol.cache.stats["uploads"] == 1


def test_no_block_waits_longer_than_upload_delay_max(open_volume):
    vol = open_volume(upload_delay=1, upload_delay_max=1.5)
    vol.write_file("/f", os.urandom(100))
    t0 = time.monotonic()
    while vol.cache.stats["uploads"] == 0 and time.monotonic() - t0 < 10:
        vol.cache.touch()              # never a pause
        time.sleep(0.05)
    assert vol.cache.stats["uploads"] == 1 and 1.3 < time.monotonic() - t0 < 3


def test_wait_uploaded_and_a_full_cache_skip_the_delay(open_volume):
    vol = open_volume(upload_delay=60, upload_delay_max=600)
    vol.write_file("/f", os.urandom(100))
    t0 = time.monotonic()
    assert vol.cache.wait_uploaded(10) and time.monotonic() - t0 < 5
    vol2 = open_volume("data2", store_url=None, upload_delay=60, upload_delay_max=600,
                       dirty_limit=4 * (BS + 64))
    vol2.write_file("/big", os.urandom(3 * BS))          # half the dirty limit: no waiting
    t0 = time.monotonic()
    while vol2.cache.queue_length() and time.monotonic() - t0 < 10:
        time.sleep(0.05)
    assert vol2.cache.queue_length() == 0
