"""Flushing files and directories to disk by path, for the local store, the block cache and
the tree's write-ahead log."""

from __future__ import annotations

import os


def fsync_path(path: str | os.PathLike) -> bool:
    """fsync a file or a directory (a directory: its entries, e.g. after a rename into it);
    False if it does not exist (evicted, deleted, never written)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    return True
