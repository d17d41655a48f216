"""Flushing files and directories to disk by path, for the local store, the block cache and
the tree's write-ahead log."""

from __future__ import annotations

import os
import uuid


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


def write_durably(path: str | os.PathLike, data: bytes, mode: int = 0o600) -> None:
    """Replace the file at ``path`` with ``data`` so that after a crash or power cut it holds
    the old bytes or the new ones, never nothing: write a temporary file, fsync it, rename it
    into place, fsync the directory. For small control files (an id, a config)."""
    path = os.fspath(path)
    tmp = os.path.join(os.path.dirname(path), f".tmp-{uuid.uuid4().hex}")  # one per writer
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    fsync_path(os.path.dirname(os.path.abspath(path)))
