"""Stock WsgiDAV's FilesystemProvider made durable, as a fair peer for razordav in
``bench_dav.py --small``: a PUT is answered only after its file is fsynced, and, when the
PUT created the file, its directory too (the new entry). Nothing else changes.

Stock WsgiDAV never fsyncs, so its acknowledgement means "in the page cache": a power loss
can take an acknowledged PUT. razordav's acknowledgement means "on local disk"; this
provider is what stock WsgiDAV costs when it promises the same.

Loaded by the ``wsgidav`` command from a JSON config (``config(root)``), with this
directory on ``PYTHONPATH``; served by cheroot like the stock peer.
"""

from __future__ import annotations

import os

from wsgidav.fs_dav_provider import FileResource, FilesystemProvider, FolderResource

_CREATED = "durable.created"   # environ key: this request created the file


class _SyncedFile:
    """The file a PUT writes: ``close`` flushes it to disk, and its directory when new."""

    def __init__(self, path: str, created: bool):
        self._f = open(path, "wb")
        self._path = path
        self._created = created

    def write(self, data: bytes) -> int:
        return self._f.write(data)

    def writelines(self, lines) -> None:
        self._f.writelines(lines)

    def close(self) -> None:
        if self._f.closed:
            return
        self._f.flush()
        os.fsync(self._f.fileno())
        self._f.close()
        if self._created:
            fd = os.open(os.path.dirname(self._path), os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)


class DurableFileResource(FileResource):
    def begin_write(self, *, content_type=None):
        return _SyncedFile(self._file_path, bool(self.environ.get(_CREATED)))


class DurableFolderResource(FolderResource):
    def create_empty_resource(self, name):
        self.environ[_CREATED] = True
        return super().create_empty_resource(name)


class DurableFilesystemProvider(FilesystemProvider):
    """``FilesystemProvider.get_resource_inst`` with the durable resource classes (the
    same checks, symlinks refused as by default)."""

    def get_resource_inst(self, path: str, environ: dict):
        fp = self._loc_to_file_path(path, environ)
        if not os.path.exists(fp):
            return None
        if os.path.islink(fp):
            return super().get_resource_inst(path, environ)   # its 403
        if os.path.isdir(fp):
            return DurableFolderResource(path, environ, fp)
        return DurableFileResource(path, environ, fp)


def config(root: str) -> dict:
    """A ``wsgidav`` JSON config serving ``root`` through this provider (run with
    ``--auth anonymous``, as the stock peer)."""
    return {"provider_mapping": {"/": {"class": "wsgidav_durable.DurableFilesystemProvider",
                                       "args": [root]}}}
