"""The REST face: JSON under ``/api/v1/`` over the same core calls as the WebDAV face, plus
``/healthz`` and ``/readyz``. ``make_api(service)`` assembles it; this module owns the file
routes, ``api_admin.py`` tenants, users and tokens, ``api_ops.py`` stats, jobs and health.

Owns only the translation between HTTP and ``Volume`` calls: paths are checked once here
with the WebDAV edge's rules (``dav.edge.bad_path``, then ``core.tree.split_path``), core
errors become problem documents in one table (``api_common.fs_error``), and the OpenAPI 3.1
document at ``/api/v1/openapi.json`` is written by spectree from the route declarations.

File routes:
    GET    /api/v1/files/{path}     a directory's entries (pages: ?limit=, ?cursor=) or a
                                    file's stat
    DELETE /api/v1/files/{path}     a file, an empty directory, or with ?recursive=true a tree

    GET    /api/v1/content/{path}   the bytes, streamed, with one Range if asked
    PUT    /api/v1/content/{path}   new bytes, streamed in constant memory; published whole
                                    or not at all (201 created, 204 replaced)
    POST   /api/v1/dirs/{path}      mkdir
    POST   /api/v1/move, /copy      {"from", "to", "overwrite"}

Every route that changes a path answers 423 when a WebDAV lock covers it (a tree: when a
lock covers anything in it), as WebDAV does for a client without the lock's token.

Limits: a directory copy is a walk of single copies, not one transaction (as WebDAV COPY);
a download serves one byte range, not multipart ranges.

Threading: cheroot calls from its worker threads; resources hold no per-request state.
"""

from __future__ import annotations

import mimetypes
import re
from urllib.parse import quote
import stat as st
from email.utils import formatdate

import falcon
from wsgidav.dav_error import DAVError
from pydantic import BaseModel, ConfigDict, Field

from ..core import errors
from ..core.volume import Attr, split_path
from ..web.wsgi import bad_path
from .api_common import (API, Answers, BodyLimit, JsonOnly, RoleCheck, fs_error, principal_of,
                         problems, serialize_error, spec, tenant_volume)

CHUNK = 1 << 20
PATH_DOC = {"path": "a path below the tenant's root, '/'-separated, percent-encoded; "
                    "no '.' or '..' segments, names of at most 255 UTF-8 bytes"}
MAX_LIMIT = 10_000


class Entry(BaseModel):
    name: str
    type: str = Field(description="file, dir, symlink or other")
    size: int
    mtime: float = Field(description="seconds since the epoch")
    etag: str | None = None


class FileInfo(Entry):
    """A file's stat, or a directory's with a page of its entries."""
    path: str
    entries: list[Entry] | None = None
    next_cursor: str | None = Field(
        None, description="pass as ?cursor= for the next page; null on the last page")


class ListQuery(BaseModel):
    cursor: str | None = Field(None, description="the next_cursor of the previous page")
    limit: int = Field(1000, ge=1, le=MAX_LIMIT)


class DeleteQuery(BaseModel):
    recursive: bool = False


class Transfer(BaseModel):
    model_config = ConfigDict(populate_by_name=True)
    source: str = Field(alias="from", description="path of the file or directory")
    target: str = Field(alias="to", description="its new path")
    overwrite: bool = False


def _kind(attr: Attr) -> str:
    if attr.is_dir:
        return "dir"
    if attr.is_file:
        return "file"
    return "symlink" if st.S_ISLNK(attr.mode) else "other"


def _entry(name: str, attr: Attr) -> dict:
    return {"name": name, "type": _kind(attr), "size": attr.size, "mtime": attr.mtime / 1e9,
            "etag": attr.etag or None}


def _info(path: str, attr: Attr) -> dict:
    return {**_entry(path.rsplit("/", 1)[-1], attr), "path": path}


def vol_path(req, path: str) -> str:
    """The checked, normalised volume path of a path parameter: the WebDAV edge's rules
    ('.', '..', NUL, backslash, also percent-encoded: 400), then the core's name rules."""
    refused = bad_path(req.env)
    if refused:
        raise falcon.HTTPBadRequest(description=refused.decode(), code="InvalidName")
    return "/" + "/".join(split_path(path))


def body_path(path: str) -> str:
    """A path from a JSON body: the same rules as a path in the URL."""
    if "\0" in path or "\\" in path or any(s in (".", "..") for s in path.split("/")):
        raise falcon.HTTPBadRequest(description=f"invalid path {path!r}", code="InvalidName")
    return "/" + "/".join(split_path(path))


class _Volumes:
    def __init__(self, service):
        self.service = service

    def vol(self, req):
        return tenant_volume(self.service, principal_of(req))

    def unlocked(self, req, path: str, depth: str = "0") -> None:
        """423 when a WebDAV lock covers ``path`` (for depth infinity: or anything below
        it). The REST API sends no lock tokens, so every lock counts, its owner's too, as
        for a WebDAV client that sends no If header."""
        principal = principal_of(req)
        try:
            locks = self.service.lock_manager(principal.tenant)
        except errors.NotFound:
            return
        try:
            locks.check_write_permission(url=quote(path), depth=depth, token_list=[],
                                         principal=principal.user)
        except DAVError:
            raise falcon.HTTPError(423, description=f"{path} is locked over WebDAV",
                                   code="Locked") from None


class Files(_Volumes):
    @spec.validate(query=ListQuery, resp=Answers(HTTP_200=FileInfo, **problems(400, 403, 404)),
                   tags=["files"], path_parameter_descriptions=PATH_DOC)
    def on_get(self, req, resp, path=""):
        """A directory's entries in name order, a page at a time, or a file's stat."""
        p, vol, q = vol_path(req, path), self.vol(req), req.context.query
        attr = vol.stat(p)
        info = _info(p, attr)
        if attr.is_dir:
            rows = vol.readdir(attr.ino, after=q.cursor, limit=q.limit + 1)
            more = len(rows) > q.limit
            rows = rows[:q.limit]
            info["entries"] = [_entry(name, a) for name, a in rows]
            info["next_cursor"] = vol.name_key(rows[-1][0]) if more else None
        resp.media = info

    @spec.validate(query=DeleteQuery,
                   resp=Answers("HTTP_204", **problems(400, 403, 404, 409, 423)),
                   tags=["files"], path_parameter_descriptions=PATH_DOC)
    def on_delete(self, req, resp, path=""):
        """Delete a file or an empty directory; a tree only with ?recursive=true."""
        p, vol = vol_path(req, path), self.vol(req)
        attr = vol.stat(p)
        self.unlocked(req, p, "infinity" if attr.is_dir else "0")
        if not attr.is_dir:
            vol.unlink(p)
        elif req.context.query.recursive:
            vol.remove_tree(p)
        else:
            vol.rmdir(p)
        resp.status = 204


_RANGE = re.compile(r"bytes=(\d*)-(\d*)", re.I)


def byte_range(header: str | None, size: int) -> tuple[int, int] | None:
    """(first, last) of a single byte range; None for the whole file. A header that is not
    one well-formed range is ignored (RFC 9110 14.2), as the WebDAV edge does; a range
    that starts past the end is a 416."""
    m = _RANGE.fullmatch((header or "").replace(" ", ""))
    if not m or m.groups() == ("", ""):
        return None
    first, last = m.groups()
    if first and last and int(last) < int(first):
        return None
    if not first:                       # the last N bytes
        if int(last) == 0 or size == 0:
            raise falcon.HTTPRangeNotSatisfiable(size)
        return max(0, size - int(last)), size - 1
    if int(first) >= size:
        raise falcon.HTTPRangeNotSatisfiable(size)
    return int(first), min(int(last), size - 1) if last else size - 1


class _Slice:
    """The body of a download: ``length`` bytes from ``start`` of one version of the file,
    read a chunk at a time; the reader (and its pinned blocks) goes with ``close``."""

    def __init__(self, reader, start: int, length: int):
        self.reader, self.pos, self.end = reader, start, start + length

    def __iter__(self):
        while self.pos < self.end:
            chunk = self.reader.pread(self.pos, min(CHUNK, self.end - self.pos))
            if not chunk:
                return
            self.pos += len(chunk)
            yield chunk

    def close(self):
        self.reader.close()


class Content(_Volumes):
    @spec.validate(resp=Answers("HTTP_200", "HTTP_206", raw=("200", "206"),
                                 **problems(400, 403, 404, 416)),
                   tags=["files"], path_parameter_descriptions=PATH_DOC)
    def on_get(self, req, resp, path=""):
        """The file's bytes; one byte range with Range (206)."""
        p, vol = vol_path(req, path), self.vol(req)
        reader = vol.open_read(p)
        try:
            attr = reader.attr
            rng = byte_range(req.get_header("Range"), attr.size)
            first, last = rng or (0, attr.size - 1)
            # Fetch the first block now: a store outage is then a clean 503, not a cut 200.
            reader.pread(first, 1)
        except BaseException:
            reader.close()
            raise
        if rng:
            resp.status = 206
            resp.set_header("Content-Range", f"bytes {first}-{last}/{attr.size}")
        resp.content_type = mimetypes.guess_type(p)[0] or "application/octet-stream"
        resp.set_header("Accept-Ranges", "bytes")
        resp.set_header("Last-Modified", formatdate(attr.mtime / 1e9, usegmt=True))
        if attr.etag:
            resp.set_header("ETag", f'"{attr.etag}"')
        resp.content_length = last - first + 1
        resp.stream = _Slice(reader, first, last - first + 1)

    @spec.validate(resp=Answers("HTTP_204", HTTP_201=FileInfo,
                                 **problems(400, 403, 404, 405, 409, 411, 423, 507)),
                   tags=["files"], path_parameter_descriptions=PATH_DOC)
    def on_put(self, req, resp, path=""):
        """Replace the file's bytes with the body, streamed; the old content stays until the
        whole body has arrived (Content-Length checked), and on any error (507: over the
        tenant's quota)."""
        p, vol = vol_path(req, path), self.vol(req)
        self.unlocked(req, p)
        chunked = "chunked" in (req.get_header("Transfer-Encoding") or "").lower()
        if not chunked and not req.env.get("CONTENT_LENGTH"):
            raise falcon.HTTPLengthRequired(
                description="a PUT needs Content-Length (0 for an empty file) or "
                            "Transfer-Encoding: chunked")
        expected = None if chunked else int(req.env.get("CONTENT_LENGTH") or 0)
        existed = _exists(vol, p)
        # With a Content-Length, a body that cannot fit the quota is a 507 before a byte of
        # it is read; the publish checks again (chunked bodies, parallel writers).
        writer = vol.open_write(p, length=expected)
        try:
            _pump(req.stream, writer, expected)
            if expected is not None and writer.size != expected:
                raise falcon.HTTPBadRequest(
                    description=f"body ended after {writer.size} of {expected} bytes")
            attr = writer.close()
        except BaseException:
            writer.abort()
            raise
        if existed:
            resp.status = 204
        else:
            resp.status = 201
            resp.location = f"{API}/files{p}"
            resp.media = _info(p, attr)


def _pump(src, writer, expected: int | None) -> None:
    """Copy a request body into a writer a chunk at a time (at most ``expected`` bytes)."""
    left = expected
    while left is None or left > 0:
        data = src.read(CHUNK if left is None else min(CHUNK, left))
        if not data:
            return
        writer.write(data)
        if left is not None:
            left -= len(data)


class Dirs(_Volumes):
    @spec.validate(resp=Answers(HTTP_201=FileInfo,
                                **problems(400, 403, 404, 405, 409, 423)),
                   tags=["files"], path_parameter_descriptions=PATH_DOC)
    def on_post(self, req, resp, path=""):
        """Make a directory (its parent must exist)."""
        p, vol = vol_path(req, path), self.vol(req)
        self.unlocked(req, p)
        attr = vol.mkdir(p)
        resp.status = 201
        resp.location = f"{API}/files{p}"
        resp.media = _info(p, attr)


class Move(_Volumes):
    @spec.validate(json=Transfer, resp=Answers(HTTP_200=FileInfo, HTTP_201=FileInfo,
                                                **problems(400, 403, 404, 405, 409, 423)),
                   tags=["files"])
    def on_post(self, req, resp):
        """Rename a file or directory; an existing target only with overwrite (200)."""
        vol = self.vol(req)
        src, dst, replace, existed = _transfer(req, vol)
        self.unlocked(req, src, "infinity")
        self.unlocked(req, dst, "infinity")
        vol.rename(src, dst, replace=replace)
        resp.status = 200 if existed else 201
        resp.media = _info(dst, vol.stat(dst))


class Copy(_Volumes):
    @spec.validate(json=Transfer, resp=Answers(HTTP_200=FileInfo, HTTP_201=FileInfo,
                                                **problems(400, 403, 404, 405, 409, 423)),
                   tags=["files"])
    def on_post(self, req, resp):
        """Copy a file (sharing its blocks) or a directory tree; an existing target only
        with overwrite (200)."""
        vol = self.vol(req)
        src, dst, replace, existed = _transfer(req, vol)
        self.unlocked(req, dst, "infinity")
        vol.copy_tree(src, dst, replace)   # dead properties kept, as WebDAV COPY
        resp.status = 200 if existed else 201
        resp.media = _info(dst, vol.stat(dst))


def _transfer(req, vol) -> tuple[str, str, bool, bool]:
    body: Transfer = req.context.json
    src, dst = body_path(body.source), body_path(body.target)
    if src == "/" or dst == "/":
        raise errors.InvalidArgument("the root cannot be moved, copied or replaced")
    return src, dst, body.overwrite, _exists(vol, dst)


def _exists(vol, path: str) -> bool:
    try:
        vol.stat(path)
        return True
    except errors.NotFound:
        return False


class Api:
    """The WSGI app: the Falcon app. Bodies left unread by an early error are drained by
    the HTTP layer (dav/http.py), for every face."""

    def __init__(self, app: falcon.App):
        self.falcon = app

    def __call__(self, environ, start_response):
        return self.falcon(environ, start_response)


def make_api(service) -> Api:
    """The REST API over ``service`` (see gate.Service): a WSGI app for ``/api/v1/...``,
    ``/healthz`` and ``/readyz``, with the caller's principal in the environ."""
    from . import api_admin, api_ops

    app = falcon.App(middleware=[JsonOnly(f"{API}/content/"), RoleCheck(service),
                                 BodyLimit(f"{API}/content/")])
    app.set_error_serializer(serialize_error)
    app.add_error_handler(errors.FsError, fs_error)
    files, content, dirs = Files(service), Content(service), Dirs(service)
    for prefix, resource in (("files", files), ("content", content), ("dirs", dirs)):
        app.add_route(f"{API}/{prefix}/{{path:path}}", resource)
    app.add_route(f"{API}/files", files)    # the root directory
    app.add_route(f"{API}/move", Move(service))
    app.add_route(f"{API}/copy", Copy(service))
    api_admin.add_routes(app, service)
    api_ops.add_routes(app, service)
    spec.register(app)                      # last: the document covers the routes above
    return Api(app)
