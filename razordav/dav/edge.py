"""The edge of the WebDAV face: checks and fixes applied to a request before WsgiDAV
parses it. Owns no state; answers a bad request itself with a 4xx and a one-line reason.

Guards:
- a request path with a '.' or '..' segment, a backslash or NUL, also percent-encoded, is a
  400 before anything resolves it (WsgiDAV would fold '/d/%2e%2e%2f' into another path);
- a negative or non-numeric Content-Length is a 400;
- a chunked request body left unread by an early error is read to its end first: cheroot
  drains only bodies with a Content-Length, and parsed the rest of a chunked one as the
  next request on the connection;
- a Range header that is not one well-formed byte range is ignored (RFC 9110 14.2
  allows it), so the client gets the whole file rather than a wrong slice;
- an XML request body (PROPFIND, PROPPATCH, LOCK, ...) larger than 1 MiB is a 413; the
  parser itself is defusedxml, which refuses entity expansion (billion laughs, XXE);
- PROPFIND with Depth: infinity on a subtree of more than 10 000 entries is a 403 with
  DAV:propfind-finite-depth (RFC 4918 9.1), instead of a response of unbounded size.
Fixes for WsgiDAV 4.4:
- If-None-Match present: If-Modified-Since is dropped, as RFC 9110 13.1.3 requires
  (WsgiDAV answered 412 to a GET carrying both, which broke davfs2's revalidation);
- If-Modified-Since alone: WsgiDAV gives 304 only when the date is *later* than
  Last-Modified; RFC 9110 wants it also when equal. Last-Modified has whole seconds, so
  moving the date one second on gives exactly the RFC's answer;
- PROPFIND <propname/>: WsgiDAV looks for a non-standard <name/> element instead, and
  answered property-name requests with nothing.
"""

from __future__ import annotations

import io
import re
from email.utils import formatdate, parsedate_to_datetime

from urllib.parse import unquote

from defusedxml import ElementTree
from wsgidav.dav_error import DAVError

from ..core import errors
from .provider import normalize_path

MAX_XML_BODY = 1 << 20
MAX_INFINITY_ENTRIES = 10_000
XML_METHODS = {"PROPFIND", "PROPPATCH", "LOCK", "UNLOCK", "MKCOL", "REPORT", "SEARCH"}

_FINITE_DEPTH = (b'<?xml version="1.0" encoding="utf-8"?>\n<D:error xmlns:D="DAV:">'
                 b"<D:propfind-finite-depth/></D:error>")


class Edge:
    def __init__(self, app, volume):
        self.app = app
        self.wsgidav_app = app
        self.volume = volume

    def __call__(self, environ, start_response):
        self.volume.cache.touch()   # uploads wait for a pause in requests (upload_delay)
        method = environ.get("REQUEST_METHOD", "")
        refused = bad_length(environ)
        if refused:   # where the body ends is unknown: the connection cannot be reused
            return reply(start_response, "400 Bad Request", refused, close=True)
        if has_body(environ):
            # An error answered before the body was read: read it, so the connection can
            # take the next request (cheroot would otherwise close it without saying so)
            start_response = drain_on_error(start_response, environ["wsgi.input"])
        refused = bad_path(environ)
        if refused:
            return reply(start_response, "400 Bad Request", refused)
        _check_range(environ)
        if method in XML_METHODS:
            refused = self._bound_body(environ)
            if refused:
                return reply(start_response, "413 Content Too Large", refused)
        depth = environ.get("HTTP_DEPTH", "infinity").strip().lower()  # RFC 4918: any case
        if method == "PROPFIND" and depth == "infinity":
            if self._too_deep(environ.get("PATH_INFO", "/")):
                return reply(start_response, "403 Forbidden", _FINITE_DEPTH,
                              "application/xml; charset=utf-8")
        _fix_conditionals(environ)
        if method == "PROPFIND":
            _propname_to_name(environ)
        return self.app(environ, start_response)

    def _bound_body(self, environ) -> bytes | None:
        """Read an XML body up front, refusing one over the limit."""
        length = environ.get("CONTENT_LENGTH") or ""
        chunked = "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower()
        if not chunked:
            try:
                n = int(length or 0)
            except ValueError:
                return None  # WsgiDAV answers a malformed Content-Length
            if n > MAX_XML_BODY:
                return f"a {environ['REQUEST_METHOD']} body may be at most {MAX_XML_BODY} " \
                       f"bytes".encode()
            return None
        body = environ["wsgi.input"].read(MAX_XML_BODY + 1)
        if len(body) > MAX_XML_BODY:
            return f"a {environ['REQUEST_METHOD']} body may be at most {MAX_XML_BODY} " \
                   f"bytes".encode()
        environ["wsgi.input"] = io.BytesIO(body)
        environ["CONTENT_LENGTH"] = str(len(body))
        environ.pop("HTTP_TRANSFER_ENCODING", None)
        return None

    def _too_deep(self, path: str) -> bool:
        try:
            attr = self.volume.stat(normalize_path(path))
        except (errors.FsError, DAVError):
            return False  # WsgiDAV answers the missing or invalid path
        return attr.is_dir and self.volume.tree.count_below(attr.ino, MAX_INFINITY_ENTRIES) \
            > MAX_INFINITY_ENTRIES


MAX_DRAIN = 1 << 30


def drain_on_error(start_response, body):
    def wrapped(status, headers, exc_info=None):
        if int(status[:3]) >= 400:
            drained = 0
            while True:
                piece = body.read(1 << 20)
                if not piece:
                    break
                drained += len(piece)
                if drained >= MAX_DRAIN:   # not worth reading: say the connection ends
                    headers = [h for h in headers if h[0].lower() != "connection"] + \
                        [("Connection", "close")]
                    break
        return start_response(status, headers, exc_info) if exc_info else \
            start_response(status, headers)
    return wrapped


def has_body(environ) -> bool:
    if "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower():
        return True
    try:
        return int(environ.get("CONTENT_LENGTH") or 0) > 0
    except ValueError:
        return False


def bad_path(environ) -> bytes | None:
    raw = environ.get("REQUEST_URI") or environ.get("PATH_INFO", "")
    for path in (unquote(raw.split("?", 1)[0]), environ.get("PATH_INFO", "")):
        if "\0" in path or "\\" in path:
            return b"a path may not contain NUL or backslash"
        if any(seg in (".", "..") for seg in path.split("/")):
            return b"a path may not contain '.' or '..' segments"
    return None


def bad_length(environ) -> bytes | None:
    value = environ.get("CONTENT_LENGTH")
    if value and not value.strip().isdigit():
        return f"invalid Content-Length {value!r}".encode()
    return None


_RANGE = re.compile(r"bytes=(\d+-\d*|-\d+)", re.I)   # range units: any case


def _check_range(environ) -> None:
    value = environ.get("HTTP_RANGE")
    if value is None:
        return
    m = _RANGE.fullmatch(value.replace(" ", ""))
    if m:
        first, _, last = m.group(1).partition("-")
        if not (first and last and int(first) > int(last)):
            return
    del environ["HTTP_RANGE"]  # not one valid byte range: serve the whole file


def reply(start_response, status: str, body: bytes | str, ctype: str = "text/plain; charset=utf-8",
          headers=(), close: bool = False):
    """A short answer made here, not by WsgiDAV (a str body is a reason: one line)."""
    if isinstance(body, str):
        body = (body + "\n").encode()
    headers = [("Content-Type", ctype), ("Content-Length", str(len(body))), *headers]
    start_response(status, headers + ([("Connection", "close")] if close else []))
    return [body]


def _fix_conditionals(environ) -> None:
    if environ.get("HTTP_IF_NONE_MATCH"):
        environ.pop("HTTP_IF_MODIFIED_SINCE", None)
    value = environ.get("HTTP_IF_MODIFIED_SINCE")
    if value:
        try:
            ts = parsedate_to_datetime(value).timestamp() + 1
            environ["HTTP_IF_MODIFIED_SINCE"] = formatdate(ts, usegmt=True)
        except (TypeError, ValueError):
            del environ["HTTP_IF_MODIFIED_SINCE"]  # unparsable: ignored, as RFC 9110 says


def _propname_to_name(environ) -> None:
    try:
        length = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        return
    if not 0 < length <= MAX_XML_BODY:
        return
    body = environ["wsgi.input"].read(length)
    if b"propname" in body:
        try:
            root = ElementTree.fromstring(body)
            if root.tag == "{DAV:}propfind" and \
                    [child.tag for child in root] == ["{DAV:}propname"]:
                body = b'<?xml version="1.0"?><D:propfind xmlns:D="DAV:"><D:name/></D:propfind>'
        except Exception:
            pass  # not well-formed, or hostile: WsgiDAV answers it with 400
    environ["wsgi.input"] = io.BytesIO(body)
    environ["CONTENT_LENGTH"] = str(len(body))
