"""HTTP/1.1 message framing for everything cheroot serves (WebDAV, REST API, metrics).

Owns where a request starts and ends on the connection: the request target's bytes, the
header block, and the body's length. cheroot 11 is lenient where leniency loses data or
lets one request hide inside another, so ``Request`` replaces its header reader and body
readers, and ``Connection`` makes cheroot use it. Everything after framing (paths,
Destination, XML, WebDAV semantics) is left to ``edge.py`` and WsgiDAV.

The rules, each a 400 followed by closing the connection unless said otherwise (RFC 9112
section numbers):
- a request target whose percent-decoded bytes are not UTF-8 (overlong forms, surrogates,
  truncated or stray bytes) is refused: names are UTF-8 (see ``utf8_path``) (3.2);
- a header line folded onto the next (obs-fold), a field name with spaces or
  non-token characters, a value with CR or NUL (5.1, 5.2);
- an HTTP/1.1 request without exactly one valid Host (3.2);
- a Content-Length that is not digits, or several that differ (6.3 item 5); identical
  duplicates ("5, 5") are one length (RFC 9110 8.6);
- Content-Length and Transfer-Encoding together (6.3 item 3, a request-smuggling shape),
  Transfer-Encoding on HTTP/1.0 (6.1), "chunked" twice or not last (6.3 item 4); an
  unknown transfer coding stays cheroot's 501;
- a singleton field (Destination, Overwrite, Depth, If, Lock-Token, ...) sent twice with
  different values: which one a proxy used is unknowable (RFC 9110 5.3).
The body is read by ``LengthBody`` or ``ChunkedBody``, which never report the end early:
a body cut off, a chunk size that is not 1 to 16 hex digits, a chunk not followed by
CRLF, an oversized chunk-size or trailer line, or a socket error or timeout while reading
raises ``core.errors.BadBody`` (400; the edge and ``PutStream`` turn it into the answer,
and the PUT is aborted), and the connection is closed after the answer. An answer given before the body was read drains the rest (up to
``MAX_DRAIN``), chunked bodies included, so the connection can be reused; a
``Connection: close`` set by the app is honoured (cheroot 11 wrote it and kept reading).

Threading: one ``Request`` per request, on its connection's worker thread; nothing shared.
"""

from __future__ import annotations

import re
import socket
import time
from urllib.parse import unquote_to_bytes

from cheroot import server

from ..core.errors import BadBody

MAX_LINE = 4096          # a chunk-size line or a trailer line
MAX_TRAILERS = 16 << 10  # all trailer lines of one body
MAX_DRAIN = 1 << 30      # what an early answer still reads to keep the connection

_TOKEN = re.compile(rb"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
_DIGITS = re.compile(rb"^[0-9]{1,19}$")
_HEX = re.compile(rb"^[0-9A-Fa-f]{1,16}$")
_HOST = re.compile(rb"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9\-._~!$&'()*+,;=%]*)(:[0-9]*)?$")
# Fields a request carries at most once; a second, different value is ambiguous.
SINGLETONS = {b"Host", b"Content-Length", b"Content-Type", b"Destination", b"Overwrite",
              b"Depth", b"If", b"Lock-Token", b"Timeout", b"Authorization", b"Range",
              b"If-Modified-Since", b"If-Unmodified-Since", b"Oc-Checksum", b"X-Oc-Mtime"}


def utf8_path(raw: bytes) -> str:
    """The one rule for names on the wire: the percent-decoded bytes of a path must be
    UTF-8 (Python's strict decoder refuses overlong forms, surrogates and truncated
    sequences). Raises ``UnicodeDecodeError`` otherwise; callers answer 400."""
    return raw.decode("utf-8", errors="strict")


class _HeaderReader(server.HeaderReader):
    """cheroot's header reader, strict about what makes a request ambiguous."""

    def __init__(self, protocol: bytes):
        self.protocol = protocol

    def __call__(self, rfile, hdict=None):
        hdict = {} if hdict is None else hdict
        seen: dict[bytes, list[bytes]] = {}
        while True:
            line = rfile.readline()
            if not line:
                raise ValueError("Illegal end of headers.")
            if line == b"\r\n":
                break
            if not line.endswith(b"\r\n"):
                raise ValueError("HTTP requires CRLF terminators")
            if line[:1] in (b" ", b"\t"):
                raise ValueError("folded header lines (obs-fold) are not accepted")
            name, sep, value = line[:-2].partition(b":")
            if not sep or not _TOKEN.match(name):
                raise ValueError(f"invalid header field name {name[:40].decode('latin-1')!r}")
            value = value.strip(b" \t")
            if b"\r" in value or b"\0" in value:
                raise ValueError(f"invalid value of header field {name.decode()}")
            key = name.title()
            seen.setdefault(key, []).append(value)
        for key, values in seen.items():
            hdict[key] = self._fold(key, values)
        _check_framing(hdict, self.protocol)
        return hdict

    @staticmethod
    def _fold(key: bytes, values: list[bytes]) -> bytes:
        if key == b"Content-Length":
            lengths = {v.strip(b" \t") for value in values for v in value.split(b",")}
            if len(lengths) != 1 or not _DIGITS.match(next(iter(lengths))):
                raise ValueError(f"invalid Content-Length {b', '.join(values)[:60].decode('latin-1')!r}")
            return lengths.pop()
        if key in SINGLETONS:
            if len(set(values)) != 1:
                raise ValueError(f"header field {key.decode()} given twice with different "
                                 f"values")
            return values[0]
        return b", ".join(values)


def _check_framing(headers: dict, protocol: bytes) -> None:
    te = headers.get(b"Transfer-Encoding")
    if te is not None:
        codings = [c.strip(b" \t").lower() for c in te.split(b",")]
        if protocol == b"HTTP/1.0":
            raise ValueError("Transfer-Encoding is not allowed in HTTP/1.0")
        if b"Content-Length" in headers:
            raise ValueError("Content-Length and Transfer-Encoding together")
        if b"chunked" in codings[:-1] or b"" in codings:
            raise ValueError(f"invalid Transfer-Encoding {te[:60].decode('latin-1')!r}")
    if protocol == b"HTTP/1.1":
        host = headers.get(b"Host")
        if host is None:
            raise ValueError("an HTTP/1.1 request needs a Host header")
        if not _HOST.match(host):
            raise ValueError(f"invalid Host {host[:60].decode('latin-1')!r}")


class _Body:
    """A request body that raises ``BadBody`` rather than end early."""

    def __init__(self, rfile, req):
        self.rfile = rfile
        self.req = req
        self.done = False
        self.failed: str | None = None
        self._pushed = b""   # read by readline past its line, handed out first

    def _fail(self, reason: str):
        self.failed = reason
        self.req.close_connection = True   # where this body ends is unknown now
        raise BadBody(reason)

    def _read_raw(self, n: int) -> bytes:
        try:
            data = self.rfile.read(n)
        except OSError as exc:   # reset, timeout: the client is gone or stalled
            self._fail(f"the request body could not be read: {exc}")
        if len(data) < n:
            self._fail("the request body was cut off before its end")
        return data

    def read(self, size: int | None = None) -> bytes:
        """Up to ``size`` bytes (all with None or -1); b"" only at the body's true end."""
        if self.failed:
            raise BadBody(self.failed)
        out, self._pushed = [self._pushed], b""
        got = len(out[0])
        want = None if size is None or size < 0 else size
        if want is not None and got > want:
            out[0], self._pushed = out[0][:want], out[0][want:]
            return out[0]
        while want is None or got < want:
            piece = self._next((want - got) if want is not None else 1 << 20)
            if not piece:
                break
            out.append(piece)
            got += len(piece)
        return b"".join(out)

    def readline(self, size: int | None = None) -> bytes:
        """One line, up to and with its LF (at most ``size`` bytes)."""
        limit = None if size is None or size < 0 else size
        line = b""
        while limit is None or len(line) < limit:
            piece = self.read(8192 if limit is None else min(8192, limit - len(line)))
            if not piece:
                break
            end = piece.find(b"\n")
            if end >= 0:
                line, self._pushed = line + piece[:end + 1], piece[end + 1:] + self._pushed
                break
            line += piece
        return line

    def drain(self, limit: int = MAX_DRAIN) -> bool:
        """Read and drop the rest; True if the body ended within ``limit`` bytes."""
        drained = 0
        try:
            while not (self.done and not self._pushed) and drained < limit:
                drained += len(self.read(1 << 20))
        except BadBody:
            return False
        return self.done

    def close(self):
        pass


class LengthBody(_Body):
    def __init__(self, rfile, req, length: int):
        super().__init__(rfile, req)
        self.left = length
        self.done = length == 0

    def _next(self, n: int) -> bytes:
        if self.left == 0:
            self.done = True
            return b""
        data = self._read_raw(min(n, self.left))
        self.left -= len(data)
        return data


class ChunkedBody(_Body):
    """RFC 9112 7.1: chunk-size in hex, optional extensions, CRLF after each chunk,
    a last chunk of size 0, trailer lines (read and dropped), and a final CRLF."""

    def __init__(self, rfile, req):
        super().__init__(rfile, req)
        self.in_chunk = 0

    def _line(self) -> bytes:
        try:
            line = self.rfile.readline(MAX_LINE + 1)
        except OSError as exc:
            self._fail(f"the request body could not be read: {exc}")
        if not line:
            self._fail("the chunked request body was cut off")
        if len(line) > MAX_LINE or not line.endswith(b"\r\n"):
            self._fail("a chunk-size or trailer line is too long or lacks CRLF")
        return line[:-2]

    def _next(self, n: int) -> bytes:
        if self.done:
            return b""
        if self.in_chunk == 0:
            size = self._line().split(b";", 1)[0].rstrip(b" \t")
            if not _HEX.match(size):
                self._fail(f"invalid chunk size {size[:20].decode('latin-1')!r}")
            self.in_chunk = int(size, 16)
            if self.in_chunk == 0:
                self._trailers()
                return b""
        data = self._read_raw(min(n, self.in_chunk))
        self.in_chunk -= len(data)
        if self.in_chunk == 0 and self._read_raw(2) != b"\r\n":
            self._fail("a chunk is not followed by CRLF")
        return data

    def _trailers(self) -> None:
        total = 0
        while line := self._line():
            total += len(line)
            if total > MAX_TRAILERS:
                self._fail("the trailer section is too large")
        self.done = True


class _Held:
    """Collects what cheroot writes for the status line and headers."""

    def __init__(self):
        self.parts: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.parts.append(data)


# A body chunk up to this size goes out in one send with the headers before it: cheroot
# flushes every write, and a second send (and a second wake-up of the client) per small
# answer cost about as much as the send itself.
COALESCE_MAX = 64 << 10


class Request(server.HTTPRequest):
    """cheroot's request with the strict framing described in the module docstring. The
    headers are held until the first body chunk (or the end of the answer) and sent with
    it."""

    _held_head = b""

    def parse_request(self):
        super().parse_request()
        if not self.ready:   # refused before its body: that body is still on the wire
            self.conn.unread_body = True

    @property
    def header_reader(self):
        return _HeaderReader(getattr(self, "request_protocol", b"HTTP/1.1"))

    def read_request_line(self):
        if not super().read_request_line():
            return False
        if self.method == b"OPTIONS" and self.path != b"*":
            # cheroot percent-decodes every method's path but OPTIONS'; one rule for all
            self.path = server.QUOTED_SLASH.join(
                unquote_to_bytes(x) for x in server.QUOTED_SLASH_REGEX.split(self.path))
        try:
            utf8_path(self.path)
        except UnicodeDecodeError:
            self.simple_response("400 Bad Request",
                                 "the request target is not valid UTF-8 once percent-decoded")
            return False
        return True

    def respond(self):
        if self.chunked_read:
            self.rfile = ChunkedBody(self.conn.rfile, self)
        else:
            self.rfile = LengthBody(self.conn.rfile, self,
                                    int(self.inheaders.get(b"Content-Length", 0)))
        self.server.gateway(self).respond()
        if self.ready:
            self.ensure_headers_sent()
        end = b"0\r\n\r\n" if self.chunked_write else b""
        head, self._held_head = self._held_head, b""
        if head or end:
            self.conn.wfile.write(head + end)

    def write(self, chunk):
        head, self._held_head = self._held_head, b""
        if not head:
            super().write(chunk)
        elif len(chunk) > COALESCE_MAX:
            self.conn.wfile.write(head)
            super().write(chunk)
        elif self.chunked_write and chunk:
            self.conn.wfile.write(b"".join((head, b"%x\r\n" % len(chunk), chunk, b"\r\n")))
        else:
            self.conn.wfile.write(head + chunk)

    def send_headers(self):
        if any(k.lower() == b"connection" and b"close" in v.lower()
               for k, v in self.outheaders):
            self.close_connection = True
        body = self.rfile
        if not self.close_connection and isinstance(body, _Body) and not body.done:
            # Answered before the body was read (an early 4xx, a 507 on quota): read the
            # rest so the next request starts where this one ends, or give up the
            # connection when that is not worth it or not possible.
            if not body.drain():
                self.close_connection = True
        if isinstance(body, _Body) and not body.done:
            self.conn.unread_body = True
        wfile, held = self.conn.wfile, _Held()
        self.conn.wfile = held        # this connection's thread only, for this one call
        try:
            super().send_headers()
        finally:
            self.conn.wfile = wfile
        self._held_head = b"".join(held.parts)


class Connection(server.HTTPConnection):
    """Closes after an unread body the way RFC 9112 9.6 asks: half-close, then read and
    drop what the client still sends for a moment. Closing a socket with unread input
    makes the kernel send a reset, and the client can lose the answer it was sent."""

    RequestHandlerClass = Request
    unread_body = False
    LINGER_SECONDS = 2
    LINGER_BYTES = 1 << 20

    def close(self):
        if self.unread_body:
            self._linger()
        super().close()

    def _linger(self):
        try:
            self.wfile.flush()
            self.socket.shutdown(socket.SHUT_WR)
            deadline = time.monotonic() + self.LINGER_SECONDS
            dropped = 0
            while dropped < self.LINGER_BYTES and (left := deadline - time.monotonic()) > 0:
                self.socket.settimeout(left)
                piece = self.socket.recv(65536)
                if not piece:
                    break
                dropped += len(piece)
        except OSError:
            pass   # the client is gone: nothing left to protect
