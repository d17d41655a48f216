"""Malformed requests on the wire (issue 13): framing, request targets, Destination, and
Office's second save. Each case is sent on a raw socket; the test checks the status, that
the connection answers or closes as RFC 9112 says, that the next request is answered,
and that the volume is unchanged (names, sizes, etags, dead properties, bytes)."""

import pytest
import requests

from tests.dav.wire import exchange, fingerprint, request
from tests.razor import RazorServer

OLD = b"precious content, 33 bytes long.."
PROPPATCH = (b'<?xml version="1.0"?><D:propertyupdate xmlns:D="DAV:" xmlns:Z="urn:z"><D:set>'
             b'<D:prop><Z:p>kept</Z:p></D:prop></D:set></D:propertyupdate>')
LOCKINFO = (b'<?xml version="1.0"?><D:lockinfo xmlns:D="DAV:"><D:lockscope><D:exclusive/>'
            b'</D:lockscope><D:locktype><D:write/></D:locktype><D:owner>o</D:owner>'
            b'</D:lockinfo>')


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    s = RazorServer(tmp_path_factory.mktemp("framing") / "data").start()
    requests.request("MKCOL", s.url + "/d")
    requests.request("MKCOL", s.url + "/d/sub")
    requests.put(s.url + "/d/file.txt", data=OLD)
    requests.request("PROPPATCH", s.url + "/d/file.txt", data=PROPPATCH)
    yield s
    s.stop()


@pytest.fixture
def unchanged(srv):
    before = fingerprint(srv.url)
    yield srv
    assert fingerprint(srv.url) == before
    assert requests.get(srv.url + "/d/file.txt").content == OLD   # the next request works


def refused(srv, data: bytes, status: int = 400, closes: bool = True):
    """Send ``data``; exactly one answer with ``status`` and a body, then close (or not)."""
    responses, closed = exchange(srv.port, data)
    assert [r[0] for r in responses] == [status], responses
    assert responses[0][2], "an error answer carries a reason"
    if closes:
        assert closed and responses[0][0] == status
    return responses[0]


PUT_HEAD = b"PUT /d/file.txt HTTP/1.1\r\nHost: x\r\n"

# Each is a PUT over the existing file whose body cannot be read to a declared end.
BAD_FRAMING = {
    "negative length": PUT_HEAD + b"Content-Length: -1\r\n\r\nabcd",
    "plus sign": PUT_HEAD + b"Content-Length: +4\r\n\r\nabcd",
    "underscore": PUT_HEAD + b"Content-Length: 1_0\r\n\r\n0123456789",
    "hex length": PUT_HEAD + b"Content-Length: 0x4\r\n\r\nabcd",
    "two lengths": PUT_HEAD + b"Content-Length: 4\r\nContent-Length: 5\r\n\r\nabcde",
    "length list": PUT_HEAD + b"Content-Length: 4, 5\r\n\r\nabcde",
    "length and chunked": PUT_HEAD + b"Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n"
                                     b"4\r\nabcd\r\n0\r\n\r\n",
    "chunked twice": PUT_HEAD + b"Transfer-Encoding: chunked, chunked\r\n\r\n4\r\nabcd\r\n0\r\n\r\n",
    "chunked on 1.0": b"PUT /d/file.txt HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n"
                      b"4\r\nabcd\r\n0\r\n\r\n",
    "folded length": PUT_HEAD + b"Content-Length: 4\r\n 0\r\n\r\nabcd",
    "space before colon": PUT_HEAD + b"Content-Length : 4\r\n\r\nabcd",
    "chunk not hex": PUT_HEAD + b"Transfer-Encoding: chunked\r\n\r\nzz\r\nabcd\r\n0\r\n\r\n",
    "chunk negative": PUT_HEAD + b"Transfer-Encoding: chunked\r\n\r\n-4\r\nabcd\r\n0\r\n\r\n",
    "chunk 0x prefix": PUT_HEAD + b"Transfer-Encoding: chunked\r\n\r\n0x4\r\nabcd\r\n0\r\n\r\n",
    "chunk overflow": PUT_HEAD + b"Transfer-Encoding: chunked\r\n\r\n1" + b"0" * 17 +
                      b"\r\nabcd\r\n0\r\n\r\n",
    "chunk bare LF": PUT_HEAD + b"Transfer-Encoding: chunked\r\n\r\n4\nabcd\r\n0\r\n\r\n",
    "chunk without CRLF": PUT_HEAD + b"Transfer-Encoding: chunked\r\n\r\n4\r\nabcdX0\r\n\r\n",
    "chunked cut off": PUT_HEAD + b"Transfer-Encoding: chunked\r\n\r\n10\r\nabcd",
    "no last chunk": PUT_HEAD + b"Transfer-Encoding: chunked\r\n\r\n4\r\nabcd\r\n",
    "huge chunk line": PUT_HEAD + b"Transfer-Encoding: chunked\r\n\r\n4;" + b"x" * 8000 +
                       b"\r\nabcd\r\n0\r\n\r\n",
    "length cut off": PUT_HEAD + b"Content-Length: 100\r\n\r\nonly ten b",
}


@pytest.mark.parametrize("data", BAD_FRAMING.values(), ids=BAD_FRAMING.keys())
def test_a_body_that_cannot_be_read_to_its_end_is_never_published(unchanged, data):
    refused(unchanged, data)


def test_length_and_chunked_never_smuggle_a_second_request(unchanged):
    smuggled = request("DELETE", "/d/file.txt")
    refused(unchanged, PUT_HEAD + b"Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n"
                                  b"4\r\nabcd\r\n0\r\n\r\n" + smuggled)


def test_trailers_are_read_and_dropped(unchanged):
    """A trailer section is consumed with the body: its lines never become a request."""
    data = (b"PROPFIND /d/file.txt HTTP/1.1\r\nHost: x\r\nDepth: 0\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n0\r\nX-Trailer: 1\r\n\r\n" +
            request("GET", "/d/file.txt"))
    responses, _ = exchange(unchanged.port, data)
    assert [r[0] for r in responses] == [207, 200] and responses[1][2] == OLD


def test_identical_duplicate_lengths_are_one_length(srv):
    responses, _ = exchange(srv.port, b"PUT /d/dup.txt HTTP/1.1\r\nHost: x\r\n"
                                      b"Content-Length: 4\r\nContent-Length: 4\r\n\r\nabcd")
    assert responses[0][0] == 201
    assert requests.get(srv.url + "/d/dup.txt").content == b"abcd"
    requests.delete(srv.url + "/d/dup.txt")


@pytest.mark.parametrize("data", [
    b"GET /d/file.txt HTTP/1.1\r\n\r\n",
    b"GET /d/file.txt HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
    b"GET /d/file.txt HTTP/1.1\r\nHost: a b\r\n\r\n",
    b"GET /d/file.txt HTTP/1.1\r\nHost: x\r\nDestination: /a\r\nDestination: /b\r\n\r\n",
], ids=["no host", "two hosts", "bad host", "two destinations"])
def test_ambiguous_headers(unchanged, data):
    refused(unchanged, data)


def test_http10_needs_no_host(srv):
    responses, closed = exchange(srv.port, b"GET /d/file.txt HTTP/1.0\r\n\r\n")
    assert responses[0][0] == 200 and responses[0][2] == OLD and closed


def test_early_answer_keeps_the_connection(unchanged):
    """A 409 before a body is read: the body is drained and the next request answered."""
    data = request("PUT", "/missing/f", body=b"x" * 70_000, chunked=True) + \
        request("GET", "/d/file.txt")
    responses, _ = exchange(unchanged.port, data)
    assert [r[0] for r in responses] == [409, 200] and responses[1][2] == OLD


UNDECODABLE = ["%c0%ae", "%c0%af", "%e0%80%ae", "%e2%82", "%ed%a0%80", "%ff", "%80x",
               "%f8%88%80%80%80"]


@pytest.mark.parametrize("method", ["GET", "HEAD", "PUT", "DELETE", "MKCOL", "PROPFIND",
                                    "PROPPATCH", "LOCK", "COPY", "MOVE", "OPTIONS"])
@pytest.mark.parametrize("name", UNDECODABLE)
def test_request_target_that_is_not_utf8(unchanged, method, name):
    body = PROPPATCH if method == "PROPPATCH" else b"x" if method == "PUT" else b""
    status, headers, text = refused(unchanged, request(
        method, f"/d/{name}", {"Destination": "/d/ok"}, body))
    assert b"UTF-8" in text


@pytest.mark.parametrize("method", ["COPY", "MOVE"])
@pytest.mark.parametrize("name", UNDECODABLE + ["..%2f..%2fx", "a%00b", "a%5cb"])
def test_destination_that_is_not_a_name(unchanged, method, name):
    for dest in (f"/d/{name}", f"http://127.0.0.1:{unchanged.port}/d/{name}"):
        status, _, text = refused(unchanged, request(method, "/d/file.txt",
                                                     {"Destination": dest}), closes=False)


@pytest.mark.parametrize("method", ["COPY", "MOVE"])
@pytest.mark.parametrize("dest", [None, "", "not a url", "relative/path", "d/x", "/a b",
                                  "/d/x?y", "/d/x#y", "mailto:x@y", "http://", "//host/x",
                                  "http:/x", "/d/\x01x"])
@pytest.mark.parametrize("source", ["/d/file.txt", "/d/sub"])
def test_missing_or_unusable_destination(unchanged, method, dest, source):
    headers = {} if dest is None else {"Destination": dest}
    status, _, text = refused(unchanged, request(method, source, headers), closes=False)
    assert b"Destination" in text


@pytest.mark.parametrize("dest", ["http://evil.example/d/x", "https://127.0.0.1/d/x",
                                  "ftp://127.0.0.1/d/x"])
def test_destination_on_another_server_stays_502(unchanged, dest):
    refused(unchanged, request("MOVE", "/d/sub", {"Destination": dest}), 502, closes=False)


def lock(url, depth="0"):
    r = requests.request("LOCK", url, data=LOCKINFO, headers={"Depth": depth,
                                                              "Timeout": "Second-600"})
    assert r.status_code in (200, 201), r.text
    return r.headers["Lock-Token"].strip("<>")


def unlock(url, token):
    r = requests.request("UNLOCK", url, headers={"Lock-Token": f"<{token}>"})
    assert r.status_code == 204


def test_office_second_save(srv):
    """Windows WebClient's save of an Office document (RFC 4918 10.4.2: an untagged If
    list applies to the Request-URI only)."""
    doc, tmp = srv.url + "/d/report.docx", srv.url + "/d/~WRD0001.tmp"
    assert requests.put(doc, data=b"first version").status_code == 201
    doc_token = lock(doc)
    assert requests.put(tmp, data=b"", headers={"If": f"(<{doc_token}>)"}).status_code == 201
    tmp_token = lock(tmp)
    assert requests.put(tmp, data=b"second version",
                        headers={"If": f"(<{tmp_token}>)"}).status_code == 204
    unlock(tmp, tmp_token)
    unlock(doc, doc_token)
    tmp_token = lock(tmp)
    r = requests.request("MOVE", tmp, headers={"Destination": doc, "Overwrite": "T",
                                               "If": f"(<{tmp_token}>)"})
    assert r.status_code in (201, 204), r.text
    assert requests.get(doc).content == b"second version"
    assert requests.head(tmp).status_code == 404


def test_move_onto_a_destination_locked_by_another_stays_423(srv):
    doc, tmp = srv.url + "/d/locked.docx", srv.url + "/d/~locked.tmp"
    requests.put(doc, data=b"theirs")
    requests.put(tmp, data=b"mine")
    theirs, mine = lock(doc), lock(tmp)
    try:
        r = requests.request("MOVE", tmp, headers={"Destination": doc, "Overwrite": "T",
                                                   "If": f"(<{mine}>)"})
        assert r.status_code == 423
        assert requests.get(doc).content == b"theirs"
        assert requests.get(tmp).content == b"mine"
        # If-Match names the source; the destination's etag differs and does not matter
        etag = requests.head(tmp).headers["ETag"]
        r = requests.request("COPY", tmp, headers={"Destination": srv.url + "/d/copy.tmp",
                                                   "If-Match": etag})
        assert r.status_code == 201
    finally:
        unlock(doc, theirs)
        unlock(tmp, mine)


@pytest.mark.parametrize("coding,status", [("gzip", 415), ("br, gzip", 415),
                                          ("identity", 204)])
def test_put_content_coding(srv, coding, status):
    responses, _ = exchange(srv.port, request("PUT", "/d/coded.txt",
                                              {"Content-Encoding": coding}, b"abc"))
    assert responses[0][0] in ({status, 201} if status == 204 else {status})
    if status == 415:
        assert responses[0][1]["accept-encoding"] == "identity"


def test_a_put_without_a_declared_length_is_411_and_changes_nothing(unchanged):
    """No Content-Length and not chunked: HTTP frames the body as empty, so a proxy that
    dropped the header (or a blank line slipped into the head) would empty the file."""
    status, _headers, body = refused(unchanged, PUT_HEAD + b"\r\n", 411, closes=False)
    assert b"Content-Length" in body
    # A blank line inside the head: the head ends there, without its Content-Length.
    responses, _ = exchange(unchanged.port, PUT_HEAD + b"X-A: 1\r\n\r\nContent-Length: 3\r\n"
                                                      b"\r\nabc")
    assert responses[0][0] == 411


def test_an_empty_put_with_content_length_0_is_fine(srv):
    responses, _ = exchange(srv.port, b"PUT /d/empty.txt HTTP/1.1\r\nHost: x\r\n"
                                      b"Content-Length: 0\r\n\r\n")
    assert responses[0][0] == 201
    assert requests.get(srv.url + "/d/empty.txt").content == b""
    requests.delete(srv.url + "/d/empty.txt")
