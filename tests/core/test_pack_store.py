"""Packs wired in: small blocks travel to the bucket together, are read back with ranged
GETs, are collected and repacked, survive crashes, and come back with ``restore``; fsck
checks and repairs them; a volume written before packs keeps working."""

import os
import sqlite3
import time

import pytest

from razordav.core import packs
from razordav.core.journal import restore
from razordav.core.volume import Volume
from razordav.store.local import LocalStore

from .conftest import BS, old_volume, store_objects
from .test_cache import _crash


class CountingStore(LocalStore):
    """The local store, counting requests per kind, with a switch that fails pack PUTs."""

    def __init__(self, root):
        super().__init__(root)
        self.calls: list[tuple[str, str, int | None]] = []
        self.fail_packs = False

    def get(self, key, offset=0, length=None):
        self.calls.append(("get", key, length))
        return super().get(key, offset, length)

    def put(self, key, data, **kw):
        if self.fail_packs and key.startswith(packs.PREFIX):
            raise OSError("endpoint unreachable")
        self.calls.append(("put", key, len(data)))
        return super().put(key, data, **kw)


def small_files(n, size=3000):
    return {f"/s/{i:03}.txt": os.urandom(size) for i in range(n)}


def write_all(vol, files):
    vol.mkdir("/s")
    for path, data in files.items():
        vol.write_file(path, data)


def packed_names(vol) -> set[bytes]:
    return {r[0] for r in vol.tree.db.reader().execute("SELECT hash FROM packed")}


def bucket_packs(vol) -> list[str]:
    return [o.key for o in vol.store.list(packs.PREFIX)]


def wipe_cache(tmp_path, data_dir="data"):
    """Reopen cold: the local block cache gone, the metadata kept."""
    import shutil
    shutil.rmtree(tmp_path / data_dir / "cache")


def test_small_blocks_go_in_one_pack_and_big_ones_alone(open_volume):
    vol = open_volume(pack_threshold=8 << 10)
    files = small_files(20)
    write_all(vol, files)
    vol.write_file("/big", os.urandom(BS))           # one 16 KiB block: over the threshold
    assert vol.cache.wait_uploaded(10)
    assert len(bucket_packs(vol)) == 1
    assert len(store_objects(vol)) == 1              # the big block, as its own object
    assert len(packed_names(vol)) == 20
    (pack_id, size), = vol.packs.packs().items()
    entries = packs.index_of(vol.store, packs.pack_key(pack_id))
    assert {e.name for e in entries} == packed_names(vol)
    assert size == sum(e.length for e in entries)
    for path, data in files.items():
        assert vol.read_file(path) == data


def test_a_partial_pack_waits_for_upload_delay_max_a_full_one_goes_at_once(open_volume):
    vol = open_volume(upload_delay=0, upload_delay_max=1.5, pack_size=64 << 10)
    write_all(vol, small_files(3))                   # 9 KB: far from a full pack
    time.sleep(0.5)
    assert bucket_packs(vol) == [] and vol.cache.dirty_bytes > 0
    deadline = time.monotonic() + 10
    while vol.cache.dirty_bytes and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(bucket_packs(vol)) == 1 and vol.cache.dirty_bytes == 0
    for i in range(25):                              # 75 KB: a full pack without waiting
        vol.write_file(f"/s/more-{i}", os.urandom(3000))
    deadline = time.monotonic() + 1.0
    while len(bucket_packs(vol)) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(bucket_packs(vol)) >= 2


def _cold(open_volume, tmp_path, n):
    """A volume whose ``n`` small files are in a pack, reopened with its cache gone; the
    store counting requests from then on."""
    store = CountingStore(tmp_path / "store")
    vol = open_volume(store=store)
    files = small_files(n)
    write_all(vol, files)
    assert vol.cache.wait_uploaded(10)
    vol.close()
    wipe_cache(tmp_path)
    store.calls.clear()
    return open_volume(store=store), store, files


def test_cold_reads_fetch_only_the_block_with_a_ranged_get(open_volume, tmp_path):
    vol, store, files = _cold(open_volume, tmp_path, 30)
    path = "/s/007.txt"
    assert vol.read_file(path) == files[path]
    gets = [c for c in store.calls if c[0] == "get" and c[1].startswith(packs.PREFIX)]
    assert len(gets) == 1 and gets[0][2] < 3100      # one block's bytes, not the pack
    assert vol.cache.stats["fetched_bytes"] < 3100


def test_reading_small_files_in_written_order_reads_ahead_in_the_pack(open_volume,
                                                                      tmp_path):
    vol, store, files = _cold(open_volume, tmp_path, 100)
    for path, data in files.items():                 # as a copy or a backup would
        assert vol.read_file(path) == data
    gets = [c for c in store.calls if c[0] == "get" and c[1].startswith(packs.PREFIX)]
    assert len(gets) <= 5                            # 300 KB in runs of up to 1 MiB
    assert vol.cache.stats["readahead_blocks"] >= 95
    assert vol.cache.stats["fetched_bytes"] < sum(map(len, files.values())) + 100 * 64


def test_dedup_holds_across_packs_and_single_objects(open_volume):
    vol = open_volume(pack_threshold=8 << 10)
    small, big = os.urandom(2000), os.urandom(BS)
    vol.write_file("/a", small + b"")
    vol.write_file("/b", big)
    vol.write_file("/c", os.urandom(500))            # a second small block: a pack of two
    assert vol.cache.wait_uploaded(10)
    puts = vol.cache.stats["uploads"]
    vol.write_file("/a2", small)                     # same content as a packed block
    vol.write_file("/b2", big)                       # same as a single object
    assert vol.cache.wait_uploaded(10)
    assert vol.cache.stats["uploads"] == puts
    assert vol.read_file("/a2") == small and vol.read_file("/b2") == big


def test_gc_repacks_a_sparse_pack_and_deletes_the_old_one_after_shipping(open_volume,
                                                                          tmp_path):
    store = CountingStore(tmp_path / "store")
    vol = open_volume(store=store, repack_share=1.0)
    files = small_files(10)
    write_all(vol, files)
    vol.collect_garbage()
    old, = vol.packs.packs()
    for path in list(files)[:7]:
        vol.unlink(path)
        del files[path]
    vol.cache.wait_uploaded(10)
    # One round: the unlinks ship, GC drops the 7 blocks, the repacker rewrites the pack.
    assert vol.shipper.run_once()
    new = set(vol.packs.packs())
    assert old not in new and len(new) == 1
    # Not deleted before the switch itself is shipped.
    assert store.exists(packs.pack_key(old))
    assert vol.shipper.run_once() and vol.shipper.pending() == 0
    assert not store.exists(packs.pack_key(old))
    assert vol.repacker.stats["packs_rewritten"] == 1
    vol.close()
    wipe_cache(tmp_path)
    vol = open_volume(store=store)
    for path, data in files.items():
        assert vol.read_file(path) == data
    assert vol.fsck().clean


def test_a_pack_nothing_uses_is_deleted(open_volume):
    vol = open_volume()
    files = small_files(5)
    write_all(vol, files)
    vol.collect_garbage()
    assert len(bucket_packs(vol)) == 1
    for path in files:
        vol.unlink(path)
    assert vol.collect_garbage() == 5
    assert bucket_packs(vol) == [] and vol.packs.packs() == {}


def test_repacking_is_paced_to_its_share(open_volume):
    vol = open_volume(repack_share=0.01)
    write_all(vol, small_files(20))
    vol.collect_garbage()
    for i in range(15):
        vol.unlink(f"/s/{i:03}.txt")
    vol.collect_garbage()
    assert vol.repacker.stats["packs_rewritten"] == 1
    spent = vol.repacker.stats["repack_seconds"]
    assert vol.repacker._next - time.monotonic() > spent * 50   # 1 % of the time, at most
    write_all_more = small_files(10)
    for path, data in write_all_more.items():
        vol.write_file(path.replace("/s/", "/s/x"), data)
    vol.collect_garbage()
    for path in write_all_more:
        vol.unlink(path.replace("/s/", "/s/x"))
    vol.collect_garbage()
    assert vol.repacker.stats["packs_rewritten"] == 1           # the next one waits its turn


def test_a_failed_pack_upload_loses_nothing_and_a_crash_then_too(open_volume, tmp_path):
    store = CountingStore(tmp_path / "store")
    vol = open_volume(store=store, upload_delay=0, upload_delay_max=0.2)
    store.fail_packs = True
    files = small_files(6)
    write_all(vol, files)
    time.sleep(1.0)
    assert vol.cache.stats["upload_errors"] >= 1 and vol.cache.dirty_bytes > 0
    assert vol.shipper.run_once() is False or vol.shipper.pending() > 0  # rows wait
    _crash(vol)                                      # kill -9 with the pack never uploaded
    store.fail_packs = False
    vol = open_volume(store=store)
    assert vol.cache.wait_uploaded(10)
    for path, data in files.items():
        assert vol.read_file(path) == data
    assert vol.fsck().clean


def test_a_crash_between_pack_upload_and_its_rows_leaves_an_orphan_fsck_removes(
        open_volume, tmp_path, monkeypatch):
    store = CountingStore(tmp_path / "store")
    vol = open_volume(store=store)
    files = small_files(6)
    write_all(vol, files)

    def crash(*a, **kw):
        raise OSError("killed before the commit")
    monkeypatch.setattr(vol.packs, "record", crash)
    vol.cache.wait_uploaded(2)                       # the pack reaches the bucket, no rows
    assert len(bucket_packs(vol)) >= 1 and vol.cache.dirty_bytes > 0
    _crash(vol)
    monkeypatch.undo()
    vol = open_volume(store=store)
    assert vol.cache.wait_uploaded(10)
    for path, data in files.items():
        assert vol.read_file(path) == data
    report = vol.fsck()
    assert any("packs in the store belong to no file" in p for p in report.problems)
    report = vol.fsck(repair=True)
    assert any("deleted" in r and "orphaned packs" in r for r in report.repaired)
    assert vol.fsck().clean and len(bucket_packs(vol)) == 1


def test_restore_brings_back_a_volume_in_packs(open_volume, tmp_path):
    vol = open_volume()
    files = small_files(40)
    write_all(vol, files)
    vol.write_file("/big", os.urandom(5 * BS))
    vol.collect_garbage()
    vol.shipper.snapshot()
    vol.write_file("/s/late.txt", b"after the snapshot")
    files["/s/late.txt"] = b"after the snapshot"
    vol.collect_garbage()
    vol.close()
    (tmp_path / "r").mkdir()
    restore(LocalStore(tmp_path / "store"), tmp_path / "r" / "meta.db")
    again = open_volume("r")
    for path, data in files.items():
        assert again.read_file(path) == data
    assert again.fsck().clean


def test_restore_locates_blocks_whose_pack_rows_the_journal_lacks(open_volume, tmp_path):
    """A journal cut between a block's row and its pack's rows (then the gateway lost):
    restore finds the blocks in the pack's own index."""
    vol = open_volume()
    files = small_files(8)
    write_all(vol, files)
    assert vol.cache.wait_uploaded(10)
    with vol.tree.db.write() as c:                   # the segment with these never shipped
        c.execute("""DELETE FROM journal WHERE op LIKE '["packs",%' OR op LIKE '["packed",%'""")
    vol.collect_garbage()
    vol.close()
    (tmp_path / "r").mkdir()
    restore(LocalStore(tmp_path / "store"), tmp_path / "r" / "meta.db")
    again = open_volume("r")
    assert len(packed_names(again)) == 8
    for path, data in files.items():
        assert again.read_file(path) == data


def _one_pack(vol, tmp_path, n):
    """``n`` small files uploaded in one pack: the files, the pack's id and its file in
    the local store."""
    files = small_files(n)
    write_all(vol, files)
    vol.collect_garbage()
    (pack_id, _size), = vol.packs.packs().items()
    return files, pack_id, tmp_path / "store" / packs.pack_key(pack_id)


def test_fsck_rebuilds_a_damaged_pack_index(open_volume, tmp_path):
    vol = open_volume()
    _files, pack_id, path = _one_pack(vol, tmp_path, 6)
    data = bytearray(path.read_bytes())
    data[-packs.TRAILER.size - 5] ^= 0xFF            # inside the index
    path.write_bytes(bytes(data))
    report = vol.fsck()
    assert any(f"index of pack {pack_id}" in p for p in report.problems)
    report = vol.fsck(repair=True)
    assert any("rebuilt the index" in r for r in report.repaired)
    assert vol.fsck(full=True).clean
    assert len(packs.index_of(vol.store, packs.pack_key(pack_id))) == 6


def test_fsck_reports_a_missing_pack_and_reuploads_what_the_cache_has(open_volume, tmp_path):
    vol = open_volume()
    files, pack_id, path = _one_pack(vol, tmp_path, 4)
    os.unlink(path)
    report = vol.fsck()
    assert any(f"pack {pack_id} is missing" in p for p in report.problems)
    report = vol.fsck(repair=True)
    assert sum("uploaded block" in r for r in report.repaired) == 4
    vol.close()
    wipe_cache(tmp_path)
    vol = open_volume()
    for path, data in files.items():
        assert vol.read_file(path) == data      # from their own objects now


def test_fsck_full_finds_a_corrupt_block_inside_a_pack(open_volume, tmp_path):
    vol = open_volume()
    _files, pack_id, path = _one_pack(vol, tmp_path, 3)
    data = bytearray(path.read_bytes())
    data[100] ^= 0xFF                                # inside the first block
    path.write_bytes(bytes(data))
    assert vol.fsck().clean                          # the index is fine
    report = vol.fsck(full=True)
    assert any(f"is corrupt in pack {pack_id}" in p for p in report.problems)


def test_an_aborted_write_leaves_no_pack_location(open_volume, monkeypatch):
    vol = open_volume()
    write_all(vol, small_files(2))
    w = vol.open_write("/s/aborted")
    w.write(os.urandom(3000))
    w.write(os.urandom(3000))
    vol.cache.wait_uploaded(10)                      # its blocks packed before the abort
    w.abort()
    assert {r[0] for r in vol.tree.db.reader().execute(
        "SELECT p.hash FROM packed p LEFT JOIN blocks b ON b.hash = p.hash "
        "WHERE b.hash IS NULL")} == set()


# -- a volume written by the previous main (7cf5a1f, before packs) --

OLD = {"/docs/a.txt": b"alpha " * 5000, "/big.bin": bytes(range(256)) * 1000,
       "/after-snapshot.txt": b"later " * 100,
       **{f"/pending-{i}.txt": f"pending {i} ".encode() * 300 for i in range(5)}}


def _old_volume(tmp_path):
    return old_volume(tmp_path, "volume-7cf5a1f.tar.gz")


def test_volume_of_the_previous_main_opens_packs_its_pending_blocks_and_restores(tmp_path):
    """Its data dir (crashed with small blocks waiting in the database, rows unshipped)
    opens; the waiting blocks go up in a pack; the bucket (a format-1 snapshot, format-2
    segments, then format-3 ones) restores with every file readable from a cold cache."""
    old = _old_volume(tmp_path)
    url = (old / "store").as_uri()
    vol = Volume.open(old / "data", store_url=url, journal_interval=0)
    for path, data in OLD.items():
        assert vol.read_file(path) == data
    assert vol.cache.wait_uploaded(10)
    assert len(packed_names(vol)) == 5               # the five pending blocks, in one pack
    vol.write_file("/new.txt", b"new " * 100)
    vol.collect_garbage()
    assert vol.fsck().clean
    vol.close()
    store = LocalStore(old / "store")
    # The old blocks stay where they were; /new.txt's lone block went alone (a pack of one
    # would cost the same request).
    assert len(list(store.list("blocks/"))) == 5
    want = {**OLD, "/new.txt": b"new " * 100}
    again = _restored(tmp_path / "r1", store, url, want)  # old snapshot, old + new segments
    again.shipper.snapshot()                         # a snapshot of the new format
    again.close()
    _restored(tmp_path / "r2", store, url, want).close()


def _restored(r, store, url, want):
    r.mkdir()
    restore(store, r / "meta.db")
    again = Volume.open(r, store_url=url, journal_interval=0)
    for path, data in want.items():
        assert again.read_file(path) == data
    return again


def test_an_older_razordav_refuses_a_new_snapshot_clearly(tmp_path):
    from razordav.core import errors, journal
    store = LocalStore(tmp_path / "store")
    store.put(journal.snapshot_key(5, 1), b"RZSNAP9\n" + b"x")
    with pytest.raises(errors.Corrupt, match="newer than this razordav"):
        restore(store, tmp_path / "meta.db")


def test_pack_rows_do_not_reach_a_database_without_the_tables(tmp_path):
    """The new tables exist in a database the previous main created (opened above);
    a direct look that they are created on open."""
    old = _old_volume(tmp_path)
    names = {r[0] for r in sqlite3.connect(old / "data" / "meta.db").execute(
        "SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert "packs" not in names
    vol = Volume.open(old / "data", store_url=(old / "store").as_uri(), journal_interval=0)
    vol.close()
    names = {r[0] for r in sqlite3.connect(old / "data" / "meta.db").execute(
        "SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {"packs", "packed", "pack_check", "pack_trash"} <= names


# -- crashes during a repack, and a repack under concurrent reads and writes --

def _sparse_volume(open_volume, store, **kw):
    vol = open_volume(store=store, repack_share=1.0, **kw)
    files = small_files(10)
    write_all(vol, files)
    vol.collect_garbage()
    for path in list(files)[:7]:
        vol.unlink(path)
        del files[path]
    return vol, files


def _restore_and_read(tmp_path, name, files):
    (tmp_path / name).mkdir()
    restore(LocalStore(tmp_path / "store"), tmp_path / name / "meta.db")
    vol = Volume.open(tmp_path / name, store_url=(tmp_path / "store").as_uri(),
                      journal_interval=0, block_size=BS)
    try:
        for path, data in files.items():
            assert vol.read_file(path) == data
        assert vol.fsck().clean
    finally:
        vol.close()


def test_a_crash_after_the_new_pack_before_the_switch(open_volume, tmp_path):
    store = CountingStore(tmp_path / "store")
    vol, files = _sparse_volume(open_volume, store)
    real_put = store.put

    def put_then_die(key, data, **kw):
        real_put(key, data, **kw)
        if key.startswith(packs.PREFIX):
            raise KeyboardInterrupt("killed after the new pack's upload")
    store.put = put_then_die
    with pytest.raises(KeyboardInterrupt):
        vol.shipper.run_once()
    _crash(vol)
    store.put = real_put
    vol = open_volume(store=store)
    for path, data in files.items():
        assert vol.read_file(path) == data
    report = vol.fsck(repair=True)          # the new pack nobody names: an orphan
    assert any("orphaned packs" in r for r in report.repaired)
    assert vol.fsck().clean
    vol.close()
    _restore_and_read(tmp_path, "r", files)


def test_a_crash_after_the_switch_before_the_old_pack_goes(open_volume, tmp_path):
    store = CountingStore(tmp_path / "store")
    vol, files = _sparse_volume(open_volume, store)
    old, = vol.packs.packs()
    vol.shipper.run_once()                  # rewritten; the old pack waits in the trash
    assert store.exists(packs.pack_key(old)) and old not in vol.packs.packs()
    _crash(vol)
    vol = open_volume(store=store)
    for path, data in files.items():
        assert vol.read_file(path) == data
    vol.collect_garbage()
    assert not store.exists(packs.pack_key(old))
    assert vol.fsck().clean
    vol.close()
    _restore_and_read(tmp_path, "r", files)


def test_a_crash_with_an_open_pack_then_restore(open_volume, tmp_path):
    vol = open_volume(upload_paused=True)
    files = small_files(12)
    write_all(vol, files)                   # acknowledged, waiting in the open pack
    _crash(vol)
    vol = open_volume()
    assert vol.cache.wait_uploaded(10)
    assert len(packed_names(vol)) == 12
    vol.close()
    _restore_and_read(tmp_path, "r", files)


def test_repack_under_concurrent_reads_and_writes(open_volume, tmp_path):
    """Readers with a tiny cache (so reads go to the packs), a writer rewriting and
    deleting files, and rounds rewriting packs over and over: every read returns a whole
    version that was written, and at the end every file has its last content."""
    import random
    import threading
    vol = open_volume(cache_size=4 * BS, dirty_limit=1 << 30, repack_below=0.95,
                      repack_share=1.0, pack_size=32 << 10)
    rng = random.Random(7)
    versions: dict[str, list[bytes]] = {}
    current: dict[str, bytes] = {}
    lock = threading.Lock()
    vol.mkdir("/s")
    for i in range(30):
        data = os.urandom(rng.randint(500, 6000))
        vol.write_file(f"/s/{i}", data)
        versions[f"/s/{i}"] = [data]
        current[f"/s/{i}"] = data
    vol.collect_garbage()
    stop = threading.Event()
    failures = []

    def reader():
        r = random.Random(threading.get_ident())
        while not stop.is_set():
            path = f"/s/{r.randrange(30)}"
            try:
                data = vol.read_file(path)
            except FileNotFoundError:
                continue
            except Exception as exc:   # noqa: BLE001 - any error is a failure here
                if type(exc).__name__ == "NotFound":
                    continue
                failures.append(f"{path}: {exc!r}")
                return
            with lock:
                if data not in versions[path]:
                    failures.append(f"{path}: a torn or unknown version")
                    return

    def writer():
        r = random.Random(3)
        while not stop.is_set():
            path = f"/s/{r.randrange(30)}"
            data = os.urandom(r.randint(500, 6000))
            with lock:
                versions[path].append(data)
            vol.write_file(path, data)
            with lock:
                current[path] = data
            time.sleep(0.005)

    threads = [threading.Thread(target=reader) for _ in range(3)] + \
        [threading.Thread(target=writer)]
    for t in threads:
        t.start()
    try:
        deadline = time.monotonic() + 8
        while time.monotonic() < deadline and not failures:
            vol.cache.wait_uploaded(5)
            vol.shipper.run_once()
    finally:
        stop.set()
        for t in threads:
            t.join(30)
    assert failures == []
    assert vol.repacker.stats["packs_rewritten"] >= 3
    vol.collect_garbage()
    for path, data in current.items():
        assert vol.read_file(path) == data
    assert vol.fsck(full=True).clean


def test_an_aborted_write_does_not_wait_for_its_blocks_upload(open_volume, tmp_path):
    """Its blocks in a pack upload under way are left to it (an abort must not wait for a
    store that may be retrying); their rows are garbage that a rewrite of the pack drops,
    with their cached copies, and the same content written later is stored again."""
    import threading
    store = CountingStore(tmp_path / "store")
    vol = open_volume(store=store, repack_share=1.0)
    gate = threading.Event()
    real_put = store.put

    def slow_put(key, data, **kw):
        if key.startswith(packs.PREFIX):
            gate.wait(10)
        return real_put(key, data, **kw)
    store.put = slow_put
    content = os.urandom(3 * BS)
    w = vol.open_write("/aborted")
    w.write(content)
    w.write(b"x")                                   # three full blocks stored, one buffered
    drain = threading.Thread(target=vol.cache.wait_uploaded, args=(20,))
    drain.start()
    deadline = time.monotonic() + 5
    while not vol.cache._uploading and time.monotonic() < deadline:
        time.sleep(0.01)
    t = time.monotonic()
    w.abort()
    assert time.monotonic() - t < 1.0               # did not wait for the upload
    gate.set()
    drain.join(20)
    # Once uploaded, they are dropped from the cache and from the pack's rows; the pack
    # holds garbage only and goes on the repacker's list.
    c = vol.tree.db.reader()
    deadline = time.monotonic() + 5                  # handed back just after the upload
    while c.execute("SELECT COUNT(*) FROM packed").fetchone() != (0,) and \
            time.monotonic() < deadline:
        time.sleep(0.02)
    assert c.execute("SELECT COUNT(*) FROM packed").fetchone() == (0,)
    assert c.execute("SELECT COUNT(*) FROM pack_check").fetchone() == (1,)
    assert vol.cache.dirty_bytes == 0 and len(vol.cache.names()) == 0
    vol.collect_garbage()
    assert vol.packs.packs() == {} and bucket_packs(vol) == []
    vol.write_file("/again", content)
    assert vol.cache.wait_uploaded(10)
    vol.close()
    wipe_cache(tmp_path)
    vol = open_volume(store=store)
    assert vol.read_file("/again") == content


def test_a_crash_between_a_packs_rows_and_its_clean_marks_uploads_nothing_twice(
        open_volume, tmp_path):
    store = CountingStore(tmp_path / "store")
    vol = open_volume(store=store, upload_paused=True)
    files = small_files(5)
    write_all(vol, files)
    vol.cache._mark_clean = lambda done: None        # killed right after PackMap.record
    vol.cache.pause_uploads(False)
    vol.cache.wait_uploaded(2)
    assert len(bucket_packs(vol)) == 1
    _crash(vol)
    vol = open_volume(store=store)
    assert vol.cache.wait_uploaded(10) and vol.cache.dirty_bytes == 0
    vol.collect_garbage()
    assert len(bucket_packs(vol)) == 1 and len(vol.packs.packs()) == 1
    assert vol.fsck().clean
    for path, data in files.items():
        assert vol.read_file(path) == data
