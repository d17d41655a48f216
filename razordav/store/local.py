"""Local-directory object store: the embedded default, and the model every backend must match.

Each key is a file below ``root``. A put writes a temporary file, fsyncs it, and renames it
into place (then fsyncs the directory), so a crash leaves the old object or the new one.
Etags are the MD5 of the content, as S3 gives for simple uploads.

Threading: safe; conditional puts are serialised by one lock (they are rare: the lease).
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from pathlib import Path
from typing import Iterable, Iterator

from ..fsutil import write_durably
from .base import ConfigError, NotFound, ObjectInfo, ObjectStore, PreconditionFailed

_ETAG_SUFFIX = ".etag"


class LocalStore(ObjectStore):
    def __init__(self, root: str | os.PathLike, create: bool = True):
        self.root = Path(root).resolve()
        self.url = self.root.as_uri()
        if create:
            self.root.mkdir(parents=True, exist_ok=True)
        elif not self.root.is_dir():
            raise ConfigError(f"object store directory {self.root} does not exist")
        self._cond_lock = threading.Lock()

    def _path(self, key: str) -> Path:
        if not key or key.startswith("/") or ".." in key.split("/") or "\0" in key:
            raise ValueError(f"invalid object key {key!r}")
        return self.root / key

    def put(self, key, data, *, if_absent=False, if_match=None, storage_class=None):
        path = self._path(key)
        if if_absent or if_match is not None:
            with self._cond_lock:
                self._check_condition(key, if_absent, if_match)
                return self._write(path, data)
        return self._write(path, data)

    def _check_condition(self, key, if_absent, if_match):
        try:
            current = self.head(key).etag
        except NotFound:
            current = None
        if if_absent and current is not None:
            raise PreconditionFailed(f"{key} exists")
        if if_match is not None and current != if_match:
            raise PreconditionFailed(f"{key} has etag {current}, not {if_match}")

    def _write(self, path: Path, data: bytes) -> str:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_durably(path, data, mode=0o644)
        return hashlib.md5(data).hexdigest()

    def get(self, key, offset=0, length=None):
        try:
            with open(self._path(key), "rb") as f:
                if offset:
                    f.seek(offset)
                return f.read() if length is None else f.read(length)
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise NotFound(key) from None

    def head(self, key):
        path = self._path(key)
        try:
            st = path.stat()
            if not path.is_file():
                raise NotFound(key)
            with open(path, "rb") as f:
                etag = hashlib.file_digest(f, "md5").hexdigest()
        except (FileNotFoundError, NotADirectoryError):
            raise NotFound(key) from None
        return ObjectInfo(key, st.st_size, etag, st.st_mtime)

    def delete_many(self, keys: Iterable[str]) -> None:
        for key in keys:
            try:
                self._path(key).unlink()
            except FileNotFoundError:
                pass

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        # Walk only the directory that holds the prefix, in key order.
        base = prefix.rsplit("/", 1)[0] if "/" in prefix else ""
        keys = []
        for dirpath, dirnames, filenames in os.walk(self.root / base if base else self.root):
            rel = os.path.relpath(dirpath, self.root)
            for name in filenames:
                if name.startswith(".tmp-"):
                    continue
                key = name if rel == "." else f"{rel}/{name}".replace(os.sep, "/")
                if key.startswith(prefix):
                    keys.append(key)
        for key in sorted(keys):
            try:
                st = (self.root / key).stat()
            except FileNotFoundError:
                continue
            yield ObjectInfo(key, st.st_size, "", st.st_mtime)

    def remove_leftovers(self, older_than: float, prefix: str = "") -> int:
        """Temporary files of puts interrupted by a crash (``.tmp-*``) in the directory of
        ``prefix`` and below, older than ``older_than`` seconds so that no put in progress
        loses its file."""
        cutoff = time.time() - older_than
        removed = 0
        base = self.root / prefix.rsplit("/", 1)[0] if "/" in prefix else self.root
        for dirpath, _dirs, filenames in os.walk(base):
            for name in filenames:
                if name.startswith(".tmp-"):
                    path = os.path.join(dirpath, name)
                    try:
                        if os.stat(path).st_mtime < cutoff:
                            os.unlink(path)
                            removed += 1
                    except FileNotFoundError:
                        pass
        return removed

    def copy(self, src, dst, storage_class=None):
        self.put(dst, self.get(src))

    def delete_prefix(self, prefix: str, batch: int = 1000) -> int:
        """As the base does; for a directory prefix ("tenants/acme/", or "") then remove
        the directories it leaves empty, itself included, never ``root``."""
        count = super().delete_prefix(prefix, batch)
        if prefix and not prefix.endswith("/"):
            return count
        top = self._path(prefix.rstrip("/")) if prefix else self.root
        for dirpath, _dirs, _files in os.walk(top, topdown=False):
            if Path(dirpath) != self.root:
                try:
                    os.rmdir(dirpath)
                except OSError:
                    pass    # not empty: a put under the prefix meanwhile
        return count
