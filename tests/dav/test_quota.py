"""Quotas through a real WebDAV server: 507 with a reason and nothing left behind, RFC 4331
properties on collections. The app is served in-process (``make_app`` + ``Server`` on port
0), because quotas are set on the ``Volume`` the server was given."""

import http.client
import threading
import xml.etree.ElementTree as ET

import pytest

from razordav.core.volume import Volume
from razordav.dav.app import close_app, make_app
from razordav.web.server import Server
from razordav.dav.provider import UNLIMITED_AVAILABLE

BS = 16 * 1024
QUOTA = 8 * BS

PROPFIND_QUOTA = (b'<?xml version="1.0"?><D:propfind xmlns:D="DAV:"><D:prop>'
                  b'<D:quota-available-bytes/><D:quota-used-bytes/></D:prop></D:propfind>')


class Served:
    def __init__(self, tmp_path):
        self.vol = Volume.open(tmp_path / "data", block_size=BS, journal_interval=0)
        self.app = make_app(self.vol, lock_db=str(tmp_path / "locks.sqlite"), verbose=0)
        self.server = Server(self.app, port=0, threads=4, timeout=10)
        self.thread = threading.Thread(target=self.server.httpd.serve, daemon=True)
        self.thread.start()

    def conn(self):
        return http.client.HTTPConnection(self.server.host, self.server.port, timeout=20)

    def request(self, method, path, body=None, headers=None, conn=None):
        c = conn or self.conn()
        c.request(method, path, body=body, headers=headers or {})
        r = c.getresponse()
        data = r.read()
        if conn is None:
            c.close()
        return r.status, data

    def quota_props(self, path, depth="0"):
        status, body = self.request("PROPFIND", path, PROPFIND_QUOTA, {"Depth": depth})
        assert status == 207
        found = {}
        for resp in ET.fromstring(body).iter("{DAV:}response"):
            href = resp.find("{DAV:}href").text
            for ps in resp.iter("{DAV:}propstat"):
                code = int(ps.find("{DAV:}status").text.split()[1])
                for prop in ps.find("{DAV:}prop"):
                    name = prop.tag.split("}")[1]
                    found.setdefault(href, {})[name] = int(prop.text) if code == 200 else code
        return found

    def close(self):
        self.server.stop()
        self.thread.join(10)
        close_app(self.app)
        self.vol.close()


@pytest.fixture
def served(tmp_path):
    s = Served(tmp_path)
    try:
        yield s
    finally:
        s.close()


def stored_bytes(vol):
    return sum(k["bytes_in"] for k in vol.codec.snapshot().values())


def test_put_over_quota_is_507_and_creates_nothing(served):
    served.vol.set_quota(QUOTA, None)
    assert served.request("PUT", "/a", b"a" * (6 * BS))[0] == 201
    before = served.vol.usage()
    status, body = served.request("PUT", "/b", b"b" * (3 * BS))
    assert status == 507
    assert b"quota exceeded" in body
    assert served.request("GET", "/b")[0] == 404
    assert served.vol.usage() == before
    assert served.request("PUT", "/b", b"b" * (2 * BS))[0] == 201    # exactly full
    assert served.vol.room() == 0


def test_put_over_quota_leaves_the_old_file(served):
    served.vol.set_quota(QUOTA, None)
    served.request("PUT", "/f", b"old" * 1000)
    status, _ = served.request("PUT", "/f", b"n" * (QUOTA + 1))
    assert status == 507
    assert served.request("GET", "/f") == (200, b"old" * 1000)
    # The replaced content counts as freed: a rewrite up to the whole quota fits.
    assert served.request("PUT", "/f", b"n" * QUOTA)[0] == 204


def test_announced_length_over_quota_is_refused_before_reading(served):
    served.vol.set_quota(QUOTA, None)
    before = stored_bytes(served.vol)
    c = served.conn()
    status, body = served.request("PUT", "/big", b"x" * (8 * QUOTA), conn=c)
    assert status == 507 and b"quota exceeded" in body
    assert stored_bytes(served.vol) == before          # no byte was hashed or stored
    # cheroot drained the body: the connection goes on with the next request.
    assert served.request("PUT", "/ok", b"y", conn=c)[0] == 201
    c.close()


def test_chunked_put_over_quota_stops_as_bytes_arrive(served):
    served.vol.set_quota(QUOTA, None)
    c = served.conn()
    c.putrequest("PUT", "/chunked")
    c.putheader("Transfer-Encoding", "chunked")
    c.endheaders()
    for _ in range(4 * QUOTA // BS):
        c.send(b"%x\r\n" % BS + b"c" * BS + b"\r\n")
    c.send(b"0\r\n\r\n")
    r = c.getresponse()
    assert r.status == 507 and b"quota exceeded" in r.read()
    assert served.vol.usage() == {"bytes": 0, "files": 0}
    assert list(served.vol.cache.names()) == []        # the blocks stored went away again
    assert served.request("GET", "/chunked", conn=c)[0] == 404   # the body was drained
    c.close()


def test_files_quota_on_put_mkcol_and_copy(served):
    served.vol.set_quota(None, 2)
    assert served.request("MKCOL", "/d")[0] == 201
    assert served.request("PUT", "/d/f", b"1")[0] == 201
    assert served.request("MKCOL", "/e")[0] == 507
    assert served.request("PUT", "/g", b"2")[0] == 507
    assert served.request("COPY", "/d/f", headers={"Destination": "/h"})[0] == 507
    assert served.request("PUT", "/d/f", b"rewritten")[0] == 204   # no new inode
    assert [n for n, _ in served.vol.listdir("/")] == ["d"]


def test_copy_over_byte_quota_leaves_no_destination(served):
    served.vol.set_quota(3 * BS, None)
    served.request("PUT", "/a", b"a" * (2 * BS))
    assert served.request("COPY", "/a", headers={"Destination": "/b"})[0] == 507
    assert served.request("GET", "/b")[0] == 404
    assert served.vol.usage() == {"bytes": 2 * BS, "files": 1}


def test_propfind_reports_the_quota_on_collections(served):
    served.vol.set_quota(QUOTA, None)
    served.request("MKCOL", "/d")
    served.request("PUT", "/d/f", b"z" * 1000)
    props = served.quota_props("/", depth="1")
    want = {"quota-used-bytes": 1000, "quota-available-bytes": QUOTA - 1000}
    assert props["/"] == want
    assert props["/d/"] == want                        # the volume's quota, seen anywhere
    file_props = served.quota_props("/d/f")["/d/f"]
    assert file_props == {"quota-used-bytes": 404, "quota-available-bytes": 404}


def test_propfind_over_a_lowered_quota_reports_zero_available(served):
    served.request("PUT", "/f", b"z" * (2 * BS))
    served.vol.set_quota(BS, None)
    assert served.quota_props("/")["/"] == {"quota-used-bytes": 2 * BS,
                                            "quota-available-bytes": 0}


def test_propfind_without_quota_reports_usage_and_a_large_room(served):
    served.request("PUT", "/f", b"z" * 10)
    assert served.quota_props("/")["/"] == {"quota-used-bytes": 10,
                                            "quota-available-bytes": UNLIMITED_AVAILABLE}
    status, body = served.request("PROPFIND", "/", headers={"Depth": "0"})   # allprop
    assert status == 207 and b"quota-available-bytes" in body


def test_bad_content_length_is_still_400(served):
    served.vol.set_quota(QUOTA, None)
    c = served.conn()
    c.putrequest("PUT", "/x")
    c.putheader("Content-Length", "-5")
    c.endheaders()
    r = c.getresponse()
    assert r.status == 400
    c.close()
    assert served.vol.usage() == {"bytes": 0, "files": 0}
