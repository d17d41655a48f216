"""Connections before they reach a worker: cheroot's connection manager, changed so that a
socket costs a worker thread only once a whole request head has arrived.

cheroot 11 hands every new connection to a worker at once, and the worker then blocks on
the request line (and, with TLS, the selector thread blocks on the handshake) for up to the
socket timeout; 32 sockets that send nothing, or send a header a byte at a time, took every
worker and the gateway answered nobody. Here the selector thread does the waiting, for any
number of sockets at the price of a file descriptor each:

- a new connection is accepted without blocking, its TLS handshake done without blocking,
  and its bytes read without blocking into ``conn.head`` until the head ends (a blank line)
  or passes the header limit; only then does it go to a worker, with those bytes in front
  of its reader (``_Ahead``), and cheroot parses the request as before;
- a kept-alive connection goes back to the selector the same way between requests;
- ``header_timeout`` bounds the time from accepting a connection (or from the first byte of
  a next request) to the end of its head; ``timeout`` (cheroot's) bounds the idle time
  between requests and each read of a body; connections past either are closed;
- ``max_connections`` open connections in all, and ``per_address`` from one client address:
  connections past them are closed at once, unanswered.

What this does not bound: a request body sent slowly holds its worker (each read waits at
most ``timeout``); that needs a request with a complete head, and the gate reads bodies
only for requests it answers.

Threading: the selector thread runs ``_run`` (accept, handshake, read ahead, expire);
workers call ``put`` after a request. ``_lock`` guards the counts (connections close in
either thread); a connection is in the selector or with a worker, never both.
"""

from __future__ import annotations

import io
import logging
import selectors
import socket
import ssl
import threading
import time

from cheroot import connections
from cheroot.makefile import StreamReader, StreamWriter

from .http import Connection

log = logging.getLogger(__name__)

HEAD_END = b"\r\n\r\n"
READ_SIZE = 64 * 1024


class _Ahead(io.RawIOBase):
    """A socket's reading side with the bytes the selector thread read ahead in front."""

    def __init__(self, sock):
        self.ahead = b""
        self._io = socket.SocketIO(sock, "rb")

    def readable(self) -> bool:
        return True

    def readinto(self, buf) -> int | None:
        if self.ahead:
            n = min(len(buf), len(self.ahead))
            buf[:n] = self.ahead[:n]
            self.ahead = self.ahead[n:]
            return n
        return self._io.readinto(buf)

    def close(self) -> None:
        self._io.close()
        super().close()


class _Reader(StreamReader):
    def __init__(self, sock, mode="rb", bufsize=io.DEFAULT_BUFFER_SIZE):  # noqa: D107
        super(StreamReader, self).__init__(_Ahead(sock), bufsize)
        self.bytes_read = 0


def _make_file(sock, mode="r", bufsize=io.DEFAULT_BUFFER_SIZE):
    return _Reader(sock, mode, bufsize) if "r" in mode else StreamWriter(sock, mode, bufsize)


class GuardedConnection(Connection):
    """The strict-framing connection (http.py), which tells its manager when it closes
    (once)."""

    manager = None
    host = ""

    def close(self):
        manager, self.manager = self.manager, None
        try:
            super().close()
        finally:
            if manager is not None:
                manager.release(self.host)


class GuardedConnections(connections.ConnectionManager):
    def __init__(self, server, header_timeout: float, max_connections: int,
                 per_address: int):
        super().__init__(server)
        self.header_timeout = header_timeout
        self.max_connections = max_connections
        self.per_address = per_address
        self._lock = threading.Lock()
        self._open = 0                          # guarded by _lock
        self._by_host: dict[str, int] = {}      # guarded by _lock

    # -- counting --

    def _admit(self, host: str) -> bool:
        with self._lock:
            if self._open >= self.max_connections or \
                    self._by_host.get(host, 0) >= self.per_address:
                return False
            self._open += 1
            self._by_host[host] = self._by_host.get(host, 0) + 1
            return True

    def release(self, host: str) -> None:
        with self._lock:
            self._open -= 1
            left = self._by_host.get(host, 1) - 1
            if left:
                self._by_host[host] = left
            else:
                self._by_host.pop(host, None)

    # -- the selector thread --

    def _run(self, expiration_interval):
        last_expiry = time.monotonic()
        while not self._stop_requested:
            try:
                ready = list(self._selector.select(timeout=expiration_interval))
            except OSError:
                self._remove_invalid_sockets()
                continue
            for fd, conn in ready:
                if conn is self.server:
                    self._accept()
                else:
                    self._advance(fd, conn)
            now = time.monotonic()
            if now - last_expiry > expiration_interval:
                self._expire(now)
                last_expiry = now

    def _accept(self) -> None:
        try:
            sock, addr = self.server.socket.accept()
        except OSError:       # the client gave up already, or no descriptor is left
            return
        host = addr[0] if isinstance(addr, tuple) else ""
        if not self._admit(host):
            log.debug("connection from %s refused: too many connections", host)
            sock.close()
            return
        try:
            connections.prevent_socket_inheritance(sock)
            sock.setblocking(False)
            handshaking = self.server.ssl_adapter is not None
            if handshaking:
                sock = self.server.ssl_adapter.context.wrap_socket(
                    sock, server_side=True, do_handshake_on_connect=False)
            conn = self.server.ConnectionClass(self.server, sock, _make_file)
        except Exception:
            self.release(host)
            sock.close()
            raise
        conn.manager, conn.host = self, host
        conn.remote_addr, conn.remote_port = (addr[0], addr[1]) if host else ("", 0)
        conn.ssl_env = {}
        conn.handshaking = handshaking
        conn.head, conn.waiting_since = b"", time.monotonic()
        conn.last_used = time.time()
        self._selector.register(sock.fileno(), selectors.EVENT_READ, data=conn)

    def _advance(self, fd: int, conn) -> None:
        """Move a connection on with what arrived: the handshake, then the head."""
        if conn.handshaking:
            try:
                conn.socket.do_handshake()
            except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
                return
            except (ssl.SSLError, OSError) as exc:
                log.debug("TLS handshake with %s failed: %s", conn.host, exc)
                self._drop(fd, conn)
                return
            conn.handshaking = False
            conn.ssl_env = self.server.ssl_adapter.get_environ(conn.socket)
        if not self._read_ahead(conn):
            self._drop(fd, conn)
        elif self._head_done(conn):
            self._selector.unregister(fd)
            self._dispatch(conn)

    def _read_ahead(self, conn) -> bool:
        """Read what is there without waiting; False when the peer closed or failed."""
        while True:
            try:
                data = conn.socket.recv(READ_SIZE)
            except (BlockingIOError, InterruptedError, ssl.SSLWantReadError,
                    ssl.SSLWantWriteError):
                return True
            except OSError:
                return False
            if not data:
                return False
            if not conn.head:
                conn.waiting_since = time.monotonic()
            conn.head += data
            if self._head_done(conn):
                return True

    def _head_done(self, conn) -> bool:
        return HEAD_END in conn.head or \
            len(conn.head) > self.server.max_request_header_size + READ_SIZE

    def _dispatch(self, conn) -> None:
        conn.rfile.raw.ahead, conn.head = conn.head, b""
        conn.socket.settimeout(self.server.timeout)
        self.server.process_conn(conn)

    def _drop(self, fd: int, conn) -> None:
        self._selector.unregister(fd)
        conn.close()

    def _expire(self, now: float) -> None:
        """Close connections whose head is late, and kept-alive ones idle too long."""
        idle_since = time.time() - self.server.timeout
        for fd, conn in list(self._selector.connections):
            if conn is self.server:
                continue
            fresh = conn.requests_seen == 0 or conn.head or conn.handshaking
            if (fresh and now - conn.waiting_since > self.header_timeout) or \
                    (not fresh and conn.last_used < idle_since):
                self._drop(fd, conn)

    # -- workers --

    def put(self, conn) -> None:
        """A worker is done with a kept-alive connection: wait for its next head here."""
        conn.last_used = time.time()
        conn.requests_seen = max(conn.requests_seen, 1)
        buffered = conn.rfile.read1(READ_SIZE) if conn.rfile.has_data() else b""
        conn.head, conn.rfile.raw.ahead = buffered + conn.rfile.raw.ahead, b""
        conn.waiting_since = time.monotonic()
        conn.socket.setblocking(False)
        if self._head_done(conn):   # pipelined: the next head came with the last body
            self._dispatch(conn)
        elif not self._read_ahead(conn):
            conn.close()
        elif self._head_done(conn):
            self._dispatch(conn)
        else:
            self._selector.register(conn.socket.fileno(), selectors.EVENT_READ, data=conn)
