"""Assembles the WebDAV face: WsgiDAV configured over ``RazorProvider``, with razordav's
patches to WsgiDAV. The HTTP server that serves it (and every other face) is
``web/server.py``.
"""

from __future__ import annotations

import logging
import re
import time

from wsgidav import util
from wsgidav.wsgidav_app import WsgiDAVApp

from .dc import TrustedDC
from .edge import Edge
from .locks import LOCK_DB, AtomicLock, SqliteLockStorage, lock_checker
from .provider import RazorProvider

log = logging.getLogger(__name__)


def make_app(volume, *, lock_db: str | None = None, verbose: int = 1,
             trusted_user_key: str | None = None, lock_timeout_max: int = 3600) -> Edge:
    """The WebDAV app over ``volume``. With ``trusted_user_key`` (the service gate), the
    caller is already authenticated and its user name is in that environ key: WsgiDAV takes
    it as the principal, which lock tokens are bound to. Without it, anonymous access."""
    if trusted_user_key:
        auth = {"domain_controller": TrustedDC, "trusted_auth_header": trusted_user_key}
    else:
        auth = {"domain_controller": None}   # anonymous: simple_dc's "*"
    provider = RazorProvider(volume)
    locks = SqliteLockStorage(lock_db or str(volume.data_dir / LOCK_DB),
                              max_timeout=lock_timeout_max)
    config = {
        "provider_mapping": {"/": provider},
        "lock_storage": locks,
        "property_manager": None,  # dead properties live in the tree, per inode
        "http_authenticator": {**auth, "accept_basic": True, "accept_digest": False,
                               "default_to_digest": False},
        "simple_dc": {"user_mapping": {"*": True}},
        "dir_browser": {"enable": True, "response_trailer": "razordav"},
        "hotfixes": {"emulate_win32_lastmod": True},
        "honor_mtime_header": False,  # X-OC-Mtime is applied in the same commit as the PUT
        "verbose": verbose,
        "logging": {"enable": False, "enable_loggers": []},
        "block_size": 1 << 20,
        "add_header_MS_Author_Via": True,
    }
    dav = WsgiDAVApp(config)
    # Faces that send no lock tokens (the mount of ``serve --mount``) honour these locks.
    volume.lock_check = lock_checker(dav.lock_manager)
    return Edge(AtomicLock(dav, locks), volume, provider)


def _patch_wsgidav_destination() -> None:
    """WsgiDAV 4.4 unquotes the whole Destination header and then splits it as a URL, so a
    name with '?' or ';' (sent as %3F, %3B) lost everything after it, and a path that is
    not UTF-8 became U+FFFD. Its request_server uses unquote and urlparse for that header
    only; these replacements hand it ``edge.split_destination``, the one parser of that
    header (the edge has refused what it cannot parse)."""
    from urllib.parse import ParseResult

    from wsgidav import request_server
    from wsgidav.dav_error import HTTP_BAD_REQUEST, DAVError

    from .edge import split_destination

    def keep(url):
        return url

    def parse_destination(url, scheme="", allow_fragments=True):
        try:
            scheme, host, path = split_destination(url)
        except ValueError as exc:
            raise DAVError(HTTP_BAD_REQUEST, context_info=str(exc)) from None
        return ParseResult(scheme, host, path, "", "", "")

    request_server.unquote = keep
    request_server.urlparse = parse_destination


def _patch_wsgidav_destination_conditions() -> None:
    """WsgiDAV 4.4 evaluates a COPY's or MOVE's conditions against the destination too:
    the untagged If lists and If-Match & co. RFC 4918 10.4.2 applies an untagged list to
    the Request-URI only (and RFC 9110 13 its conditionals to the target resource), so
    Office's second save, MOVE temp -> document with Overwrite: T and If: (<temp's
    token>), answered 412. For the destination only lists tagged with its URL count now;
    a destination locked by someone else is still refused by the lock check (423)."""
    from wsgidav.request_server import RequestServer

    evaluate = RequestServer._evaluate_if_headers
    request_only = ("HTTP_IF_MATCH", "HTTP_IF_NONE_MATCH", "HTTP_IF_MODIFIED_SINCE",
                    "HTTP_IF_UNMODIFIED_SINCE")

    def evaluate_per_resource(self, res, environ):
        if res is None or environ.get("REQUEST_METHOD") not in ("COPY", "MOVE") or \
                res.path.rstrip("/") == environ["PATH_INFO"].rstrip("/"):
            return evaluate(self, res, environ)
        util.parse_if_header_dict(environ)
        tagged = {url: lists for url, lists in (environ["wsgidav.conditions.if"] or {}).items()
                  if url != "*"}
        dest_env = {k: v for k, v in environ.items() if k not in request_only}
        dest_env["wsgidav.conditions.if"] = tagged
        if not tagged:
            dest_env.pop("HTTP_IF", None)
        return evaluate(self, res, dest_env)

    RequestServer._evaluate_if_headers = evaluate_per_resource


_patch_wsgidav_destination()
_patch_wsgidav_destination_conditions()


def _patch_wsgidav_error_pages() -> None:
    """WsgiDAV's error page for an unexpected exception showed the exception's text
    (a parser's message, a path, SQL) to the client. A 5xx page says only its status;
    the exception goes to the log."""
    from wsgidav import dav_error

    shown = dav_error.DAVError.get_user_info

    def get_user_info(self):
        if self.value >= 500 and self.src_exception is not None:
            log.error("%s: %s: %s", self.value, type(self.src_exception).__name__,
                      self.src_exception)
            return dav_error.ERROR_DESCRIPTIONS.get(self.value, str(self.value))
        return shown(self)

    dav_error.DAVError.get_user_info = get_user_info


_patch_wsgidav_error_pages()


def _patch_wsgidav_success_pages() -> None:
    """Cheaper answers, the same to a client. Every answer's Date header is formatted once a
    second, not per request; the small HTML page WsgiDAV sends with a 200 or 201 (every PUT)
    is built once per status instead of per request, without the server's clock in it (the
    Date header says when)."""
    from wsgidav import dav_error

    format_time = util.get_rfc1123_time
    now_text = [(None, "")]     # one (second, text) pair, replaced whole: no lock needed

    def get_rfc1123_time(secs=None):
        if secs is not None:
            return format_time(secs)
        second = int(time.time())
        cached = now_text[0]
        if cached[0] != second:
            cached = now_text[0] = (second, format_time(second))
        return cached[1]

    built = dav_error.DAVError.get_response_page
    pages: dict[int, tuple[str, bytes]] = {}

    def get_response_page(self):
        plain = self.value in (200, 201) and not (
            self.context_info or self.src_exception or self.err_condition)
        if not plain:
            return built(self)
        page = pages.get(self.value)
        if page is None:
            content_type, body = built(self)
            page = pages[self.value] = (content_type, re.sub(rb"</a> - [^\n<]*", b"</a>", body))
        return page

    util.get_rfc1123_time = get_rfc1123_time
    dav_error.DAVError.get_response_page = get_response_page


_patch_wsgidav_success_pages()


def _patch_wsgidav_dir_browser() -> None:
    """WsgiDAV's directory browser looked the request's path up for every method, a PUT
    included, though it answers only a GET or HEAD of a collection: other methods now go
    straight on (the request server looks the path up itself)."""
    from wsgidav.dir_browser._dir_browser import WsgiDavDirBrowser

    browse = WsgiDavDirBrowser.__call__

    def call(self, environ, start_response):
        if environ["REQUEST_METHOD"] not in ("GET", "HEAD"):
            return self.next_app(environ, start_response)
        return browse(self, environ, start_response)

    WsgiDavDirBrowser.__call__ = call


_patch_wsgidav_dir_browser()


def close_app(app) -> None:
    """Commit and close what the app keeps on disk (the lock table)."""
    lock_manager = app.wsgidav_app.lock_manager
    if lock_manager is not None:
        lock_manager.storage.close()
