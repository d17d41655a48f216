"""Raw HTTP/1.1 on a socket for the framing tests: nothing normalised on the way out,
and responses parsed by their own framing, so a second (smuggled) answer shows."""

from __future__ import annotations

import hashlib
import re
import socket
import xml.etree.ElementTree as ET

import requests


def exchange(port: int, data: bytes, half_close: bool = True, timeout: float = 30):
    """Send ``data`` on a new connection; return (responses, closed): every response
    the server wrote as (status, headers, body), and whether it then closed."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
        if half_close:
            s.shutdown(socket.SHUT_WR)
        buf, closed = b"", False
        while True:
            try:
                piece = s.recv(65536)
            except ConnectionResetError:
                closed = True
                break
            if not piece:
                closed = True
                break
            buf += piece
            if not half_close and _complete(buf):
                break
    return parse(buf), closed


def _complete(buf: bytes) -> bool:
    responses = parse(buf)
    return bool(responses) and responses[-1][0] is not None


def parse(buf: bytes) -> list:
    out = []
    while buf:
        head, sep, rest = buf.partition(b"\r\n\r\n")
        if not sep:
            out.append((None, {}, buf))
            break
        lines = head.split(b"\r\n")
        status = int(lines[0].split(b" ")[1])
        headers = {}
        for line in lines[1:]:
            k, _, v = line.partition(b":")
            headers[k.strip().lower().decode()] = v.strip().decode("latin-1")
        n = int(headers.get("content-length", 0))
        if headers.get("transfer-encoding") == "chunked":
            body, rest = _dechunk(rest)
        else:
            body, rest = rest[:n], rest[n:]
        out.append((status, headers, body))
        buf = rest
    return out


def _dechunk(rest: bytes):
    body = b""
    while True:
        line, _, rest = rest.partition(b"\r\n")
        size = int(line.split(b";")[0], 16)
        if size == 0:
            return body, rest.partition(b"\r\n")[2]
        body, rest = body + rest[:size], rest[size + 2:]


def fingerprint(url: str) -> dict:
    """Names, sizes, etags and dead properties of the whole volume, and a hash of each
    file's bytes."""
    r = requests.request("PROPFIND", url + "/", headers={"Depth": "infinity"},
                         data=b'<?xml version="1.0"?><D:propfind xmlns:D="DAV:"><D:allprop/>'
                              b'</D:propfind>')
    assert r.status_code == 207, r.text
    state = {}
    for resp in ET.fromstring(r.content).iter("{DAV:}response"):
        href = resp.find("{DAV:}href").text
        props = {}
        for prop in resp.iter("{DAV:}prop"):
            for p in prop:
                if p.tag in ("{DAV:}getlastmodified", "{DAV:}creationdate",
                             "{DAV:}lockdiscovery", "{DAV:}supportedlock",
                             "{DAV:}quota-available-bytes", "{DAV:}quota-used-bytes"):
                    continue
                props[p.tag] = ET.tostring(p)
        if not href.endswith("/"):
            props["sha256"] = hashlib.sha256(requests.get(url + href).content).hexdigest()
        state[href] = props
    return state


def request(method: str, path: str, headers: dict | None = None, body: bytes = b"",
            chunked: bool = False) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1"]
    for k, v in (headers or {}).items():
        lines.append(f"{k}: {v}")
    if chunked:
        lines.append("Transfer-Encoding: chunked")
        body = (b"%x\r\n" % len(body) + body + b"\r\n" if body else b"") + b"0\r\n\r\n"
    else:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


STATUS = re.compile(rb"^HTTP/1\.[01] (\d{3}) ")
