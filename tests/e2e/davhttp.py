"""Helpers for the real-client end-to-end tests: tool lookup, a gateway fixture body,
and a few plain-HTTP WebDAV requests (urllib only) to look at the server's state
independently of the client under test.
"""

from __future__ import annotations

import os
import shutil
import urllib.error
import urllib.parse
import urllib.request
import xml.etree.ElementTree as ET

import pytest

from razor import RazorServer

DAV = "{DAV:}"


def need_tool(name: str) -> str:
    """Path of ``name`` (also looked up in the sbin dirs); a missing tool fails the test."""
    path = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])
    found = shutil.which(name, path=path)
    if not found:
        pytest.fail(f"'{name}' is not installed: run scripts/test.sh to install the test "
                    "tools", pytrace=False)
    return found


def serve(data_dir):
    """Fixture body: a started RazorServer, stopped (SIGTERM, SIGKILL fallback) at the end."""
    server = RazorServer(data_dir)
    error = None
    try:
        server.start()
    except RuntimeError as exc:
        error = str(exc)
    if error:
        pytest.fail(error, pytrace=False)
    try:
        yield server
    finally:
        if server.proc is not None:
            try:
                server.stop(timeout=30)
            except Exception:  # noqa: BLE001 - make sure it is gone
                server.kill()


def url_for(server, path: str) -> str:
    """URL of a volume path (unicode, spaces, %, #, ? are percent-encoded)."""
    return server.url + urllib.parse.quote(path, safe="/")


def request(server, method: str, path: str, body: bytes | None = None,
            headers: dict | None = None, timeout: float = 30):
    """(status, headers, body) of one request; HTTP errors are returned, not raised."""
    req = urllib.request.Request(url_for(server, path), data=body, method=method,
                                 headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.headers, resp.read()
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, exc.headers, exc.read()


def get(server, path: str) -> tuple[int, bytes]:
    status, _, body = request(server, "GET", path)
    return status, body


def propfind(server, path: str, depth: str = "1", props: list[str] | None = None):
    """PROPFIND; returns {decoded href path: {clark name: element}} for 200 propstats."""
    if props:
        inner = "".join(_prop_xml(p) for p in props)
        body = f'<?xml version="1.0" encoding="utf-8"?><D:propfind xmlns:D="DAV:"><D:prop>' \
               f"{inner}</D:prop></D:propfind>"
    else:
        body = '<?xml version="1.0" encoding="utf-8"?><D:propfind xmlns:D="DAV:"><D:allprop/>' \
               "</D:propfind>"
    status, _, data = request(server, "PROPFIND", path, body.encode(),
                              {"Depth": depth, "Content-Type": "application/xml"})
    assert status == 207, f"PROPFIND {path} -> {status}: {data[:500]!r}"
    out = {}
    for resp in ET.fromstring(data).iter(DAV + "response"):
        href = urllib.parse.unquote(urllib.parse.urlsplit(resp.findtext(DAV + "href")).path)
        found = {}
        for ps in resp.iter(DAV + "propstat"):
            if " 200 " in (ps.findtext(DAV + "status") or ""):
                for prop in ps.find(DAV + "prop"):
                    found[prop.tag] = prop
        out[href] = found
    return out


def _prop_xml(clark: str) -> str:
    ns, _, local = clark[1:].partition("}")
    return f'<{local} xmlns="{ns}"/>'


def listing(server, path: str) -> set[str]:
    """Names of the members of a collection (Depth 1), without the collection itself."""
    base = path.rstrip("/") + "/"
    names = set()
    for href in propfind(server, base, "1", [DAV + "resourcetype"]):
        rel = href[len(base):] if href.startswith(base) else None
        if rel and rel.strip("/"):
            names.add(rel.strip("/"))
    return names
