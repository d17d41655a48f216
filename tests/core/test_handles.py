"""OpenFiles.quick: which calls a face may run in its event loop. Quick means no committed
bytes to read back, no block for the encoding pool, no wait for room or for another
thread's commit; anything else goes to the pool (getting that wrong would stall the loop on
the store, or read stale bytes, so each case is pinned down here)."""

import os

import pytest

from razordav.core.publish import INLINE_BLOCK
from razordav.core.handles import OpenFiles

from .conftest import BS


@pytest.fixture
def files(open_volume):
    vol = open_volume(upload_paused=True)
    f = OpenFiles(vol, max_age=3600)
    yield f
    f.close_all()
    vol.cache.pause_uploads(False)


def new_file(files, name, data=b""):
    tree = files.tree
    ino = tree.create(1, name).ino
    if data:
        files.open(ino)
        files.write(ino, 0, data)
        files.close(ino)
    return ino


def test_small_writes_to_a_new_file_and_their_commit_are_quick(files):
    ino = new_file(files, "f")
    assert files.quick(ino)                       # not open: nothing to commit
    files.open(ino)
    assert files.quick(ino, 0, 100)
    files.write(ino, 0, b"x" * 100)
    assert files.quick(ino, 100, 1000)            # the buffer holds block 0 itself
    files.write(ino, 100, b"y" * 1000)
    assert files.quick(ino)                       # a commit of 1 100 bytes
    files.flush(ino)
    files.close(ino)
    assert files.vol.read_file("/f") == b"x" * 100 + b"y" * 1000


def test_writes_that_fill_a_block_or_pass_the_inline_size_are_not_quick(files):
    ino = new_file(files, "f")
    files.open(ino)
    assert not files.quick(ino, 0, BS)            # completes a block: the encoding pool
    assert not files.quick(ino, BS - 10, 20)      # reaches into block 1
    assert BS < INLINE_BLOCK
    files.write(ino, 0, b"x" * (BS - 1))
    assert files.quick(ino)
    files.close(ino)


def test_a_write_over_committed_bytes_is_not_quick(files):
    ino = new_file(files, "f", os.urandom(100))
    files.open(ino)
    assert not files.quick(ino, 10, 5)            # merges with committed bytes
    files.write(ino, 10, b"abcde")                # (on the pool, as a face would)
    assert files.quick(ino, 20, 5)                # block 0 is in the buffer now
    files.close(ino)


def test_an_inode_another_thread_commits_is_not_quick(files):
    ino = new_file(files, "f")
    files.open(ino)
    files.write(ino, 0, b"x")
    st = files._states[ino]
    with st.lock:
        assert not files.quick(ino) and not files.quick(ino, 1, 1)
    assert files.quick(ino)
    files.close(ino)


def test_no_quick_commit_when_the_cache_has_no_room(files):
    ino = new_file(files, "f")
    files.open(ino)
    files.write(ino, 0, b"x" * 1000)
    cache = files.vol.cache
    limit, cache.dirty_limit = cache.dirty_limit, cache.dirty_bytes + 500
    try:
        assert not files.quick(ino)               # the commit could wait for uploads
    finally:
        cache.dirty_limit = limit
    files.close(ino)
