"""The edge of the WebDAV face: checks and fixes applied to a request before WsgiDAV
parses it. Owns no state; answers a bad request itself with a 4xx and a one-line reason.

Where each error case of RFC 9110/9112 and RFC 4918 is decided, for every method served
(GET HEAD PUT DELETE OPTIONS MKCOL PROPFIND PROPPATCH COPY MOVE LOCK UNLOCK):

Before WsgiDAV, in the HTTP layer (``web/http.py``, every face; 400 then close unless noted):
- request target not UTF-8 once percent-decoded, OPTIONS included (RFC 3986 2.5; the
  one rule for names, also applied to Destination below);
- obs-fold, a field name with spaces or non-token characters, CR or NUL in a value
  (RFC 9112 5.1, 5.2); HTTP/1.1 without exactly one valid Host (RFC 9112 3.2);
- Content-Length not digits or several that differ (RFC 9112 6.3 item 5, RFC 9110 8.6);
  Content-Length with Transfer-Encoding, Transfer-Encoding on HTTP/1.0, chunked twice or
  not last (RFC 9112 6.1, 6.3 items 3-4); an unknown transfer coding: 501 (RFC 9112 6.1);
- a singleton field (Destination, Overwrite, Depth, If, Lock-Token, ...) twice with
  different values (RFC 9110 5.3);
- a body cut off, a bad chunk size, chunk data without CRLF, oversized chunk or trailer
  lines, a socket error or timeout: ``BadBody``, 400, never published, then close
  (RFC 9112 6.3 item 6, 7.1); trailers are read and dropped (RFC 9112 7.1.2);
- a body left unread by an early answer is drained (up to 1 GiB) so the connection stays
  usable, or the connection is closed with a lingering close (RFC 9112 9.6);
- cheroot already answers: request line malformed (400), URI too long (414), header block
  over 64 KiB (413), HTTP/2+ request line (505), absolute-form targets (RFC 9112 3.2.2).
Here, before WsgiDAV:
- a path with a '.' or '..' segment, a backslash or NUL, also percent-encoded: 400
  (RFC 3986 5.2.4; WsgiDAV would fold '/d/%2e%2e%2f' into another path);
- COPY/MOVE without Destination, or one that is not an absolute URI or absolute path
  (spaces, raw '?' or '#', '//host', not UTF-8, dot segments): 400 (RFC 4918 9.8.5,
  9.9.4, 10.3); another host or scheme stays WsgiDAV's 502 (RFC 4918 9.8.5);
- every body but PUT's is read whole here, at most 1 MiB (413, RFC 9110 15.5.14), so a
  failed read is a 400 here and never a 500 inside WsgiDAV;
- PUT with a Content-Encoding other than identity: 415 with Accept-Encoding: identity
  (RFC 9110 8.4, 12.5.3; WsgiDAV said 501);
- PUT with neither Content-Length nor chunked Transfer-Encoding: 411 (RFC 9110 15.5.12).
  HTTP frames such a body as empty (RFC 9112 6.3), so a proxy that dropped the header, or
  a blank line slipped into the head, would otherwise replace the file with nothing;
  every client we serve sends one of the two (Content-Length: 0 for an empty file);
- a Range header that is not one well-formed byte range is ignored (RFC 9110 14.2), so
  the client gets the whole file rather than a wrong slice;
- PROPFIND with Depth: infinity on a subtree of more than 10 000 entries is a 403 with
  DAV:propfind-finite-depth (RFC 4918 9.1), instead of a response of unbounded size.
Fixes for WsgiDAV 4.4, here:
- If-None-Match present: If-Modified-Since is dropped, as RFC 9110 13.1.3 requires
  (WsgiDAV answered 412 to a GET carrying both, which broke davfs2's revalidation);
- If-Modified-Since alone: WsgiDAV gives 304 only when the date is *later* than
  Last-Modified; RFC 9110 13.1.3 wants it also when equal. Last-Modified has whole
  seconds, so moving the date one second on gives exactly the RFC's answer;
- PROPFIND <propname/>: WsgiDAV looks for a non-standard <name/> element instead, and
  answered property-name requests with nothing (RFC 4918 9.1).
Inside WsgiDAV, patched (``app.py``, ``xmlsafe.py``):
- XML bodies are parsed by defusedxml whatever is installed: entity declarations and
  external references are a 400 (RFC 4918 20.6, 20.7);
- Destination is parsed by ``split_destination`` (names with %3F, %3B survive);
- COPY/MOVE evaluate untagged If lists and If-Match & co. on the Request-URI only
  (RFC 4918 10.4.2, RFC 9110 13); a destination locked by another is still 423
  (RFC 4918 7.4, 9.9.4).
After WsgiDAV, in the provider (``provider.py``, ``core``): names over 255 bytes 414,
invalid names 400, quota and full local disk 507 (RFC 4918 11.5), store outage 503,
a missing parent 409 (RFC 4918 9.3.1, 9.7.1), DELETE of locked members 423 (9.6.1).
Left to WsgiDAV as it answers correctly: unknown methods 405, bad Depth 400 (9.1, 9.8.3,
9.9.2), Overwrite other than T/F 400 (10.6), Overwrite: F onto an existing target 412
(9.8.5), MKCOL with a body 415 (9.3.1), MKCOL on an existing name 405, PUT on a
collection 405, Content-Range on PUT 400 (RFC 9110 9.3.4), copy/move onto itself or
below itself 403, UNLOCK without Lock-Token 400, range not satisfiable 416 (RFC 9110
15.5.17). Accepted by choice: a LOCK Timeout it cannot parse gets the default timeout
(RFC 4918 10.7 lets the server choose), an Expect other than 100-continue is ignored
(RFC 9110 10.1.1: MAY 417), a lower-case method is cheroot's 400.
"""

from __future__ import annotations

import io
import re
from email.utils import formatdate, parsedate_to_datetime

from urllib.parse import unquote_to_bytes

from defusedxml import ElementTree
from wsgidav.dav_error import DAVError

from ..core import errors
from ..web.http import utf8_path
from ..web.wsgi import bad_path, bad_segments, reply
from .provider import normalize_path
from .propfind import streamed_propfind

MAX_BODY = 1 << 20
MAX_INFINITY_ENTRIES = 10_000

_FINITE_DEPTH = (b'<?xml version="1.0" encoding="utf-8"?>\n<D:error xmlns:D="DAV:">'
                 b"<D:propfind-finite-depth/></D:error>")


class Edge:
    def __init__(self, app, volume, provider=None):
        self.app = app
        self.wsgidav_app = app
        self.volume = volume
        self.provider = provider

    def __call__(self, environ, start_response):
        self.volume.request()   # uploads wait for a pause in requests (upload_delay)
        try:
            return self._guard(environ, start_response)
        except errors.BadBody as exc:   # read up front below; http.py closes after
            return reply(start_response, "400 Bad Request", str(exc), close=True)

    def _guard(self, environ, start_response):
        method = environ.get("REQUEST_METHOD", "")
        refused = bad_path(environ)
        if refused:
            return reply(start_response, "400 Bad Request", refused)
        if method in ("COPY", "MOVE"):
            refused = bad_destination(environ)
            if refused:
                return reply(start_response, "400 Bad Request", refused)
        if method == "PUT" and environ.get("HTTP_CONTENT_ENCODING", "identity").strip() \
                .lower() != "identity":
            return reply(start_response, "415 Unsupported Media Type",
                         "content codings are not supported on PUT; send the bytes as they "
                         "are", headers=[("Accept-Encoding", "identity")])
        if method == "PUT" and not has_length(environ):
            return reply(start_response, "411 Length Required",
                         "a PUT needs Content-Length (0 for an empty file) or "
                         "Transfer-Encoding: chunked")
        environ.pop("HTTP_CONTENT_ENCODING", None)   # identity: WsgiDAV refuses any value
        _check_range(environ)
        if method != "PUT":
            refused = read_body(environ)
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
            if self.provider is not None:   # Depth 0/1 streamed, in flat memory
                streamed = streamed_propfind(self.provider, self.app.config, self.volume,
                                             environ, start_response)
                if streamed is not None:
                    return streamed
        return self.app(environ, start_response)

    def _too_deep(self, path: str) -> bool:
        try:
            attr = self.volume.stat(normalize_path(path))
        except (errors.FsError, DAVError):
            return False  # WsgiDAV answers the missing or invalid path
        return attr.is_dir and self.volume.count_below(attr.ino, MAX_INFINITY_ENTRIES) \
            > MAX_INFINITY_ENTRIES


def has_length(environ) -> bool:
    """Whether a request declares its body: Content-Length, or chunked."""
    return bool(environ.get("CONTENT_LENGTH")) or \
        "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower()


def read_body(environ) -> bytes | None:
    """Read the body of any request but PUT whole, up to ``MAX_BODY``, so that a body
    that is cut off or badly framed fails here (``BadBody``), never inside WsgiDAV's XML
    parsing or COPY/MOVE, where it would be a 500. Only PUT streams its body."""
    body = environ["wsgi.input"].read(MAX_BODY + 1)
    if len(body) > MAX_BODY:
        return f"a {environ['REQUEST_METHOD']} body may be at most {MAX_BODY} bytes".encode()
    environ["wsgi.input"] = io.BytesIO(body)
    environ["CONTENT_LENGTH"] = str(len(body))
    environ.pop("HTTP_TRANSFER_ENCODING", None)
    return None


# RFC 4918 10.3: Destination = Simple-ref = absolute-URI / path-absolute [ "?" query ]
_DESTINATION = re.compile(r"^(?:(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*)://(?P<netloc>[^/?#]*))?"
                          r"(?P<path>/[^?#]*)$")


def split_destination(value: str) -> tuple[str, str, str]:
    """(scheme, host, path) of a Destination header, the path percent-decoded once.

    The one parser of Destination (``app.py`` hands it to WsgiDAV). Refused with
    ``ValueError``: anything but an absolute URI or an absolute path; spaces and control
    characters (a URI has none); a raw '?' or '#' (the name would be cut there: send
    %3F, %23); a path that is not UTF-8 once decoded (``http.utf8_path``, the rule of
    request targets) or that has '.', '..', NUL or backslash segments. ``value`` is the
    header as WSGI gives it: its bytes as Latin-1 characters."""
    if any(c <= " " or c == "\x7f" for c in value):
        raise ValueError("Destination may not contain spaces or control characters")
    m = _DESTINATION.match(value)
    if not m or value.startswith("//"):   # '//host/x' is no path-absolute
        raise ValueError("Destination must be an absolute URI of this server or an "
                         "absolute path, with '?' and '#' in names sent as %3F and %23")
    try:
        path = utf8_path(unquote_to_bytes(m["path"].encode("latin-1")))
    except UnicodeDecodeError:
        raise ValueError("Destination is not valid UTF-8 once percent-decoded") from None
    refused = bad_segments(path)
    if refused:
        raise ValueError(refused)
    return (m["scheme"] or "").lower(), (m["netloc"] or "").lower(), path


def bad_destination(environ) -> bytes | None:
    """A COPY or MOVE needs a usable Destination (RFC 4918 9.8, 9.9, 10.3): a 400
    otherwise, before WsgiDAV (which answered 500 without one, and moved a collection to
    a root entry named 'not a url'). Another host stays WsgiDAV's 502."""
    value = environ.get("HTTP_DESTINATION")
    if not value:
        return f"{environ['REQUEST_METHOD']} needs a Destination header".encode()
    try:
        split_destination(value)
    except ValueError as exc:
        return str(exc).encode()
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
    if not 0 < length <= MAX_BODY:
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
