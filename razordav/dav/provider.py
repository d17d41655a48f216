"""The WebDAV face: a WsgiDAV provider and its resources over a ``Volume``.

Owns the translation between WsgiDAV's resource API and core calls, nothing else: paths
are checked once here, core errors become DAVErrors in ``_translate`` (one table: the
status each core error class carries), and dead properties live in the tree per inode, so
MOVE keeps them and DELETE drops them with the inode.

Sync-tool extras: ``X-OC-Mtime`` on PUT sets the file's mtime in the same commit as the
content; ``OC-Checksum`` (SHA1/MD5) is verified before the new content is published, and
whole-file checksums are exposed as ``{http://owncloud.org/ns}checksums``.

Quotas: a PUT that cannot fit is a 507 with the reason, before its body is read when its
Content-Length says so, and leaves the old file as it was; collections report RFC 4331's
``quota-used-bytes`` and ``quota-available-bytes``.

Threading: WsgiDAV calls from cheroot's worker threads; resources live for one request.
"""

from __future__ import annotations

import contextlib
import logging
import mimetypes
import time
from email.utils import parsedate_to_datetime

from wsgidav import util, xml_tools
from wsgidav.dav_error import (HTTP_BAD_REQUEST, HTTP_FORBIDDEN, HTTP_LOCKED, HTTP_NOT_FOUND,
                               PRECONDITION_CODE_LockConflict, DAVError, DAVErrorCondition,
                               PRECONDITION_CODE_ProtectedProperty)
from wsgidav.dav_provider import DAVCollection, DAVNonCollection, DAVProvider
from wsgidav.util import etree

from ..core import errors
from ..core.volume import Attr, Volume

log = logging.getLogger(__name__)

OC_NS = "{http://owncloud.org/ns}"
WIN_NS = "{urn:schemas-microsoft-com:}"
CHECKSUMS = OC_NS + "checksums"
QUOTA_PROPS = ("{DAV:}quota-available-bytes", "{DAV:}quota-used-bytes")


@contextlib.contextmanager
def _translate():
    """Turn core errors into DAVErrors with the status their class names."""
    try:
        yield
    except errors.FsError as exc:
        if exc.http_status >= 500 and not isinstance(exc, (errors.NoSpace, errors.Unavailable)):
            log.error("%s: %s", type(exc).__name__, exc)
        raise DAVError(exc.http_status, context_info=str(exc)) from None


def normalize_path(path: str) -> str:
    """Check a request path once: no NUL, no '.' or '..' segments, valid names."""
    if "\0" in path or "\\" in path:
        raise DAVError(HTTP_BAD_REQUEST, "invalid character in path")
    parts = [p for p in path.split("/") if p]
    for p in parts:
        if p in (".", ".."):
            raise DAVError(HTTP_BAD_REQUEST, "'.' and '..' are not allowed in paths")
        with _translate():
            Volume.name_key(p)
    return "/" + "/".join(parts)


def _http_date_to_ns(value: str) -> int:
    """Parse an HTTP date or an integer of seconds since the epoch."""
    value = value.strip()
    if value.isdigit():
        return int(value) * 10**9
    try:
        return int(parsedate_to_datetime(value).timestamp() * 10**9)
    except (TypeError, ValueError):
        raise DAVError(HTTP_BAD_REQUEST, f"invalid date {value!r}") from None


class _Resource:
    """What files and folders share: attributes, dead properties, copy and delete."""

    attr: Attr

    def _init(self, provider: "RazorProvider", attr: Attr):
        self.vol = provider.volume
        self.attr = attr

    def get_creation_date(self):
        return self.attr.btime / 1e9

    def get_last_modified(self):
        return self.attr.mtime // 10**9  # HTTP dates have whole seconds

    def get_ref_url(self):
        # WsgiDAV asks for it once per property (lock discovery); the path never changes
        ref = self.__dict__.get("_ref_url")
        if ref is None:
            ref = self._ref_url = super().get_ref_url()
        return ref

    def get_display_name(self):
        return util.get_uri_name(self.path)

    # dead properties, stored in the tree per inode

    def get_property_names(self, *, is_allprop):
        names = super().get_property_names(is_allprop=is_allprop)
        names += [f"{{{ns}}}{name}" for ns, name in self.vol.props(self.attr.ino)]
        if self.attr.hashes:
            names.append(CHECKSUMS)
        return names

    def get_property_value(self, name):
        if name == CHECKSUMS and self.attr.hashes:
            el = etree.Element(name)
            etree.SubElement(el, OC_NS + "checksum").text = self.attr.hashes
            return el
        if name in QUOTA_PROPS and not self.is_collection:
            raise DAVError(HTTP_NOT_FOUND)   # RFC 4331 defines them on collections only
        if name == "{DAV:}supportedlock":
            # the same for every resource (WsgiDAV builds it anew for each): built once;
            # nobody changes the element afterwards
            if self.provider.supported_lock is None:
                self.provider.supported_lock = super().get_property_value(name)
            return self.provider.supported_lock
        if name.startswith("{DAV:}"):
            return super().get_property_value(name)
        ns, local = _split_clark(name)
        value = self.vol.props(self.attr.ino).get((ns, local))
        if value is None:
            raise DAVError(HTTP_NOT_FOUND)
        return xml_tools.string_to_xml(value.decode("utf-8"))

    def set_property_value(self, name, value, *, dry_run=False):
        if name.startswith("{DAV:}") or name == CHECKSUMS:
            if name == "{DAV:}lastmodified" and value is not None:
                # ownCloud's PROPPATCH of mtime (seconds), used by sync clients
                return self._set_times(mtime=_http_date_to_ns(value.text or ""), dry_run=dry_run)
            raise DAVError(HTTP_FORBIDDEN, err_condition=PRECONDITION_CODE_ProtectedProperty)
        if name.startswith(WIN_NS) and value is not None:
            # Windows' Mini-Redirector sends these after every PUT; keep the times real
            # and store the rest as dead properties.
            local = name[len(WIN_NS):]
            if local == "Win32LastModifiedTime":
                return self._set_times(mtime=_http_date_to_ns(value.text or ""), dry_run=dry_run)
            if local == "Win32CreationTime":
                return self._set_times(btime=_http_date_to_ns(value.text or ""), dry_run=dry_run)
        if dry_run:
            return
        ns, local = _split_clark(name)
        data = None if value is None else etree.tostring(value)
        with _translate():
            self.vol.set_props(self.attr.ino, {(ns, local): data})

    def _set_times(self, dry_run: bool, **times):
        if not dry_run:
            with _translate():
                self.attr = self.vol.setattr(self.attr.ino, **times)

    def set_last_modified(self, dest_path, time_stamp, *, dry_run):
        ns = _http_date_to_ns(str(time_stamp))
        self._set_times(mtime=ns, dry_run=dry_run)
        return True

    def remove_all_properties(self, *, recursive):
        pass  # dead properties go with the inode

    # delete, copy, move

    def handle_delete(self):
        # WsgiDAV checks only the parent's locks before calling this: check ours and
        # our members' (depth infinity) here, as its member-by-member path would.
        self._check_member_locks()
        with _translate():
            self.vol.remove_tree(self.path)
        self.remove_all_locks(recursive=True)
        return True

    def _check_member_locks(self):
        """Refuse (423) if this resource or a member is locked by a lock whose token the
        request did not submit (RFC 4918 9.6.1)."""
        lock_man = self.provider.lock_manager
        if lock_man is None:
            return
        env = self.environ
        if "wsgidav.conditions.if" not in env:
            util.parse_if_header_dict(env)
        tokens, principal = env["wsgidav.ifLockTokenList"], env["wsgidav.user_name"]
        url = self.get_ref_url()
        lock_man.check_write_permission(url=url, depth="0", token_list=tokens,
                                        principal=principal)
        members = lock_man.storage.get_lock_list(url, include_root=False, include_children=True,
                                                 token_only=False)
        foreign = [lk["root"] for lk in members
                   if lk["token"] not in tokens or lk["principal"] != principal]
        if foreign:
            cond = DAVErrorCondition(PRECONDITION_CODE_LockConflict)
            for href in foreign:
                cond.add_href(href)
            raise DAVError(HTTP_LOCKED, err_condition=cond)

    def delete(self):
        self.handle_delete()

    def support_recursive_delete(self):
        return True

    def support_recursive_move(self, dest_path):
        return True

    def move_recursive(self, dest_path):
        with _translate():
            self.vol.rename(self.path, normalize_path(dest_path))
        self.remove_all_locks(recursive=True)
        return []

    def copy_move_single(self, dest_path, *, is_move):
        dest_path = normalize_path(dest_path)
        with _translate():
            if is_move:
                self.vol.rename(self.path, dest_path)
            else:
                self.vol.copy_entry(self.path, dest_path)   # the REST API's copy does too

    def get_used_bytes(self):
        return None

    def get_available_bytes(self):
        return None


# What a collection reports as available without a quota. RFC 4331 3 lets a server with no
# quota omit the property but RECOMMENDS some value. Omitting it misleads clients: Windows'
# WebClient then takes the capacity of the client's own system drive and refuses a copy
# bigger than its free space (Microsoft KB 2386902), a macOS mount reports a size of 0, and
# davfs2 shows odd figures. The bucket has no limit of its own, so we report a large, round amount that
# every client parses (64-bit and JavaScript-number safe): 1 PiB.
UNLIMITED_AVAILABLE = 1 << 50



def _split_clark(name: str) -> tuple[str, str]:
    if name.startswith("{"):
        ns, local = name[1:].split("}", 1)
        return ns, local
    return "", name


class FolderResource(_Resource, DAVCollection):
    def __init__(self, provider, path, environ, attr):
        DAVCollection.__init__(self, path, environ)
        self._init(provider, attr)

    def get_etag(self):
        return None

    def support_etag(self):
        return False

    def get_member_names(self):
        return [name for name, _ in self._listing()]

    # RFC 4331 quota properties, on collections only (the RFC defines them there). The quota
    # is the volume's (a tenant's), so every collection reports the same figures.

    def get_used_bytes(self):
        with _translate():
            return self.vol.usage()["bytes"]

    def get_available_bytes(self):
        with _translate():
            room = self.vol.room()
        return UNLIMITED_AVAILABLE if room is None else room

    def _listing(self):
        with _translate():
            return self.vol.readdir(self.attr.ino)

    def get_member_list(self):
        """All members with their attributes from one query (no lookup per child)."""
        base = self.path.rstrip("/")
        return [self.provider._resource(f"{base}/{name}", self.environ, attr)
                for name, attr in self._listing()]

    def member_pages(self, size: int):
        """The members as resources, ``size`` at a time in name order, each page one query
        (a streamed PROPFIND holds one page in memory, not the collection)."""
        base, after = self.path.rstrip("/"), None
        while True:
            with _translate():
                rows = self.vol.readdir(self.attr.ino, after=after, limit=size)
            if not rows:
                return
            yield [self.provider._resource(f"{base}/{name}", self.environ, attr)
                   for name, attr in rows]
            if len(rows) < size:
                return
            after = self.vol.name_key(rows[-1][0])

    def get_member(self, name):
        with _translate():
            try:
                attr = self.vol.lookup(self.attr.ino, name)
            except errors.NotFound:
                return None
        return self.provider._resource(util.join_uri(self.path, name), self.environ, attr)

    def create_empty_resource(self, name):
        path = util.join_uri(self.path, name)
        normalize_path(path)
        if self.environ.get("REQUEST_METHOD") == "PUT":
            # Nothing is created until the body has arrived whole (see PutStream).
            return PendingFile(self.provider, path, self.environ, self.attr.ino, name)
        with _translate():
            attr = self.vol.write_file(path, b"")  # LOCK on an unmapped URL
        return FileResource(self.provider, path, self.environ, attr)

    def create_collection(self, name):
        path = util.join_uri(self.path, name)
        with _translate():
            self.vol.mkdir(normalize_path(path))


class FileResource(_Resource, DAVNonCollection):
    def __init__(self, provider, path, environ, attr):
        DAVNonCollection.__init__(self, path, environ)
        self._init(provider, attr)
        self._reader = None
        if environ.get("REQUEST_METHOD") == "GET" and attr.is_file:
            # Take length, etag and bytes from one version of the file, and fetch the first
            # block wanted now: a store outage is then a clean 503, not a cut-off 200.
            with _translate():
                self._reader = self.vol.open_read(attr.ino)
                self.attr = self._reader.attr
                self._reader.pread(_range_start(environ.get("HTTP_RANGE"), attr.size), 1)

    def get_content_length(self):
        return self.attr.size

    def get_content_type(self):
        # asked several times per PROPFIND entry; guessing parses the name each time
        kind = self.__dict__.get("_content_type")
        if kind is None:
            kind = self._content_type = \
                mimetypes.guess_type(self.path)[0] or "application/octet-stream"
        return kind

    def get_etag(self):
        return self.attr.etag or None

    def support_etag(self):
        return True

    def support_ranges(self):
        return True

    def get_content(self):
        if self._reader is None:
            with _translate():
                self._reader = self.vol.open_read(self.attr.ino)
        reader, self._reader = self._reader, None
        return reader

    def begin_write(self, *, content_type=None):
        return PutStream(self, self.environ)

    def end_write(self, *, with_errors):
        stream = getattr(self, "_put", None)
        if stream is not None:
            if with_errors:
                stream.abort()
            else:
                self.attr = stream.attr

    def close(self):
        if self._reader is not None:
            self._reader.close()
            self._reader = None


def _range_start(header: str | None, size: int) -> int:
    """Where the first range of a Range header starts (0 when absent or unparsable)."""
    if not header or not header.strip().lower().startswith("bytes="):
        return 0
    first = header.split("=", 1)[1].split(",")[0].strip()
    start, _, end = first.partition("-")
    try:
        return int(start) if start else max(0, size - int(end))
    except ValueError:
        return 0


class PendingFile(FileResource):
    """The target of a PUT to a new URL: it exists only once the body has arrived, as
    ``entry`` in directory inode ``parent`` (resolved by this request)."""

    def __init__(self, provider, path, environ, parent: int, entry: str):
        self.parent, self.entry = parent, entry
        now = time.time_ns()
        attr = Attr(0, 0o100644, 0, 0, 1, 0, 0, now, now, now, now, None, "", "")
        DAVNonCollection.__init__(self, path, environ)
        self._init(provider, attr)
        self._reader = None


class PutStream:
    """The body of a PUT, streamed into a core ``FileWriter``.

    ``close`` publishes the new content only if the body is whole (its Content-Length
    arrived) and matches ``OC-Checksum``; otherwise the old file stays as it was.
    """

    def __init__(self, res: FileResource, environ: dict):
        self.res = res
        self.attr = None
        mtime = environ.get("HTTP_X_OC_MTIME")
        if mtime is not None and not (mtime.strip().isdigit() and
                                      int(mtime) < (2**63 - 1) // 10**9):
            raise DAVError(HTTP_BAD_REQUEST, "X-OC-Mtime must be seconds since the epoch")
        self.expected_length = None
        if environ.get("CONTENT_LENGTH") and "chunked" not in \
                environ.get("HTTP_TRANSFER_ENCODING", "").lower():
            self.expected_length = int(environ["CONTENT_LENGTH"])
        self.checksum = _parse_checksum(environ.get("HTTP_OC_CHECKSUM"))
        with _translate():
            # With a Content-Length, a body that cannot fit the quota is refused (507) before
            # a byte of it is read; cheroot then drains it, as HTTP/1.1 wants.
            opts = {"mtime": int(mtime) * 10**9 if mtime else None,
                    "hashes": (self.checksum[0],) if self.checksum else (),
                    "length": self.expected_length}
            if isinstance(res, PendingFile):   # its directory is resolved already
                self.writer = res.vol.open_write_in(res.parent, res.entry, **opts)
            else:
                self.writer = res.vol.open_write(res.path, **opts)
        res._put = self

    def write(self, data: bytes) -> None:
        with _translate():
            self.writer.write(data)

    def writelines(self, body) -> None:
        """WsgiDAV hands over the body as an iterator over reads of ``wsgi.input``: a
        body that cannot be read to its end (``BadBody``) is then a 400, not a 500, and
        WsgiDAV aborts the write."""
        with _translate():
            for data in body:
                self.writer.write(data)

    def close(self) -> None:
        if self.expected_length is not None and self.writer.size != self.expected_length:
            self.writer.abort()
            raise DAVError(HTTP_BAD_REQUEST, f"body ended after {self.writer.size} of "
                                             f"{self.expected_length} bytes")
        if self.checksum:
            algo, want = self.checksum
            got = self.writer.digests()[algo]
            if got != want:
                self.writer.abort()
                raise DAVError(HTTP_BAD_REQUEST,
                               f"OC-Checksum mismatch: {algo.upper()} of the body is {got}")
        with _translate():
            self.attr = self.writer.close()

    def abort(self) -> None:
        self.writer.abort()


def _parse_checksum(header: str | None) -> tuple[str, str] | None:
    if not header:
        return None
    for item in header.split():
        algo, _, value = item.partition(":")
        if algo.lower() in ("sha1", "md5") and value:
            return algo.lower(), value.strip().lower()
    if any(item.partition(":")[0].lower() in ("adler32", "sha256") for item in header.split()):
        return None  # a checksum we do not keep: accept the upload unverified
    raise DAVError(HTTP_BAD_REQUEST, f"unsupported OC-Checksum {header!r}")


class RazorProvider(DAVProvider):
    """Serves one volume at the share root."""

    def __init__(self, volume):
        super().__init__()
        self.volume = volume
        self.supported_lock = None   # the {DAV:}supportedlock element: the same for all

    def is_readonly(self):
        return False

    def get_resource_inst(self, path: str, environ: dict):
        path = normalize_path(path)
        try:
            with _translate():
                attr = self.volume.stat(path)
        except DAVError as exc:
            if exc.value in (404, 409):
                return None
            raise
        return self._resource(path, environ, attr)

    def _resource(self, path: str, environ: dict, attr: Attr):
        if attr.is_dir:
            return FolderResource(self, path, environ, attr)
        return FileResource(self, path, environ, attr)
