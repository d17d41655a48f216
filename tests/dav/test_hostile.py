"""Hostile input on the WebDAV face: each case gets a clean 4xx, and the volume is left
exactly as it was (same listing, same contents, same properties).

Every test here runs against a gateway that can import lxml and one that cannot: WsgiDAV
picks its XML parser by what it can import, and razordav must not depend on that."""

import hashlib
import importlib.util
import os
import socket
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import requests

from tests.razor import RazorServer

BOMB = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
<!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">]>
<D:propfind xmlns:D="DAV:"><D:prop><D:getetag>&lol4;</D:getetag></D:prop></D:propfind>"""

XXE = b"""<?xml version="1.0"?>
<!DOCTYPE x [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>
<D:propertyupdate xmlns:D="DAV:" xmlns:Z="urn:z"><D:set><D:prop><Z:p>&xxe;</Z:p></D:prop>
</D:set></D:propertyupdate>"""

LOCKINFO = (b'<?xml version="1.0"?><D:lockinfo xmlns:D="DAV:"><D:lockscope><D:exclusive/>'
            b'</D:lockscope><D:locktype><D:write/></D:locktype></D:lockinfo>')


HIDE_LXML = str(Path(__file__).parents[1] / "hide_lxml")


def python_path(lxml: bool) -> str:
    """PYTHONPATH for a process that can (or cannot) import lxml."""
    base = os.environ.get("PYTHONPATH", "")
    if lxml:
        assert importlib.util.find_spec("lxml"), \
            "lxml is a test dependency (pip install -e '.[test]'): the XML tests need it"
        return base
    return os.pathsep.join(p for p in (HIDE_LXML, base) if p)


@pytest.fixture(scope="module", params=["lxml", "no-lxml"])
def srv(tmp_path_factory, request):
    env = {"PYTHONPATH": python_path(request.param == "lxml")}
    s = RazorServer(tmp_path_factory.mktemp("hostile") / "data", env=env).start()
    requests.request("MKCOL", s.url + "/d")
    requests.put(s.url + "/d/file.txt", data=b"precious content")
    requests.put(s.url + "/other.txt", data=b"other")
    requests.request("PROPPATCH", s.url + "/d/file.txt", data=(
        b'<?xml version="1.0"?><D:propertyupdate xmlns:D="DAV:" xmlns:Z="urn:z"><D:set>'
        b'<D:prop><Z:p>kept</Z:p></D:prop></D:set></D:propertyupdate>'))
    yield s
    s.stop()


def state(url):
    """The whole volume: listing with properties, and every file's content."""
    r = requests.request("PROPFIND", url + "/", headers={"Depth": "infinity"})
    assert r.status_code == 207
    files = {p: hashlib.sha256(requests.get(url + p).content).hexdigest()
             for p in ("/d/file.txt", "/other.txt")}
    return r.text, files


@pytest.fixture
def unchanged(srv):
    before = state(srv.url)
    yield srv
    assert state(srv.url) == before


def raw(srv, request: bytes, timeout=10) -> int:
    with socket.create_connection(("127.0.0.1", srv.port), timeout=timeout) as s:
        s.sendall(request)
        reply = b""
        while b"\r\n" not in reply:
            chunk = s.recv(4096)
            if not chunk:
                break
            reply += chunk
    return int(reply.split(b" ")[1]) if reply else 0


@pytest.mark.parametrize("method,body", [("PROPFIND", BOMB), ("PROPPATCH", BOMB),
                                         ("LOCK", BOMB)])
def test_xml_bomb(unchanged, method, body):
    r = requests.request(method, unchanged.url + "/d/file.txt", data=body,
                         headers={"Depth": "0"})
    assert r.status_code == 400


def test_external_entity(unchanged):
    r = requests.request("PROPPATCH", unchanged.url + "/d/file.txt", data=XXE)
    assert r.status_code == 400
    assert "root:" not in r.text


def test_external_entity_in_lock(unchanged):
    body = XXE.replace(b"propertyupdate", b"lockinfo").replace(
        b"<D:set><D:prop><Z:p>&xxe;</Z:p></D:prop>\n</D:set>",
        b"<D:lockscope><D:exclusive/></D:lockscope><D:locktype><D:write/></D:locktype>"
        b"<D:owner>&xxe;</D:owner>")
    assert b"lockinfo" in body and b"&xxe;</D:owner>" in body
    r = requests.request("LOCK", unchanged.url + "/d/file.txt", data=body)
    assert r.status_code == 400
    assert "root:" not in r.text


@pytest.mark.parametrize("lxml", [True, False], ids=["lxml", "no-lxml"])
def test_wsgidav_never_parses_with_lxml(lxml):
    """Whatever is importable, razordav hands WsgiDAV defusedxml; and if WsgiDAV was
    imported first and chose lxml, importing razordav's face fails instead of serving."""
    env = {**os.environ, "PYTHONPATH": python_path(lxml)}
    check = ("import razordav.dav.app, razordav.service.gate\n"
             "from wsgidav import util, xml_tools\n"
             "assert not xml_tools.use_lxml and not util.use_lxml, 'lxml in use'\n"
             "assert 'defusedxml' in util.etree.__name__, util.etree\n")
    subprocess.run([sys.executable, "-c", check], env=env, check=True, timeout=60)
    if lxml:
        wrong_order = subprocess.run(
            [sys.executable, "-c", "import wsgidav.util; import razordav.dav"], env=env,
            capture_output=True, text=True, timeout=60)
        assert wrong_order.returncode != 0 and "chose lxml" in wrong_order.stderr


@pytest.mark.parametrize("method", ["PROPFIND", "PROPPATCH", "LOCK"])
def test_malformed_xml(unchanged, method):
    r = requests.request(method, unchanged.url + "/d/file.txt", data=b"<D:x xmlns:D='DAV:'><",
                         headers={"Depth": "0"})
    assert r.status_code == 400


@pytest.mark.parametrize("method", ["PROPFIND", "PROPPATCH"])
def test_xml_of_the_wrong_shape(unchanged, method):
    r = requests.request(method, unchanged.url + "/d/file.txt",
                         data=b'<?xml version="1.0"?><D:nonsense xmlns:D="DAV:"/>',
                         headers={"Depth": "0"})
    assert r.status_code == 400


@pytest.mark.parametrize("path", [
    "/../../etc/passwd", "/d/../../etc/passwd", "/%2e%2e/%2e%2e/etc/passwd",
    "/d/%2e%2e%2f%2e%2e%2fetc%2fpasswd", "/d/file.txt%00.jpg", "/d/%00", "/..%5c..%5cetc"])
@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE", "MKCOL"])
def test_path_traversal(unchanged, path, method):
    body = b"evil" if method == "PUT" else b""
    status = raw(unchanged, f"{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Length: "
                            f"{len(body)}\r\nConnection: close\r\n\r\n".encode() + body)
    assert 400 <= status < 500, (method, path, status)


@pytest.mark.parametrize("value,expect", [
    ("bytes=abc", {200}), ("bytes=5-2", {200}), ("bytes=999999999999-", {416}),
    ("bytes=0-99999999999999999999", {206}), ("items=0-5", {200}),
    ("bytes=" + ",".join(f"{i}-{i}" for i in range(2000)), {200})])
def test_invalid_or_huge_range(unchanged, value, expect):
    r = requests.get(unchanged.url + "/d/file.txt", headers={"Range": value})
    assert r.status_code in expect, (value, r.status_code)
    if r.status_code in (200, 206):
        assert r.content and b"precious content".startswith(r.content[:5])


@pytest.mark.parametrize("dest", [
    "http://evil.example.com/d/stolen.txt", "https://127.0.0.1/d/x.txt"])
@pytest.mark.parametrize("method", ["COPY", "MOVE"])
def test_destination_on_another_host(unchanged, method, dest):
    r = requests.request(method, unchanged.url + "/d/file.txt", headers={"Destination": dest})
    assert r.status_code == 502


@pytest.mark.parametrize("dest", ["/../outside.txt", "/d/../../outside.txt",
                                  "/%2e%2e/outside.txt"])
def test_destination_outside_the_root(unchanged, dest):
    r = requests.request("COPY", unchanged.url + "/d/file.txt",
                         headers={"Destination": unchanged.url + dest})
    assert 400 <= r.status_code < 500
    assert requests.get(unchanged.url + "/outside.txt").status_code == 404


def test_destination_into_itself(unchanged):
    r = requests.request("MOVE", unchanged.url + "/d/",
                         headers={"Destination": unchanged.url + "/d/inner/"})
    assert 400 <= r.status_code < 500


def test_oversized_headers(unchanged):
    status = raw(unchanged, b"GET /d/file.txt HTTP/1.1\r\nHost: x\r\nX-Big: " +
                 b"a" * (200 * 1024) + b"\r\nConnection: close\r\n\r\n")
    assert status in (400, 413, 431)


def test_oversized_xml_body(unchanged):
    body = (b'<?xml version="1.0"?><D:propertyupdate xmlns:D="DAV:" xmlns:Z="urn:z"><D:set>'
            b'<D:prop><Z:p>' + b"x" * (2 << 20) + b'</Z:p></D:prop></D:set></D:propertyupdate>')
    r = requests.request("PROPPATCH", unchanged.url + "/d/file.txt", data=body)
    assert r.status_code == 413
    r = requests.request("PROPPATCH", unchanged.url + "/d/file.txt", data=iter([body]))
    assert r.status_code == 413                 # chunked: counted as it arrives


def test_malformed_content_length(unchanged):
    status = raw(unchanged, b"PUT /d/file.txt HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n"
                            b"Connection: close\r\n\r\n")
    assert 400 <= status < 500


def make_big_tree(data_dir) -> None:
    """A volume whose /big holds more entries than PROPFIND Depth: infinity may list."""
    from razordav.core.volume import Volume
    vol = Volume.open(data_dir, journal_interval=0)
    vol.mkdir("/big")
    parent = vol.stat("/big").ino
    with vol.tree.db.write():
        for i in range(10_050):
            vol.tree.create(parent, f"f{i}")
    vol.close()


def test_depth_infinity_on_a_huge_tree(tmp_path):
    make_big_tree(tmp_path / "data")
    with RazorServer(tmp_path / "data") as s:
        r = requests.request("PROPFIND", s.url + "/", headers={"Depth": "infinity"})
        assert r.status_code == 403 and "propfind-finite-depth" in r.text
        r = requests.request("PROPFIND", s.url + "/", data=b"", headers={})  # no Depth: infinity
        assert r.status_code == 403
        assert requests.request("PROPFIND", s.url + "/big/", headers={"Depth": "1"}) \
            .status_code == 207


def test_bad_and_foreign_lock_tokens(unchanged):
    url = unchanged.url
    r = requests.request("LOCK", url + "/other.txt", data=LOCKINFO)
    assert r.status_code == 200
    token = r.headers["Lock-Token"].strip("<>")
    try:
        bogus = f"opaquelocktoken:{uuid.uuid4()}"
        assert requests.request("UNLOCK", url + "/other.txt",
                                headers={"Lock-Token": f"<{bogus}>"}).status_code in (409, 400)
        assert requests.request("UNLOCK", url + "/other.txt",
                                headers={"Lock-Token": "garbage"}).status_code in (400, 409)
        assert requests.put(url + "/other.txt", data=b"overwrite",
                            headers={"If": f"(<{bogus}>)"}).status_code in (412, 423)
        # a token for one resource does not unlock another
        assert requests.request("UNLOCK", url + "/d/file.txt",
                                headers={"Lock-Token": f"<{token}>"}).status_code in (409, 400)
        assert requests.put(url + "/d/file.txt", data=b"overwrite",
                            headers={"If": f"(<{token}>)"}).status_code in (412, 423)
        assert requests.put(url + "/other.txt", data=b"overwrite").status_code == 423
    finally:
        assert requests.request("UNLOCK", url + "/other.txt",
                                headers={"Lock-Token": f"<{token}>"}).status_code == 204


def test_early_error_on_a_chunked_body_keeps_the_connection_sane(unchanged):
    body = b"5\r\nhello\r\n400\r\n" + b"X" * 1024 + b"\r\n0\r\n\r\n"
    with socket.create_connection(("127.0.0.1", unchanged.port), timeout=10) as s:
        s.sendall(b"PUT /missing/parent/f HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked"
                  b"\r\n\r\n" + body + b"GET /other.txt HTTP/1.1\r\nHost: x\r\n"
                  b"Connection: close\r\n\r\n")
        reply = b""
        while chunk := s.recv(65536):
            reply += chunk
    assert reply.startswith(b"HTTP/1.1 409")
    assert b"Malformed" not in reply and reply.count(b"HTTP/1.1 ") == 2
    assert reply.endswith(b"other")             # the pipelined GET was answered


def test_head_error_answers_carry_no_body_on_a_kept_alive_connection(tmp_path):
    """A 400 to HEAD must not send the reason as a body: the next response on the same
    connection would start with it (a client then sees a bad status line)."""
    import requests
    from tests.razor import RazorServer
    with RazorServer(tmp_path / "data") as srv:
        s = requests.Session()
        for _ in range(5):
            r = s.head(srv.url + "/%2E%2E%5Cx")
            assert r.status_code == 400 and r.content == b""
            assert s.get(srv.url + "/").status_code == 200
