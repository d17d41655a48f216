"""WebDAV behaviour over HTTP against a real gateway process: content, conditions, ranges,
chunked and cut-off bodies, sync-tool headers, properties, moves, bad input."""

import hashlib
import os
import socket
import xml.etree.ElementTree as ET
from urllib.parse import urlsplit

import requests

PROPFIND_ALL = b'<?xml version="1.0"?><D:propfind xmlns:D="DAV:"><D:allprop/></D:propfind>'


def propfind(http, url, depth="1", body=PROPFIND_ALL):
    r = http.request("PROPFIND", url, data=body, headers={"Depth": depth})
    assert r.status_code == 207, r.text
    return ET.fromstring(r.content)


def hrefs(tree):
    return [e.text for e in tree.iter("{DAV:}href")]


def test_put_get_head_etag_last_modified(http, url):
    data = os.urandom(300_000)
    r = http.put(f"{url}/f.bin", data=data)
    assert r.status_code == 201 and r.headers["ETag"]
    etag = r.headers["ETag"]
    r = http.get(f"{url}/f.bin")
    assert r.content == data and r.headers["ETag"] == etag and r.headers["Last-Modified"]
    r = http.head(f"{url}/f.bin")
    assert r.headers["Content-Length"] == str(len(data))
    assert http.put(f"{url}/f.bin", data=b"new").status_code == 204
    assert http.get(f"{url}/f.bin").headers["ETag"] != etag


def test_conditional_requests(http, url):
    http.put(f"{url}/c", data=b"v1")
    etag = http.head(f"{url}/c").headers["ETag"]
    last_modified = http.head(f"{url}/c").headers["Last-Modified"]
    assert http.get(f"{url}/c", headers={"If-None-Match": etag}).status_code == 304
    assert http.get(f"{url}/c", headers={"If-Modified-Since": last_modified}).status_code == 304
    assert http.put(f"{url}/c", data=b"v2", headers={"If-Match": '"nope"'}).status_code == 412
    assert http.get(f"{url}/c").content == b"v1"
    assert http.put(f"{url}/c", data=b"v2", headers={"If-Match": etag}).status_code == 204
    assert http.put(f"{url}/c", data=b"v3", headers={"If-None-Match": "*"}).status_code == 412
    assert http.get(f"{url}/c").content == b"v2"


def test_ranges(http, url):
    data = bytes(range(256)) * 1000
    http.put(f"{url}/r", data=data)
    r = http.get(f"{url}/r", headers={"Range": "bytes=1000-1999"})
    assert r.status_code == 206 and r.content == data[1000:2000]
    assert r.headers["Content-Range"] == f"bytes 1000-1999/{len(data)}"
    r = http.get(f"{url}/r", headers={"Range": "bytes=-10"})
    assert r.status_code == 206 and r.content == data[-10:]
    r = http.get(f"{url}/r", headers={"Range": f"bytes={len(data) + 5}-"})
    assert r.status_code == 416


def test_chunked_put_as_finder_sends_it(http, url):
    pieces = [os.urandom(70_000) for _ in range(20)]
    r = http.put(f"{url}/chunked", data=iter(pieces))   # requests sends Transfer-Encoding: chunked
    assert r.status_code == 201
    assert http.get(f"{url}/chunked").content == b"".join(pieces)


def raw_request(url, head: bytes, body: bytes, close_early=True):
    parts = urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port), timeout=10) as s:
        s.sendall(head + body)
        if close_early:
            s.shutdown(socket.SHUT_WR)
        try:
            return s.recv(4096)
        except OSError:
            return b""


def test_put_cut_off_mid_body_keeps_old_content(http, url):
    http.put(f"{url}/cut", data=b"old content")
    path = urlsplit(f"{url}/cut").path
    head = (f"PUT {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n").encode()
    raw_request(url, head, b"x" * 40_000)
    assert http.get(f"{url}/cut").content == b"old content"
    newpath = urlsplit(f"{url}/cut-new").path
    raw_request(url, f"PUT {newpath} HTTP/1.1\r\nHost: x\r\nContent-Length: 9999\r\n\r\n"
                .encode(), b"y" * 100)
    assert http.get(f"{url}/cut-new").status_code == 404


def test_x_oc_mtime_is_kept(http, url):
    r = http.put(f"{url}/m", data=b"x", headers={"X-OC-Mtime": "1500000000"})
    assert r.status_code == 201
    assert http.head(f"{url}/m").headers["Last-Modified"] == "Fri, 14 Jul 2017 02:40:00 GMT"
    r = http.put(f"{url}/m2", data=b"x", headers={"X-OC-Mtime": "yesterday"})
    assert r.status_code == 400
    assert http.get(f"{url}/m2").status_code == 404


def test_oc_checksum_verified_and_exposed(http, url):
    data = b"checked content"
    sha1 = hashlib.sha1(data).hexdigest()
    r = http.put(f"{url}/k", data=data, headers={"OC-Checksum": f"SHA1:{sha1}"})
    assert r.status_code == 201
    r = http.put(f"{url}/k", data=b"tampered", headers={"OC-Checksum": f"SHA1:{sha1}"})
    assert r.status_code == 400 and "mismatch" in r.text
    assert http.get(f"{url}/k").content == data
    md5 = hashlib.md5(b"other").hexdigest()
    assert http.put(f"{url}/k2", data=b"other", headers={"OC-Checksum": f"MD5:{md5}"}) \
        .status_code == 201
    body = (b'<?xml version="1.0"?><D:propfind xmlns:D="DAV:" xmlns:oc="http://owncloud.org/ns">'
            b'<D:prop><oc:checksums/></D:prop></D:propfind>')
    tree = propfind(http, f"{url}/k", "0", body)
    text = "".join(tree.find(".//{http://owncloud.org/ns}checksum").itertext())
    assert text == f"SHA1:{sha1}"    # the checksum the client sent, verified, is kept
    assert http.put(f"{url}/k3", data=b"x", headers={"OC-Checksum": "CRC9:zz"}).status_code == 400


def test_propfind_depth1_lists_children(http, url):
    http.request("MKCOL", f"{url}/sub")
    for i in range(30):
        http.put(f"{url}/sub/file {i} é#%.txt", data=b"x" * i)
    tree = propfind(http, f"{url}/sub/")
    assert len(hrefs(tree)) == 31
    sizes = sorted(int(e.text) for e in tree.iter("{DAV:}getcontentlength"))
    assert sizes == list(range(30))
    assert http.request("PROPFIND", f"{url}/sub/", headers={"Depth": "0"}).status_code == 207


def test_broken_propfind_xml_is_400(http, url):
    r = http.request("PROPFIND", url, data=b"<D:propfind xmlns:D='DAV:'><D:prop>",
                     headers={"Depth": "0"})
    assert r.status_code == 400


def test_path_traversal_cannot_escape(http, server, url):
    http.put(f"{url}/inside", data=b"x")
    for path in ("/../../etc/passwd", "/%2e%2e/%2e%2e/etc/passwd", "/a/..%2f..%2fetc"):
        s = socket.create_connection(("127.0.0.1", server.port), timeout=5)
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        reply = s.recv(4096)
        s.close()
        status = int(reply.split(b" ")[1])
        assert status in (400, 404), (path, reply[:200])
        assert b"root:" not in reply


def test_dead_properties_survive_move_and_copy(http, url):
    http.put(f"{url}/p", data=b"x")
    body = (b'<?xml version="1.0"?><D:propertyupdate xmlns:D="DAV:" xmlns:Z="urn:z">'
            b'<D:set><D:prop><Z:color>blue</Z:color></D:prop></D:set></D:propertyupdate>')
    assert http.request("PROPPATCH", f"{url}/p", data=body).status_code == 207
    assert http.request("MOVE", f"{url}/p", headers={"Destination": f"{url}/q"}).status_code == 201
    assert http.request("COPY", f"{url}/q", headers={"Destination": f"{url}/r"}).status_code == 201
    for name in ("q", "r"):
        tree = propfind(http, f"{url}/{name}", "0",
                        b'<?xml version="1.0"?><D:propfind xmlns:D="DAV:" xmlns:Z="urn:z">'
                        b'<D:prop><Z:color/></D:prop></D:propfind>')
        assert tree.find(".//{urn:z}color").text == "blue"


def test_move_directory_keeps_tree(http, url):
    http.request("MKCOL", f"{url}/a")
    http.request("MKCOL", f"{url}/a/b")
    http.put(f"{url}/a/b/f", data=b"deep")
    r = http.request("MOVE", f"{url}/a/", headers={"Destination": f"{url}/z/"})
    assert r.status_code == 201
    assert http.get(f"{url}/z/b/f").content == b"deep"
    assert http.get(f"{url}/a/b/f").status_code == 404
    r = http.request("MOVE", f"{url}/z/", headers={"Destination": f"{url}/z/b/inner/"})
    assert r.status_code in (403, 409, 502)


def test_put_errors(http, url):
    assert http.put(f"{url}/missing/parent/f", data=b"x").status_code == 409
    http.request("MKCOL", f"{url}/dir")
    assert http.put(f"{url}/dir", data=b"x").status_code == 405
    assert http.put(f"{url}/{'n' * 256}", data=b"x").status_code in (400, 414)
    assert http.request("MKCOL", f"{url}/dir").status_code == 405


def test_windows_win32_properties_set_times(http, url):
    http.put(f"{url}/w.docx", data=b"x")
    body = (b'<?xml version="1.0"?><D:propertyupdate xmlns:D="DAV:" '
            b'xmlns:Z="urn:schemas-microsoft-com:"><D:set><D:prop>'
            b'<Z:Win32LastModifiedTime>Wed, 01 Jan 2020 10:00:00 GMT</Z:Win32LastModifiedTime>'
            b'<Z:Win32FileAttributes>00000020</Z:Win32FileAttributes>'
            b'</D:prop></D:set></D:propertyupdate>')
    r = http.request("PROPPATCH", f"{url}/w.docx", data=body,
                     headers={"User-Agent": "Microsoft-WebDAV-MiniRedir/10.0.19045"})
    assert r.status_code == 207 and "200 OK" in r.text
    assert http.head(f"{url}/w.docx").headers["Last-Modified"] == "Wed, 01 Jan 2020 10:00:00 GMT"


def test_delete_collection_and_locked_member(http, url):
    http.request("MKCOL", f"{url}/d")
    http.put(f"{url}/d/f", data=b"x")
    lock = (b'<?xml version="1.0"?><D:lockinfo xmlns:D="DAV:"><D:lockscope><D:exclusive/>'
            b'</D:lockscope><D:locktype><D:write/></D:locktype></D:lockinfo>')
    r = http.request("LOCK", f"{url}/d/f", data=lock)
    assert r.status_code == 200
    token = r.headers["Lock-Token"]
    assert http.delete(f"{url}/d").status_code == 423
    assert http.get(f"{url}/d/f").status_code == 200
    # the token is submitted in a tagged list naming the locked member (RFC 4918 10.4)
    tagged = f"<{url}/d/f> (<{token.strip('<>')}>)"
    assert http.delete(f"{url}/d", headers={"If": tagged}).status_code == 204
    assert http.get(f"{url}/d/f").status_code == 404
