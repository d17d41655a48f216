"""Assembles the WebDAV face: WsgiDAV configured over ``RazorProvider``, served by cheroot.

Owns the WsgiDAV configuration and the HTTP server's tuning (threads, queue, timeouts);
``serve`` runs until SIGTERM/SIGINT, then stops accepting, lets requests in flight finish,
and leaves closing the volume to the caller.
"""

from __future__ import annotations

import io
import logging
import signal
import threading

from cheroot import wsgi
from wsgidav.wsgidav_app import WsgiDAVApp

from .locks import SqliteLockStorage
from .provider import RazorProvider

log = logging.getLogger(__name__)


def make_app(volume, *, lock_db: str | None = None, verbose: int = 1) -> WsgiDAVApp:
    config = {
        "provider_mapping": {"/": RazorProvider(volume)},
        "lock_storage": SqliteLockStorage(lock_db or str(volume.data_dir / "locks.sqlite")),
        "property_manager": None,  # dead properties live in the tree, per inode
        "http_authenticator": {"domain_controller": None, "accept_basic": True,
                               "accept_digest": False, "default_to_digest": False},
        "simple_dc": {"user_mapping": {"*": True}},  # anonymous; auth comes with the service layer
        "dir_browser": {"enable": True, "response_trailer": "razordav"},
        "hotfixes": {"emulate_win32_lastmod": True},
        "honor_mtime_header": False,  # X-OC-Mtime is applied in the same commit as the PUT
        "verbose": verbose,
        "logging": {"enable": False, "enable_loggers": []},
        "block_size": 1 << 20,
        "add_header_MS_Author_Via": True,
    }
    return _fix_if_modified_since(WsgiDAVApp(config))


def _fix_if_modified_since(app):
    """Request fixes for WsgiDAV 4.4, applied before it sees the request:

    - If-None-Match present: If-Modified-Since is dropped, as RFC 9110 13.1.3 requires
      (WsgiDAV answers 412 to a GET carrying both, which breaks davfs2's revalidation).
    - If-Modified-Since alone: WsgiDAV gives 304 only when the date is *later* than
      Last-Modified; RFC 9110 wants it also when equal. Last-Modified has whole seconds,
      so moving the date one second on gives exactly the RFC's answer.
    - PROPFIND <propname/>: WsgiDAV looks for a non-standard <name/> element instead, and
      answered property-name requests with nothing.
    """
    from email.utils import formatdate, parsedate_to_datetime

    def wrapped(environ, start_response):
        if environ.get("HTTP_IF_NONE_MATCH"):
            environ.pop("HTTP_IF_MODIFIED_SINCE", None)
        value = environ.get("HTTP_IF_MODIFIED_SINCE")
        if value:
            try:
                ts = parsedate_to_datetime(value).timestamp() + 1
                environ["HTTP_IF_MODIFIED_SINCE"] = formatdate(ts, usegmt=True)
            except (TypeError, ValueError):
                del environ["HTTP_IF_MODIFIED_SINCE"]  # unparsable: ignore, as RFC 9110 says
        if environ.get("REQUEST_METHOD") == "PROPFIND":
            _propname_to_name(environ)
        return app(environ, start_response)

    wrapped.wsgidav_app = app
    return wrapped


_MAX_PROPFIND_BODY = 1 << 20


def _propname_to_name(environ) -> None:
    try:
        length = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        return  # WsgiDAV answers the bad header
    if not 0 < length <= _MAX_PROPFIND_BODY:
        return
    body = environ["wsgi.input"].read(length)
    if b"propname" in body:
        from defusedxml import ElementTree
        try:
            root = ElementTree.fromstring(body)
            if root.tag == "{DAV:}propfind" and \
                    [child.tag for child in root] == ["{DAV:}propname"]:
                body = b'<?xml version="1.0"?><D:propfind xmlns:D="DAV:"><D:name/></D:propfind>'
        except Exception:
            pass  # not well-formed (or hostile): WsgiDAV answers it with 400
    environ["wsgi.input"] = io.BytesIO(body)
    environ["CONTENT_LENGTH"] = str(len(body))


def _patch_wsgidav_destination() -> None:
    """WsgiDAV 4.4 unquotes the whole Destination header and then splits it as a URL, so a
    name with '?' or ';' (sent as %3F, %3B) lost everything after it: MOVE to
    'report%3Fv2.txt' replaced 'report'. Its request_server uses unquote and urlparse for
    that header only; these replacements split the raw header first, take everything after
    the host as the path, and unquote that once."""
    from urllib.parse import unquote as _unquote, urlparse as _urlparse

    from wsgidav import request_server

    def keep(url):
        return url

    def parse_destination(url, scheme="", allow_fragments=True):
        parts = _urlparse(url, allow_fragments=False)
        path = parts.path + (";" + parts.params if parts.params else "") + \
            ("?" + parts.query if parts.query else "")
        return parts._replace(path=_unquote(path), params="", query="")

    request_server.unquote = keep
    request_server.urlparse = parse_destination


_patch_wsgidav_destination()


def close_app(app) -> None:
    """Commit and close what the app keeps on disk (the lock table)."""
    lock_manager = app.wsgidav_app.lock_manager
    if lock_manager is not None:
        lock_manager.storage.close()


class Server:
    """A cheroot server over the app, on ``host:port`` (port 0: any free port)."""

    def __init__(self, app, host: str = "127.0.0.1", port: int = 8080, threads: int = 32,
                 queue: int = 128, timeout: float = 60):
        self.httpd = wsgi.Server((host, port), app, numthreads=threads,
                                 request_queue_size=queue, timeout=int(timeout),
                                 shutdown_timeout=30, server_name="razordav")
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
