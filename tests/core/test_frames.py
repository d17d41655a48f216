"""Reads of blocks in frames (issue 17): a range read decodes only the frames it touches,
from the cache file, each checked by its own checksum; damage is caught and mended."""

import random

import pytest

from razordav.core import errors
from razordav.core.blocks import FRAME, HEADER, frame_table

from .test_blocks import text_bytes

BIG = 4 << 20


@pytest.fixture
def framed(open_volume):
    vol = open_volume(block_size=BIG)
    data = text_bytes(2 * BIG + 3 * FRAME + 777)     # two full blocks and a framed tail
    vol.write_file("/f", data)
    assert vol.cache.wait_uploaded(10)
    vol.cache._hot.clear()                           # nothing decoded in memory yet
    return vol, data


def test_random_reads_match_and_decode_only_their_frames(framed):
    vol, data = framed
    rng = random.Random(4)
    with vol.open_read("/f") as r:
        before = vol.cache.stats["frames_decoded"]
        assert r.pread(BIG + 5 * FRAME + 100, 4096) == data[BIG + 5 * FRAME + 100:][:4096]
        assert vol.cache.stats["frames_decoded"] - before == 1
        assert r.pread(BIG + 5 * FRAME + 9000, 4096) == data[BIG + 5 * FRAME + 9000:][:4096]
        assert vol.cache.stats["frames_decoded"] - before == 1     # the same frame, kept
        across = BIG + 7 * FRAME - 100                 # across two frames
        assert r.pread(across, 200) == data[across:across + 200]
        across = BIG - 100                             # across two blocks
        assert r.pread(across, 200) == data[across:across + 200]
        for _ in range(300):
            o, n = rng.randrange(len(data)), rng.choice([1, 4096, 65536, 300_000])
            assert r.pread(o, n) == data[o:o + n]
        assert r.pread(len(data) - 10, 4096) == data[-10:]
    assert not vol.cache._hot                          # no block was decoded whole


def _block_file(vol, idx=1):
    name = vol.extents.extents(vol.stat("/f").ino)[idx]
    return name, vol.cache._path(name.hex())


def test_a_damaged_frame_of_a_clean_block_is_fetched_again(framed):
    vol, data = framed
    name, path = _block_file(vol)
    raw = bytearray(path.read_bytes())
    payload = bytes(raw[HEADER.size:])
    fr = frame_table(payload[-8:], len(payload), BIG, "t", payload)[3]
    raw[HEADER.size + fr.at + 10] ^= 0xFF
    path.write_bytes(bytes(raw))
    with vol.cache._lock:
        vol.cache._forget_frames(name.hex())
    with vol.open_read("/f") as r:
        o = BIG + 3 * FRAME + 50
        assert r.pread(o, 4096) == data[o:o + 4096]    # from the store, after the check
    assert path.read_bytes() != bytes(raw)             # the cache copy was replaced


def test_a_damaged_frame_of_a_dirty_block_is_an_error(open_volume):
    vol = open_volume(block_size=BIG, upload_paused=True, small_block=0)
    data = text_bytes(BIG)
    vol.write_file("/f", data)
    name, path = _block_file(vol, 0)
    raw = bytearray(path.read_bytes())
    raw[HEADER.size + 100] ^= 0xFF
    path.write_bytes(bytes(raw))
    with vol.open_read("/f") as r, pytest.raises(errors.Corrupt):
        r.pread(10, 4096)


@pytest.mark.parametrize("packs", [False, True], ids=["object", "pack"])
def test_a_cold_small_read_fetches_the_frames_not_the_block(open_volume, tmp_path, packs):
    import shutil

    from razordav.store.local import LocalStore

    class Counting(LocalStore):
        def __init__(self, root):
            super().__init__(root)
            self.gets = []

        def get(self, key, offset=0, length=None):
            self.gets.append((key, length))
            return super().get(key, offset, length)

    store = Counting(tmp_path / "store")
    kw = {"block_size": 1 << 20, "pack_threshold": (1 << 20) if packs else 0}
    vol = open_volume(store=store, **kw)
    data = text_bytes(3 << 20)
    vol.write_file("/f", data)
    assert vol.cache.wait_uploaded(10)
    assert len(vol.packs.packs()) == (1 if packs else 0)
    vol.close()
    shutil.rmtree(tmp_path / "data" / "cache")
    vol = open_volume(store=store, **kw)
    store.gets.clear()
    with vol.open_read("/f") as r:
        o = (1 << 20) + 5 * FRAME + 10
        assert r.pread(o, 4096) == data[o:o + 4096]
        assert len(store.gets) == 2                      # the frame table, one frame
        assert all(n is not None and n < FRAME for _k, n in store.gets)
        assert r.pread(o + 8192, 4096) == data[o + 8192:o + 12288]
        assert len(store.gets) == 2                      # that frame is kept in memory
        o2 = (1 << 20) + 2 * FRAME
        assert r.pread(o2, 4096) == data[o2:o2 + 4096]
        assert len(store.gets) == 3                      # the table is remembered
        for o in range(0, len(data), 100_003):            # and everything else still reads
            assert r.pread(o, 5000) == data[o:o + 5000]
    assert vol.cache.stats["frame_fetches"] >= 3


def test_fsck_full_checks_frame_tables(open_volume, tmp_path):
    from razordav.core.blocks import block_key
    vol = open_volume(block_size=BIG, pack_threshold=0)
    data = text_bytes(BIG)
    vol.write_file("/f", data)
    assert vol.cache.wait_uploaded(10)
    name = vol.extents.extents(vol.stat("/f").ino)[0]
    path = tmp_path / "store" / block_key(name)
    raw = bytearray(path.read_bytes())
    raw[-10] ^= 0xFF                                  # inside the frame table
    path.write_bytes(bytes(raw))
    assert vol.fsck().clean                           # a listing sees nothing wrong
    report = vol.fsck(full=True)
    assert any("corrupt in the store" in p for p in report.problems), report.problems
    report = vol.fsck(full=True, repair=True)         # the cache has a good copy
    assert any("uploaded block" in r for r in report.repaired)
    assert vol.fsck(full=True).clean
