"""The body readers of web/http.py on in-memory streams: exact ends, and failures that
raw sockets cannot time (a read timeout) or that need a byte-exact stream."""

import io
import socket

import pytest

from razordav.core.errors import BadBody
from razordav.web.http import ChunkedBody, LengthBody


class Req:
    close_connection = False


class Stalled(io.BytesIO):
    """A client that sends some bytes, then nothing until the server's timeout."""

    def read(self, n=-1):
        data = super().read(n)
        if n < 0 or len(data) < n:   # a socket read waits for all n bytes, then times out
            raise socket.timeout("timed out")
        return data

    def readline(self, n=-1):
        data = super().readline(n)
        if not data:
            raise socket.timeout("timed out")
        return data


def test_length_body_reads_exactly_its_length():
    req = Req()
    body = LengthBody(io.BytesIO(b"hello\nworld" + b"NEXT"), req, 11)
    assert body.readline() == b"hello\n"
    assert body.read(3) == b"wor" and body.read() == b"ld" and body.read() == b""
    assert body.done and not req.close_connection


@pytest.mark.parametrize("stream", [io.BytesIO(b"short"), Stalled(b"short")])
def test_length_body_cut_off_or_stalled_raises_and_closes(stream):
    """Both reach the PUT as ``BadBody``: nothing published (PutStream.writelines)."""
    req = Req()
    body = LengthBody(stream, req, 100)
    with pytest.raises(BadBody):
        body.read()
    assert req.close_connection
    with pytest.raises(BadBody):   # and keeps failing: never a quiet end
        body.read(1)


def test_chunked_body_with_extensions_and_trailers():
    req = Req()
    raw = b"5;name=value\r\nhello\r\n6 ; x\r\n world\r\n0\r\nX-Sum: 1\r\n\r\nNEXT"
    stream = io.BytesIO(raw)
    body = ChunkedBody(stream, req)
    assert body.read() == b"hello world" and body.done
    assert stream.read() == b"NEXT"            # trailers consumed, the next request intact


@pytest.mark.parametrize("raw", [
    b"5\r\nhel", b"5\r\nhello", b"5\r\nhelloXX0\r\n\r\n", b"-5\r\nhello\r\n0\r\n\r\n",
    b"+5\r\nhello\r\n0\r\n\r\n", b"0x5\r\nhello\r\n0\r\n\r\n", b"5_0\r\n",
    b"1" + b"0" * 16 + b"\r\n", b"5\nhello\r\n0\r\n\r\n", b"", b"0\r\nX: y\r\n",
    b"5;" + b"e" * 5000 + b"\r\nhello\r\n0\r\n\r\n"])
def test_chunked_body_framing_errors(raw):
    req = Req()
    with pytest.raises(BadBody):
        ChunkedBody(io.BytesIO(raw), req).read()
    assert req.close_connection


def test_chunked_body_stalled_mid_chunk():
    with pytest.raises(BadBody, match="timed out"):
        ChunkedBody(Stalled(b"a\r\n01234"), Req()).read()
