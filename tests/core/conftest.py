"""Core fixtures: a volume with tiny blocks over a local store, checked after every test."""

import pytest

from razordav.core.check import check_tree
from razordav.core.volume import Volume

BS = 16 * 1024  # tiny blocks, so small files cross block boundaries


@pytest.fixture
def open_volume(tmp_path):
    """Open volumes over one store; each is checked for invariants and closed at the end."""
    opened = []

    def _open(data_dir="data", **kw):
        kw.setdefault("block_size", BS)
        kw.setdefault("journal_interval", 0)
        kw.setdefault("store_url", (tmp_path / "store").as_uri())
        vol = Volume.open(tmp_path / data_dir, **kw)
        opened.append(vol)
        return vol

    yield _open
    for vol in opened:
        if not vol._closed:
            assert check_tree(vol.tree) == []
            assert vol.tree.counters() == vol.tree.count()
            vol.close()


@pytest.fixture
def vol(open_volume):
    return open_volume()


def store_objects(vol, prefix="blocks/"):
    return list(vol.store.list(prefix))


def old_volume(tmp_path, fixture: str):
    """Unpack ``tests/fixtures/<fixture>`` (a data dir and its bucket written by an earlier
    main) under ``tmp_path/old``; return that folder."""
    import os
    import tarfile
    path = os.path.join(os.path.dirname(os.path.dirname(__file__)), "fixtures", fixture)
    with tarfile.open(path) as tar:
        tar.extractall(tmp_path / "old", filter="data")
    return tmp_path / "old"
