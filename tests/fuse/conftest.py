"""Fixtures for the FUSE tests: a live ``razordav mount`` on a fresh data dir."""
import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))
from mounts import RazorMount  # noqa: E402


@pytest.fixture
def mounted(tmp_path):
    """A mounted empty volume (local store); ``.mountpoint``, ``.stop()``, ``.start()``."""
    m = RazorMount(tmp_path / "data", tmp_path / "mnt")
    m.start()
    try:
        yield m
    finally:
        if m.proc is not None:
            m.stop()
