"""The block cache: eviction never drops dirty blocks, the upload queue survives a restart,
the dirty limit turns into NoSpace, and a failing store keeps blocks queued."""

import os
import time

import pytest

from razordav.core import errors
from razordav.store import ObjectStore
from razordav.store.local import LocalStore

from .conftest import BS, store_objects


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
    vol._pool.shutdown()
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
    first = vol.tree.extents(ino)[0].hex()             # a block of the data, not the tail
    assert vol.cache._entries[first].plain == (kind == "random")
    assert vol.cache.stats["hits"] > reads_before


def test_a_damaged_cache_file_is_found_on_its_first_read(open_volume):
    vol = open_volume()
    data = os.urandom(BS)
    vol.write_file("/f", data)
    assert vol.cache.wait_uploaded(30)
    name = next(iter(vol.tree.extents(vol.stat("/f").ino).values()))
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
    vol = open_volume(upload_paused=True)
    files = OpenFiles(vol)
    try:
        ino = vol.tree.create(1, "f").ino
        with vol.tree.deferred_sync():
            files.open(ino)
            files.write(ino, 0, os.urandom(BS + 10))
            files.close(ino)                            # committed, not flushed
        assert vol.read_file("/f") and len(vol.cache._unsynced) == 2
        flushed = []
        real = vol.cache._flush
        vol.cache._flush = lambda: flushed.append(len(vol.cache._unsynced)) or real()
        vol.tree.set_meta("probe", "1")                 # any durable commit flushes first
        assert flushed == [2] and vol.cache._unsynced == set()
        with vol.tree.deferred_sync():
            files.open(ino)
            files.write(ino, 0, os.urandom(100))
            files.close(ino)
        assert len(vol.cache._unsynced) == 1
        vol.tree.sync()                                 # fsync / fsyncdir of the mount
        assert flushed == [2, 1] and vol.cache._unsynced == set()
    finally:
        files.close_all()
        vol.cache.pause_uploads(False)
