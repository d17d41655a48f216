"""Small WSGI pieces every face uses: short plain answers made before an app sees the
request, the request-target rules common to WebDAV and the REST API, the HEAD wrapper and
the security headers of every response. No state; safe from any thread.
"""

from __future__ import annotations

from urllib.parse import unquote


def reply(start_response, status: str, body: bytes | str, ctype: str = "text/plain; charset=utf-8",
          headers=(), close: bool = False):
    """A short answer made here, not by an app (a str body is a reason: one line)."""
    if isinstance(body, str):
        body = (body + "\n").encode()
    headers = [("Content-Type", ctype), ("Content-Length", str(len(body))), *headers]
    start_response(status, headers + ([("Connection", "close")] if close else []))
    return [body]


def bad_path(environ) -> bytes | None:
    """Why the request target is refused (400), or None: NUL, backslash, '.' or '..'
    segments, also percent-encoded (RFC 3986 5.2.4)."""
    raw = environ.get("REQUEST_URI") or environ.get("PATH_INFO", "")
    for path in (unquote(raw.split("?", 1)[0]), environ.get("PATH_INFO", "")):
        refused = bad_segments(path)
        if refused:
            return refused.encode()
    return None


def bad_segments(path: str) -> str | None:
    if "\0" in path or "\\" in path:
        return "a path may not contain NUL or backslash"
    if any(seg in (".", "..") for seg in path.split("/")):
        return "a path may not contain '.' or '..' segments"
    return None


def head_without_body(app):
    """A HEAD response carries no body (RFC 9110 9.3.2); cheroot sends whatever the app
    yields, and a client on a kept-alive connection would read it as the next response.
    Early error answers (edge, gate) are written for GET; this drops their bodies."""
    def wrapped(environ, start_response):
        result = app(environ, start_response)
        if environ.get("REQUEST_METHOD") != "HEAD":
            return result
        try:
            for _ in result:
                pass
        finally:
            if hasattr(result, "close"):
                result.close()
        return []
    return wrapped


# Every response, files and the gateway's own pages alike: no type sniffing, and a policy
# under which nothing it serves runs a script or is framed in the gateway's origin (an
# uploaded evil.html or .svg opens sandboxed, in an opaque origin).
CONTENT_SECURITY_POLICY = ("sandbox; default-src 'none'; style-src 'self' 'unsafe-inline'; "
                           "img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; "
                           "form-action 'none'")
SECURITY_HEADERS = [("X-Content-Type-Options", "nosniff"),
                    ("Content-Security-Policy", CONTENT_SECURITY_POLICY),
                    ("Referrer-Policy", "no-referrer")]


def with_security_headers(app):
    """Add ``SECURITY_HEADERS`` to every response (replacing any the app set)."""
    names = {name.lower() for name, _ in SECURITY_HEADERS}

    def wrapped(environ, start_response):
        def start(status, headers, exc_info=None):
            headers = [h for h in headers if h[0].lower() not in names] + SECURITY_HEADERS
            return start_response(status, headers, exc_info) if exc_info else \
                start_response(status, headers)
        return app(environ, start)
    return wrapped


