"""Small blocks wait for upload in the metadata database (``cache_blocks``), committed ahead
of the commit that names them, so one flush of the log makes a small write durable. Then
they move to cache files; GC, eviction, dedup, restarts and snapshots know them."""

import functools
import os
import sqlite3

import pytest

from razordav.core import cache as cache_mod
from razordav.core.blocks import block_key

from .conftest import BS, store_objects
from .test_cache import _crash


@pytest.fixture
def open_volume(open_volume):
    """Blocks upload one object each here (the uploader's queue, delays and crashes);
    packs have their own tests in test_pack_store.py."""
    return functools.partial(open_volume, pack_threshold=0)


def rows(vol) -> set[bytes]:
    return {r[0] for r in vol.tree.db.reader().execute("SELECT hash FROM cache_blocks")}


def block_files(vol) -> set[str]:
    return {p.name for p in (vol.cache.dir / "blocks").rglob("*") if p.is_file()}


def names_of(vol, path) -> list[bytes]:
    return list(vol.extents.extents(vol.stat(path).ino).values())


def test_a_small_write_stores_its_block_with_the_metadata_and_flushes_no_file(
        open_volume, monkeypatch):
    vol = open_volume(upload_paused=True)
    vol.write_file("/warm", os.urandom(100))
    flushed = []
    real_fsync, real_path = os.fsync, cache_mod.fsync_path
    monkeypatch.setattr(os, "fsync", lambda fd: flushed.append(fd) or real_fsync(fd))
    monkeypatch.setattr(cache_mod, "fsync_path", lambda p: flushed.append(p) or real_path(p))
    data = os.urandom(4096)
    vol.write_file("/f", data)
    assert flushed == []                        # only SQLite's flush of its log
    name = names_of(vol, "/f")[0]
    assert name in rows(vol) and name.hex() not in block_files(vol)
    assert vol.cache.dirty_names() == [name] or name in vol.cache.dirty_names()
    fig = vol.cache.figures()
    assert fig["cache_db_blocks"] == 2 and fig["cache_db_bytes"] == vol.cache.dirty_bytes
    vol.cache._hot.clear()
    assert vol.read_file("/f") == data
    with vol.open_read("/f") as r:
        assert r.pread(100, 50) == data[100:150]


def test_after_upload_a_small_block_moves_to_a_file(open_volume):
    vol = open_volume()
    data = os.urandom(BS + 100)                 # two blocks, both small
    vol.write_file("/f", data)
    assert vol.cache.wait_uploaded(30)
    names = names_of(vol, "/f")
    assert rows(vol) == set() and {n.hex() for n in names} <= block_files(vol)
    assert vol.cache.figures()["cache_db_blocks"] == 0
    assert {o.key for o in store_objects(vol)} >= {block_key(n) for n in names}
    vol.cache._hot.clear()
    assert vol.read_file("/f") == data


def test_a_crash_before_upload_loses_nothing_acknowledged(open_volume):
    vol = open_volume(upload_paused=True)
    data = {f"/f{i}": os.urandom(100 + i) for i in range(3)}
    for path, body in data.items():
        vol.write_file(path, body)
    w = vol.open_write("/never")
    w.write(os.urandom(BS))                    # a whole block: stored at once
    w._storer._reap(block=True)                 # stored, never committed
    assert len(rows(vol)) == 4
    _crash(vol)

    vol2 = open_volume(upload_paused=True)
    assert len(rows(vol2)) == 3 and len(vol2.cache.dirty_names()) == 3   # stray one dropped
    for path, body in data.items():
        assert vol2.read_file(path) == body
    vol2.cache.pause_uploads(False)
    assert vol2.cache.wait_uploaded(30)
    assert len(store_objects(vol2)) == 3 and rows(vol2) == set()
    vol2.cache._hot.clear()
    for path, body in data.items():
        assert vol2.read_file(path) == body


def test_a_move_cut_short_keeps_the_row(open_volume):
    """A crash between writing the file and deleting the row leaves both: the row wins."""
    vol = open_volume(upload_paused=True)
    vol.write_file("/f", b"moved halfway")
    name = names_of(vol, "/f")[0]
    vol.cache._write_file(name.hex(), (b"half",), fsync=True)
    _crash(vol)
    vol2 = open_volume()
    assert name in rows(vol2) or vol2.cache.wait_uploaded(30)
    assert vol2.read_file("/f") == b"moved halfway"
    assert vol2.cache.wait_uploaded(30) and rows(vol2) == set()
    vol2.cache._hot.clear()
    assert vol2.read_file("/f") == b"moved halfway"


def test_garbage_in_the_database_is_collected(open_volume):
    vol = open_volume(upload_paused=True)
    vol.write_file("/gone", os.urandom(300))
    vol.write_file("/kept", os.urandom(300))
    gone = names_of(vol, "/gone")[0]
    vol.unlink("/gone")
    vol.cache.pause_uploads(False)
    assert vol.collect_garbage() == 1
    assert gone not in rows(vol) and gone.hex() not in block_files(vol)
    assert block_key(gone) not in {o.key for o in store_objects(vol)}
    kept = names_of(vol, "/kept")[0]
    vol.unlink("/kept")                         # uploaded and moved: collected from its file
    assert vol.collect_garbage() == 1
    assert kept.hex() not in block_files(vol) and store_objects(vol) == []


def test_an_abandoned_write_leaves_no_row(open_volume):
    vol = open_volume(upload_paused=True)
    w = vol.open_write("/f")
    w.write(os.urandom(BS))
    w._storer._reap(block=True)
    assert len(rows(vol)) == 1
    w._storer.abandon()
    assert rows(vol) == set() and vol.cache.dirty_bytes == 0


def test_equal_small_blocks_are_stored_once(open_volume):
    vol = open_volume(upload_paused=True)
    data = os.urandom(1000)
    vol.write_file("/a", data)
    vol.write_file("/b", data)                  # dedup against the row
    assert len(rows(vol)) == 1
    assert vol.extents.block_refs(names_of(vol, "/a")[0]) == 2
    vol.cache.pause_uploads(False)
    assert vol.cache.wait_uploaded(30)
    vol.write_file("/c", data)                  # dedup against the file
    assert rows(vol) == set() and vol.read_file("/c") == data


def test_a_row_dedups_against_a_block_already_in_a_file(open_volume):
    vol = open_volume(upload_paused=True, small_block=0)
    data = os.urandom(1000)
    vol.write_file("/a", data)
    _crash(vol)
    vol2 = open_volume(upload_paused=True)      # now small blocks go to the database
    vol2.write_file("/b", data)
    assert rows(vol2) == set() and vol2.read_file("/b") == data
    assert vol2.extents.block_refs(names_of(vol2, "/b")[0]) == 2


def test_clean_blocks_in_the_database_are_evicted(open_volume, monkeypatch):
    """A block whose move to a file failed stays in the database, clean, until evicted."""
    vol = open_volume(cache_size=4 * BS)
    monkeypatch.setattr(vol.cache, "_to_file", lambda hexname, data: False)
    vol.write_file("/f", os.urandom(BS))
    assert vol.cache.wait_uploaded(30)
    name = names_of(vol, "/f")[0]
    assert name in rows(vol) and name not in vol.cache.dirty_names()
    monkeypatch.undo()
    for i in range(8):
        vol.write_file(f"/g{i}", os.urandom(BS))
    assert vol.cache.wait_uploaded(30)
    vol.write_file("/trigger", os.urandom(100))
    assert name not in rows(vol) and not vol.cache.contains(name)
    vol.cache._hot.clear()
    assert len(vol.read_file("/f")) == BS       # fetched from the store


def test_the_upload_queue_includes_rows_and_segments_wait_for_them(open_volume):
    vol = open_volume(upload_paused=True)
    vol.write_file("/f", b"small")
    assert vol.shipper.run_once() is False      # its block is dirty: the segment waits
    vol.cache.pause_uploads(False)
    assert vol.cache.wait_uploaded(30)
    assert vol.shipper.run_once() is True


def test_snapshots_carry_no_cached_blocks(open_volume, tmp_path):
    from razordav.core.journal import restore
    vol = open_volume(upload_paused=True)
    vol.write_file("/f", b"in the snapshot as metadata only")
    vol.cache.pause_uploads(False)
    assert vol.cache.wait_uploaded(30)
    vol.shipper.run_once()
    with vol.tree.db.write() as c:             # as if the move had not happened yet
        c.execute("INSERT INTO cache_blocks VALUES (?, 0, ?)", (b"x" * 32, b"bytes"))
    vol.shipper.snapshot()
    with vol.tree.db.write() as c:
        c.execute("DELETE FROM cache_blocks")
    restore(vol.store, tmp_path / "restored.db")
    db = sqlite3.connect(tmp_path / "restored.db")
    assert db.execute("SELECT COUNT(*) FROM cache_blocks").fetchone()[0] == 0
    db.close()


def test_deferred_commits_put_small_blocks_in_the_log_before_their_metadata(open_volume):
    """The FUSE face: a small block's row is a deferred commit, earlier in the log than the
    commit naming it; nothing is left for ``make_durable`` to flush."""
    from razordav.core.handles import OpenFiles
    vol = open_volume(upload_paused=True)
    files = OpenFiles(vol)
    try:
        ino = vol.tree.create(1, "f").ino
        with vol.tree.db.deferred_sync():
            files.open(ino)
            files.write(ino, 0, b"x" * 5000)
            files.close(ino)
        assert vol.cache._unsynced == set() and len(rows(vol)) == 1
        assert vol.read_file("/f") == b"x" * 5000
    finally:
        files.close_all()
        vol.cache.pause_uploads(False)


def test_a_new_file_is_published_in_few_rows_blocks_before_extents(open_volume):
    """A PUT of a new file inserts its inode with its content (no second update), and the
    journal names each block before any extent that uses it: a segment cut before a block
    still waiting for upload then carries no extent naming it."""
    vol = open_volume(upload_paused=True)
    vol.mkdir("/d")
    (last,) = vol.tree.db.reader().execute("SELECT MAX(seq) FROM journal").fetchone()
    data = os.urandom(BS) * 2 + b"tail"          # the same block twice, and a short one
    vol.write_file("/d/f", data)
    ops = [op for (op,) in vol.tree.db.reader().execute(
        "SELECT op FROM journal WHERE seq > ? ORDER BY seq", (last,))]
    tables = [op.split('"')[1] for op in ops]
    assert tables.count("inodes") == 2            # the new inode, the parent's times
    first_extent = tables.index("extents")
    assert tables.count("blocks") == 2 and all(
        i < first_extent for i, t in enumerate(tables) if t == "blocks")
    name = names_of(vol, "/d/f")[0]
    assert vol.extents.block_refs(name) == 2 and vol.read_file("/d/f") == data
    attr = vol.stat("/d/f")
    assert attr.size == len(data) and attr.etag
    vol.write_file("/d/g", data)                 # dedup against committed blocks
    assert vol.extents.block_refs(name) == 4 and vol.stat("/d/g").etag == attr.etag
