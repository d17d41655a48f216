"""The HTTP server of every face: cheroot's WSGI server with razordav's connection manager
(``conns.py``) and framing (``http.py``), the security headers and the HEAD rule.

``serve_forever`` runs until SIGTERM/SIGINT, then stops accepting and lets requests in
flight finish; closing the apps and volumes is the caller's.
"""

from __future__ import annotations

import collections
import logging
import signal
import threading

from cheroot import wsgi

from .conns import GuardedConnection, GuardedConnections
from .wsgi import head_without_body, with_security_headers

log = logging.getLogger(__name__)

MAX_HEADER_BYTES = 64 * 1024


class _AffineQueue:
    """cheroot's queue of connections for its workers, handing each one to the worker that
    became idle last (cheroot's ``queue.Queue`` wakes the one idle longest).

    Why: every worker thread has its own SQLite connection, whose page cache is only valid
    while no other connection wrote. Round-robin over 32 workers sent each request of a
    keep-alive client to a connection that had to read its pages again (31 more read
    calls per small PUT than with one worker); the worker that just answered keeps them.
    Unbounded, as cheroot's default; ``put``'s ``block`` and ``timeout`` have nothing to
    wait for. Threading: ``_lock`` guards ``_items`` and ``_idle``.
    """

    def __init__(self):
        self._lock = threading.Lock()
        self._items: collections.deque = collections.deque()   # waiting for a worker
        self._idle: list[list] = []   # workers waiting, the last one idle last: [event, item]

    def put(self, obj, block: bool = True, timeout: float | None = None) -> None:
        with self._lock:
            if not self._idle:
                self._items.append(obj)
                return
            slot = self._idle.pop()
        slot[1] = obj
        slot[0].set()

    def get(self):
        with self._lock:
            if self._items:
                return self._items.popleft()
            slot = [threading.Event(), None]
            self._idle.append(slot)
        slot[0].wait()
        return slot[1]

    def qsize(self) -> int:
        return len(self._items)


class _GuardedServer(wsgi.Server):
    """cheroot's WSGI server with ``conns.GuardedConnections``: workers get requests whose
    head has arrived, not sockets (see conns.py for why)."""

    ConnectionClass = GuardedConnection

    def __init__(self, *args, limits: dict, **kw):
        super().__init__(*args, **kw)
        self.limits = limits
        self.requests._queue = _AffineQueue()   # see there; cheroot binds ``get`` at init
        self.requests.get = self.requests._queue.get
        # cheroot stops keeping connections alive past this many in its selector; the
        # limits above bound that number already
        self.keep_alive_conn_limit = limits["max_connections"]

    def prepare(self):
        super().prepare()
        plain = self._connections
        self._connections = GuardedConnections(self, **self.limits)
        plain._selector.close()


class Server:
    """A cheroot server over the app, on ``host:port`` (port 0: any free port).

    ``timeout``: idle seconds between requests, and for each read of a body;
    ``header_timeout``: seconds from accepting a connection (or from the first byte of a
    next request) to the end of the request head; ``max_connections`` in all and
    ``per_address`` from one client address (those past them are closed unanswered)."""

    def __init__(self, app, host: str = "127.0.0.1", port: int = 8080, threads: int = 32,
                 queue: int = 128, timeout: float = 60, tls: tuple[str, str] | None = None,
                 header_timeout: float = 10, max_connections: int = 1000,
                 per_address: int = 64):
        limits = {"header_timeout": header_timeout, "max_connections": max_connections,
                  "per_address": per_address}
        app = with_security_headers(head_without_body(app))
        self.httpd = _GuardedServer((host, port), app, numthreads=threads,
                                    request_queue_size=queue, timeout=int(timeout),
                                    shutdown_timeout=30, server_name="razordav",
                                    limits=limits)
        if tls is not None:   # (certificate, key) PEM files; cheroot's ssl-module adapter
            from cheroot.ssl.builtin import BuiltinSSLAdapter
            self.httpd.ssl_adapter = BuiltinSSLAdapter(*tls)
        self.scheme = "https" if tls else "http"
        self.httpd.max_request_header_size = MAX_HEADER_BYTES  # cheroot: 413 past it
        self.httpd.prepare()  # binds now, so a port in use fails here with OSError
        self.host, self.port = self.httpd.bind_addr[:2]

    def serve_forever(self) -> None:
        stop = threading.Event()

        def on_signal(signum, _frame):
            log.info("signal %d: finishing requests in flight", signum)
            stop.set()
            threading.Thread(target=self.httpd.stop, daemon=True).start()

        old = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
        try:
            self.httpd.serve()
        finally:
            for s, h in old.items():
                signal.signal(s, h)

    def stop(self) -> None:
        self.httpd.stop()
