"""The REST API over real volumes and a real registry, served by cheroot on 127.0.0.1 and
spoken to with requests (and raw sockets where requests would tidy a hostile request up).

The gate is played by a small WSGI wrapper: it turns an ``X-Test-As: user:tenant:role``
header into the Principal the real gate would put in the environ, so each test picks its
caller. Three volumes stand for the main namespace and two tenants.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import logging
import resource
import socket
import threading
import time

import pytest
import requests
from argon2 import PasswordHasher
from cheroot import wsgi
from openapi_spec_validator import validate

from razordav.core import errors
from razordav.core.volume import Volume
from razordav.web.http import Connection
from razordav.service import PRINCIPAL_KEY, Principal
from razordav.service.api import make_api
from razordav.service.registry import Registry

BLOCK = 64 << 10    # small blocks, so ranges and uploads cross block boundaries
PROBLEM = "application/problem+json"

ADMIN = {"X-Test-As": "root:acme:admin"}
ACME = {"X-Test-As": "alice:acme:writer"}
ACME_READER = {"X-Test-As": "rita:acme:reader"}
GLOBEX = {"X-Test-As": "gus:globex:writer"}


class StandInService:
    """What the API needs of the gate's Service, over real volumes and a real registry."""

    def __init__(self, main, tenants: dict, registry):
        self.main_volume, self.tenants, self.registry = main, tenants, registry

    def volume_for(self, principal):
        if not principal.tenant:
            return self.main_volume
        if principal.tenant not in self.tenants:     # as Service: the registry says no
            raise errors.NotFound(f"no tenant {principal.tenant!r}")
        return self.tenants[principal.tenant]

    def volumes(self):
        return dict(self.tenants)

    def delete_tenant(self, name):
        # the stand-in's volumes are the fixture's to close and delete
        return self.registry.del_tenant(name), 0

    def set_tenant_limits(self, name, quota_bytes, max_files):
        tenant = self.registry.set_tenant_limits(name, quota_bytes, max_files)
        if name in self.tenants:
            self.tenants[name].set_quota(tenant.quota_bytes, tenant.max_files)
        return tenant

    def lock_manager(self, tenant):
        """A lock manager over an empty lock table: nothing here is locked."""
        from wsgidav.lock_man.lock_manager import LockManager
        from wsgidav.lock_man.lock_storage import LockStorageDict
        if not hasattr(self, "_locks"):
            self._locks = LockManager(LockStorageDict())
        return self._locks

    def principal(self, environ):
        return environ.get(PRINCIPAL_KEY)


def _as_gate(app):
    """Put the Principal named by X-Test-As where the gate would."""
    def wrapped(environ, start_response):
        who = environ.pop("HTTP_X_TEST_AS", None)
        if who:
            user, tenant, role = who.split(":")
            environ[PRINCIPAL_KEY] = Principal(user, tenant, role, "basic")
        return app(environ, start_response)
    return wrapped


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("api")
    opened = {name: Volume.open(root / name, None, block_size=BLOCK, journal_interval=0,
                                workers=2, uploaders=2)
              for name in ("main", "acme", "globex")}
    registry = Registry(opened["main"].tree,
                        hasher=PasswordHasher(time_cost=1, memory_cost=64, parallelism=1))
    service = StandInService(opened["main"], {"acme": opened["acme"],
                                              "globex": opened["globex"]}, registry)
    api = make_api(service)
    server = wsgi.Server(("127.0.0.1", 0), _as_gate(api), numthreads=4)
    server.ConnectionClass = Connection   # the framing every face gets (web/http.py)
    server.prepare()
    thread = threading.Thread(target=server.serve, daemon=True)
    thread.start()
    host, port = server.bind_addr
    try:
        yield {"url": f"http://{host}:{port}", "port": port, "api": api, "service": service,
               "vols": opened, "registry": registry}
    finally:
        server.stop()
        thread.join(10)
        for vol in opened.values():
            vol.close()


def call(env, method, path, headers=ACME, **kw):
    return requests.request(method, env["url"] + path, headers=headers, timeout=30, **kw)


def problem(r, status):
    assert r.status_code == status, r.text
    assert r.headers["Content-Type"] == PROBLEM
    body = r.json()
    assert body["status"] == status and body["title"] and body["type"] == "about:blank"
    return body


def raw(env, request: bytes) -> tuple[int, bytes]:
    """Send bytes as they are; return the status and the whole answer."""
    with socket.create_connection(("127.0.0.1", env["port"]), timeout=30) as s:
        s.sendall(request)
        s.shutdown(socket.SHUT_WR)
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    return int(data.split(b" ", 2)[1]), data


def put(env, path, data, headers=ACME):
    return call(env, "PUT", "/api/v1/content" + path, headers=headers, data=data)


# -- the OpenAPI document --

def _routes(api):
    """(OpenAPI path, method) of every responder the app has, from Falcon's route table."""
    found = set()

    def walk(node):
        if node.resource is not None:
            for method, fn in node.method_map.items():
                if inspect.ismethod(fn) and fn.__self__ is node.resource:
                    found.add((node.uri_template.replace(":path}", "}"), method.lower()))
        for child in node.children:
            walk(child)
    for root in api.falcon._router._roots:
        walk(root)
    return found


def test_openapi_document_is_valid_3_1_and_covers_every_route(env):
    r = call(env, "GET", "/api/v1/openapi.json")
    assert r.status_code == 200
    doc = r.json()
    assert doc["openapi"].startswith("3.1")
    validate(doc)
    documented = {(path, method) for path, ops in doc["paths"].items() for method in ops}
    routes = _routes(env["api"]) - {("/api/v1/openapi.json", "get")}
    assert len(routes) > 25
    assert routes - documented == set(), "routes missing from the OpenAPI document"
    assert documented - routes == set(), "documented operations without a route"
    assert doc["paths"]["/healthz"]["get"]["security"] == []     # no authentication
    assert "security" not in doc["paths"]["/api/v1/files/{path}"]["get"]    # the global one
    assert {s for alt in doc["security"] for s in alt} == {"basic", "bearer"}
    download = doc["paths"]["/api/v1/content/{path}"]["get"]["responses"]
    assert list(download["404"]["content"]) == [PROBLEM]
    assert download["206"]["content"]["*/*"]["schema"]["format"] == "binary"
    move = doc["paths"]["/api/v1/move"]["post"]
    assert list(move["responses"]["201"]["content"]) == ["application/json"]
    schema = doc["components"]["schemas"][
        move["requestBody"]["content"]["application/json"]["schema"]["$ref"].split("/")[-1]]
    assert {"from", "to", "overwrite"} <= set(schema["properties"])


# -- files --

def test_listing_pages_with_a_stable_cursor(env):
    assert call(env, "POST", "/api/v1/dirs/pages").status_code == 201
    for i in range(7):
        assert put(env, f"/pages/f{i}", b"x" * i).status_code == 201
    seen, cursor = [], None
    while True:
        params = {"limit": 3, **({"cursor": cursor} if cursor else {})}
        r = call(env, "GET", "/api/v1/files/pages", params=params)
        assert r.status_code == 200
        body = r.json()
        assert body["type"] == "dir" and body["path"] == "/pages"
        seen += [e["name"] for e in body["entries"]]
        if not seen or seen == ["f0", "f1", "f2"]:
            # entries change between pages: one before the cursor, one after it
            call(env, "DELETE", "/api/v1/files/pages/f1")
            put(env, "/pages/f9", b"new")
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert seen == ["f0", "f1", "f2", "f3", "f4", "f5", "f6", "f9"]
    entry = call(env, "GET", "/api/v1/files/pages").json()["entries"][0]
    assert entry["type"] == "file" and entry["size"] == 0 and entry["etag"]
    assert isinstance(entry["mtime"], float)


@pytest.mark.parametrize("limit", ["0", "-1", "abc", "10001"])
def test_listing_refuses_a_bad_limit(env, limit):
    problem(call(env, "GET", "/api/v1/files/", params={"limit": limit}), 400)


def test_root_listing_and_file_stat(env):
    put(env, "/stat-me.txt", b"hello")
    root = call(env, "GET", "/api/v1/files").json()
    assert root["path"] == "/" and "stat-me.txt" in [e["name"] for e in root["entries"]]
    assert call(env, "GET", "/api/v1/files/").json()["path"] == "/"
    st = call(env, "GET", "/api/v1/files/stat-me.txt").json()
    assert st["type"] == "file" and st["size"] == 5 and "entries" not in st
    assert st["etag"] == env["vols"]["acme"].stat("/stat-me.txt").etag


def test_missing_paths_are_404(env):
    assert problem(call(env, "GET", "/api/v1/files/no/such"), 404)["code"] == "NotFound"
    problem(call(env, "GET", "/api/v1/content/nothing.bin"), 404)
    problem(call(env, "DELETE", "/api/v1/files/nothing.bin"), 404)
    problem(put(env, "/no-dir/file", b"x"), 404)


@pytest.mark.parametrize("request_line", [
    "GET /api/v1/files/a/../b", "GET /api/v1/files/a/%2e%2e/b", "DELETE /api/v1/files/%2E%2E",
    "GET /api/v1/content/./x", "PUT /api/v1/content/a/%2E/x", "GET /api/v1/files/a%5cb",
    "GET /api/v1/files/a%00b", "POST /api/v1/dirs/..%2fescape", "GET /api/v1/files/..",
])
def test_traversal_is_refused(env, request_line):
    status, data = raw(env, f"{request_line} HTTP/1.1\r\nHost: x\r\n"
                            f"X-Test-As: alice:acme:writer\r\nContent-Length: 0\r\n"
                            f"Connection: close\r\n\r\n".encode())
    assert status == 400, data
    assert b"application/problem+json" in data
    assert not (env["vols"]["acme"].data_dir.parent / "escape").exists()


def test_traversal_in_a_json_body_is_refused(env):
    put(env, "/t.txt", b"t")
    for body in ({"from": "/t.txt", "to": "/../t.txt"}, {"from": "../../etc", "to": "/e"},
                 {"from": "/t.txt", "to": "/a\\b"}, {"from": "/t.txt", "to": "/a\u0000b"}):
        problem(call(env, "POST", "/api/v1/move", json=body), 400)
        problem(call(env, "POST", "/api/v1/copy", json=body), 400)
    assert env["vols"]["acme"].stat("/t.txt").size == 1


def test_over_long_names_are_refused(env):
    long = "n" * 256
    # NameTooLong carries 414 (URI Too Long) in the core's table, as on WebDAV
    assert problem(put(env, "/" + long, b"x"), 414)["code"] == "NameTooLong"
    problem(call(env, "POST", "/api/v1/dirs/" + long), 414)
    problem(call(env, "POST", "/api/v1/copy", json={"from": "/t.txt", "to": "/" + long}), 414)
    assert put(env, "/" + "n" * 255, b"ok").status_code == 201


def test_put_creates_then_replaces_and_get_streams_back(env):
    r = put(env, "/doc.txt", b"first")
    assert r.status_code == 201 and r.json()["size"] == 5
    assert r.headers["Location"] == "/api/v1/files/doc.txt"
    r = put(env, "/doc.txt", b"second!")
    assert r.status_code == 204 and r.content == b""
    r = call(env, "GET", "/api/v1/content/doc.txt")
    assert r.status_code == 200 and r.content == b"second!"
    assert r.headers["ETag"].strip('"') == env["vols"]["acme"].stat("/doc.txt").etag
    assert r.headers["Accept-Ranges"] == "bytes"


def test_ranges(env):
    data = bytes(range(256)) * 1024                  # 256 KiB: four blocks
    put(env, "/ranged.bin", data)

    def get(rng):
        return call(env, "GET", "/api/v1/content/ranged.bin", headers={**ACME, "Range": rng})
    r = get(f"bytes={BLOCK - 10}-{BLOCK + 9}")       # across a block boundary
    assert r.status_code == 206 and r.content == data[BLOCK - 10:BLOCK + 10]
    assert r.headers["Content-Range"] == f"bytes {BLOCK - 10}-{BLOCK + 9}/{len(data)}"
    r = get("bytes=-5")
    assert r.status_code == 206 and r.content == data[-5:]
    r = get(f"bytes={len(data) - 3}-")
    assert r.content == data[-3:]
    r = get(f"bytes=10-{len(data) * 2}")             # past the end: cut to the end
    assert r.status_code == 206 and r.content == data[10:]
    for ignored in ("bytes=9-3", "bytes=0-1,4-5", "pages=1-2", "bytes=x-"):
        r = get(ignored)
        assert r.status_code == 200 and r.content == data, ignored
    for unsatisfiable in (f"bytes={len(data)}-", "bytes=-0"):
        r = get(unsatisfiable)
        problem(r, 416)
        assert r.headers["Content-Range"] == f"bytes */{len(data)}"


def test_large_upload_streams_in_constant_memory(env):
    piece = hashlib.sha256(b"seed").digest() * (1 << 15)    # 1 MiB
    total = 50 << 20
    digest = hashlib.sha256()

    def body():
        for i in range(total // len(piece)):
            chunk = piece[i % 7:] + piece[:i % 7]            # blocks differ a little
            digest.update(chunk)
            yield chunk
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    r = put(env, "/big.bin", body())                        # chunked: no Content-Length
    grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    assert r.status_code == 201, r.text
    assert r.json()["size"] == total
    assert grown < 40 << 10, f"peak RSS grew by {grown} KiB during a 50 MiB upload"
    got = hashlib.sha256()
    with call(env, "GET", "/api/v1/content/big.bin", stream=True) as r:
        assert int(r.headers["Content-Length"]) == total
        for chunk in r.iter_content(1 << 20):
            got.update(chunk)
    assert got.hexdigest() == digest.hexdigest()


def test_short_body_leaves_the_old_content(env):
    put(env, "/short.txt", b"old")
    status, data = raw(env, b"PUT /api/v1/content/short.txt HTTP/1.1\r\nHost: x\r\n"
                            b"X-Test-As: alice:acme:writer\r\nContent-Length: 100\r\n"
                            b"Connection: close\r\n\r\nonly ten b")
    assert status == 400, data
    assert env["vols"]["acme"].read_file("/short.txt") == b"old"
    status, data = raw(env, b"PUT /api/v1/content/short.txt HTTP/1.1\r\nHost: x\r\n"
                            b"X-Test-As: alice:acme:writer\r\nContent-Length: -4\r\n"
                            b"Connection: close\r\n\r\n")
    assert status == 400
    assert env["vols"]["acme"].read_file("/short.txt") == b"old"


def test_chunked_body_after_an_early_error_does_not_poison_the_connection(env):
    with requests.Session() as s:
        r = s.put(env["url"] + "/api/v1/content/missing-dir/f", headers=ACME,
                  data=(b"GET /healthz HTTP/1.1\r\n\r\n" for _ in range(3)), timeout=30)
        problem(r, 404)
        r = s.get(env["url"] + "/api/v1/files/", headers=ACME, timeout=30)
        assert r.status_code == 200 and r.json()["path"] == "/"


def test_put_without_a_declared_length_is_411(env):
    put(env, "/undeclared.txt", b"old")
    status, data = raw(env, b"PUT /api/v1/content/undeclared.txt HTTP/1.1\r\nHost: x\r\n"
                            b"X-Test-As: alice:acme:writer\r\nConnection: close\r\n\r\n")
    assert status == 411 and b"Content-Length" in data
    assert env["vols"]["acme"].read_file("/undeclared.txt") == b"old"


def test_put_onto_a_directory_is_refused(env):
    call(env, "POST", "/api/v1/dirs/a-dir")
    problem(put(env, "/a-dir", b"x"), 405)
    assert env["vols"]["acme"].stat("/a-dir").is_dir


def test_mkdir(env):
    r = call(env, "POST", "/api/v1/dirs/made")
    assert r.status_code == 201 and r.json()["type"] == "dir"
    assert r.headers["Location"] == "/api/v1/files/made"
    assert problem(call(env, "POST", "/api/v1/dirs/made"), 405)["code"] == "Exists"
    problem(call(env, "POST", "/api/v1/dirs/nope/deeper"), 404)
    put(env, "/plain", b"f")
    problem(call(env, "POST", "/api/v1/dirs/plain/sub"), 409)


def test_move(env):
    put(env, "/mv-a", b"A")
    put(env, "/mv-b", b"B")
    r = call(env, "POST", "/api/v1/move", json={"from": "/mv-a", "to": "/mv-c"})
    assert r.status_code == 201 and r.json()["path"] == "/mv-c"
    vol = env["vols"]["acme"]
    assert vol.read_file("/mv-c") == b"A"
    problem(call(env, "POST", "/api/v1/move", json={"from": "/mv-c", "to": "/mv-b"}), 405)
    assert vol.read_file("/mv-b") == b"B"
    r = call(env, "POST", "/api/v1/move", json={"from": "/mv-c", "to": "/mv-b",
                                               "overwrite": True})
    assert r.status_code == 200 and vol.read_file("/mv-b") == b"A"
    problem(call(env, "POST", "/api/v1/move", json={"from": "/gone", "to": "/x"}), 404)
    problem(call(env, "POST", "/api/v1/move", json={"from": "/", "to": "/x"}), 400)
    call(env, "POST", "/api/v1/dirs/mv-dir")
    problem(call(env, "POST", "/api/v1/move", json={"from": "/mv-dir", "to": "/mv-dir/in"}),
            400)


def test_copy_files_and_trees(env):
    vol = env["vols"]["acme"]
    call(env, "POST", "/api/v1/dirs/cp-src")
    call(env, "POST", "/api/v1/dirs/cp-src/sub")
    put(env, "/cp-src/a", b"a" * 100_000)
    put(env, "/cp-src/sub/b", b"b")
    r = call(env, "POST", "/api/v1/copy", json={"from": "/cp-src", "to": "/cp-dst"})
    assert r.status_code == 201 and r.json()["type"] == "dir"
    assert vol.read_file("/cp-dst/a") == b"a" * 100_000
    assert vol.read_file("/cp-dst/sub/b") == b"b"
    assert vol.read_file("/cp-src/a") == b"a" * 100_000
    problem(call(env, "POST", "/api/v1/copy", json={"from": "/cp-src/a", "to": "/cp-dst/a"}),
            405)
    put(env, "/cp-src/a", b"changed")
    r = call(env, "POST", "/api/v1/copy", json={"from": "/cp-src/a", "to": "/cp-dst/a",
                                               "overwrite": True})
    assert r.status_code == 200 and vol.read_file("/cp-dst/a") == b"changed"
    problem(call(env, "POST", "/api/v1/copy", json={"from": "/cp-src", "to": "/cp-src/in"}),
            400)


@pytest.mark.parametrize("body,ctype", [
    (b"{not json", "application/json"), (b"[1, 2]", "application/json"),
    (b'{"from": "/a"}', "application/json"), (b'{"from": 1, "to": []}', "application/json"),
    (b'{"from": "/a", "to": "/b", "overwrite": "maybe"}', "application/json"),
])
def test_bad_json_is_400(env, body, ctype):
    for route in ("/api/v1/move", "/api/v1/copy", "/api/v1/jobs"):
        r = call(env, "POST", route, data=body, headers={**ACME, "Content-Type": ctype})
        problem(r, 400)


def test_json_bodies_are_bounded(env):
    big = {"from": "/a", "to": "/b", "pad": "x" * (70 << 10)}
    problem(call(env, "POST", "/api/v1/move", json=big), 413)
    body = json.dumps(big).encode()
    chunks = (body[i:i + 4096] for i in range(0, len(body), 4096))
    problem(call(env, "POST", "/api/v1/copy", data=chunks,
                 headers={**ACME, "Content-Type": "application/json"}), 413)
    put(env, "/chunked-json", b"c")
    small = json.dumps({"from": "/chunked-json", "to": "/chunked-json-2"}).encode()
    r = call(env, "POST", "/api/v1/copy", data=iter([small[:10], small[10:]]),
             headers={**ACME, "Content-Type": "application/json"})
    assert r.status_code == 201, r.text


def test_delete(env):
    vol = env["vols"]["acme"]
    put(env, "/del-file", b"x")
    assert call(env, "DELETE", "/api/v1/files/del-file").status_code == 204
    problem(call(env, "DELETE", "/api/v1/files/del-file"), 404)
    call(env, "POST", "/api/v1/dirs/del-dir")
    put(env, "/del-dir/inner", b"x")
    assert problem(call(env, "DELETE", "/api/v1/files/del-dir"), 409)["code"] == "NotEmpty"
    assert vol.read_file("/del-dir/inner") == b"x"
    problem(call(env, "DELETE", "/api/v1/files/del-dir", params={"recursive": "perhaps"}), 400)
    r = call(env, "DELETE", "/api/v1/files/del-dir", params={"recursive": "true"})
    assert r.status_code == 204
    problem(call(env, "GET", "/api/v1/files/del-dir"), 404)
    call(env, "POST", "/api/v1/dirs/empty-dir")
    assert call(env, "DELETE", "/api/v1/files/empty-dir").status_code == 204
    problem(call(env, "DELETE", "/api/v1/files/", params={"recursive": "true"}), 400)


# -- roles and tenants --

def test_a_reader_may_only_read(env):
    vol = env["vols"]["acme"]
    put(env, "/readme", b"r")
    assert call(env, "GET", "/api/v1/content/readme", headers=ACME_READER).content == b"r"
    assert call(env, "GET", "/api/v1/files/", headers=ACME_READER).status_code == 200
    assert call(env, "GET", "/api/v1/stats", headers=ACME_READER).status_code == 200
    attempts = [("PUT", "/api/v1/content/readme", {"data": b"w"}),
                ("PUT", "/api/v1/content/new", {"data": b"w"}),
                ("DELETE", "/api/v1/files/readme", {}),
                ("POST", "/api/v1/dirs/rd", {}),
                ("POST", "/api/v1/move", {"json": {"from": "/readme", "to": "/x"}}),
                ("POST", "/api/v1/copy", {"json": {"from": "/readme", "to": "/x"}}),
                ("POST", "/api/v1/jobs", {"json": {"kind": "gc"}})]
    for method, path, kw in attempts:
        problem(call(env, method, path, headers=ACME_READER, **kw), 403)
    assert vol.read_file("/readme") == b"r"
    for name in ("new", "rd", "x"):
        problem(call(env, "GET", f"/api/v1/files/{name}"), 404)


def test_admin_routes_refuse_writers_and_readers(env):
    for who in (ACME, ACME_READER):
        problem(call(env, "GET", "/api/v1/tenants", headers=who), 403)
        problem(call(env, "POST", "/api/v1/users", headers=who,
                     json={"name": "x", "tenant": "acme", "role": "admin", "password": "p"}),
                403)
        problem(call(env, "DELETE", "/api/v1/tokens/0123456789abcdef", headers=who), 403)
    assert all(u.name != "x" for u in env["registry"].users())


def test_no_principal_is_401_but_health_needs_none(env):
    problem(call(env, "GET", "/api/v1/files/", headers={}), 401)
    assert call(env, "GET", "/healthz", headers={}).json() == {"status": "ok"}
    assert call(env, "GET", "/readyz", headers={}).status_code == 200


def test_a_tenant_that_cannot_be_opened_is_503(env):
    ghost = {"X-Test-As": "casper:ghost:writer"}
    for method, path, kw in (("GET", "/api/v1/files/", {}), ("GET", "/api/v1/stats", {}),
                             ("PUT", "/api/v1/content/x", {"data": b"x"}),
                             ("POST", "/api/v1/jobs", {"json": {"kind": "gc"}})):
        problem(call(env, method, path, headers=ghost, **kw), 503)


def test_tenants_do_not_see_each_other(env):
    put(env, "/secret", b"acme only")
    problem(call(env, "GET", "/api/v1/content/secret", headers=GLOBEX), 404)
    assert "secret" not in [e["name"] for e in
                            call(env, "GET", "/api/v1/files/", headers=GLOBEX).json()["entries"]]
    stats = call(env, "GET", "/api/v1/stats", headers=GLOBEX).json()["volumes"]
    assert list(stats) == ["globex"]


def test_quota_overflow_is_507_and_leaves_nothing(env):
    vol = env["vols"]["globex"]
    put(env, "/kept", b"k" * 1000, headers=GLOBEX)
    used = vol.usage()["bytes"]
    vol.set_quota(used + 10_000, None)
    try:
        problem(put(env, "/too-big", b"x" * 20_000, headers=GLOBEX), 507)   # early
        chunks = (b"y" * 5000 for _ in range(4))                          # at publish
        assert problem(put(env, "/too-big", chunks, headers=GLOBEX), 507)["code"] == "NoSpace"
        problem(call(env, "GET", "/api/v1/files/too-big", headers=GLOBEX), 404)
        problem(put(env, "/kept", b"z" * 20_000, headers=GLOBEX), 507)
        assert vol.read_file("/kept") == b"k" * 1000
        assert put(env, "/fits", b"f" * 6000, headers=GLOBEX).status_code == 201
        problem(call(env, "POST", "/api/v1/copy", headers=GLOBEX,
                     json={"from": "/fits", "to": "/fits-2"}), 507)
        assert vol.usage()["bytes"] == used + 6000
    finally:
        vol.set_quota(None, None)


# -- admin --

def test_tenant_crud(env, caplog):
    caplog.set_level(logging.INFO, logger="razordav.audit")
    r = call(env, "POST", "/api/v1/tenants", headers=ADMIN,
             json={"name": "initech", "quota_bytes": 1000})
    assert r.status_code == 201 and r.json()["quota_bytes"] == 1000
    assert r.headers["Location"] == "/api/v1/tenants/initech"
    problem(call(env, "POST", "/api/v1/tenants", headers=ADMIN, json={"name": "initech"}), 405)
    for bad in ({"name": "Bad Name"}, {"name": ""}, {"name": "ok", "quota_bytes": -1},
                {"quota_bytes": 5}):
        problem(call(env, "POST", "/api/v1/tenants", headers=ADMIN, json=bad), 400)
    names = [t["name"] for t in call(env, "GET", "/api/v1/tenants", headers=ADMIN).json()
             ["tenants"]]
    assert "initech" in names and "ok" not in names
    r = call(env, "PATCH", "/api/v1/tenants/initech", headers=ADMIN, json={"max_files": 5})
    assert r.json() == {**r.json(), "quota_bytes": None, "max_files": 5}
    assert call(env, "GET", "/api/v1/tenants/initech", headers=ADMIN).json()["max_files"] == 5
    r = call(env, "PATCH", "/api/v1/tenants/initech", headers=ADMIN, json={"quota_bytes": 0})
    assert r.json()["quota_bytes"] == 0 and r.json()["max_files"] is None
    assert call(env, "DELETE", "/api/v1/tenants/initech", headers=ADMIN).status_code == 204
    problem(call(env, "GET", "/api/v1/tenants/initech", headers=ADMIN), 404)
    problem(call(env, "DELETE", "/api/v1/tenants/initech", headers=ADMIN), 404)
    problem(call(env, "PATCH", "/api/v1/tenants/initech", headers=ADMIN, json={}), 404)
    actions = [json.loads(r.getMessage())["action"] for r in caplog.records
               if r.name == "razordav.audit"]
    assert actions == ["tenant.add", "tenant.limits", "tenant.limits", "tenant.del"]


def test_user_crud_and_passwords(env, caplog):
    caplog.set_level(logging.INFO, logger="razordav.audit")
    reg = env["registry"]
    call(env, "POST", "/api/v1/tenants", headers=ADMIN, json={"name": "umbrella"})
    user = {"name": "uma", "tenant": "umbrella", "role": "writer", "password": "pw-one-1"}
    r = call(env, "POST", "/api/v1/users", headers=ADMIN, json=user)
    assert r.status_code == 201 and r.json()["role"] == "writer" and "password" not in r.json()
    problem(call(env, "POST", "/api/v1/users", headers=ADMIN, json=user), 405)
    for bad in ({**user, "name": "x2", "role": "god"}, {**user, "name": "x3", "tenant": "none"},
                {**user, "name": "bad name"}, {**user, "name": "x4", "password": ""}):
        assert call(env, "POST", "/api/v1/users", headers=ADMIN, json=bad).status_code in \
            (400, 404)
    assert reg.verify_password("uma", "pw-one-1").name == "uma"
    r = call(env, "PUT", "/api/v1/users/uma/password", headers=ADMIN,
             json={"password": "pw-two-2"})
    assert r.status_code == 204
    assert reg.verify_password("uma", "pw-one-1") is None
    assert reg.verify_password("uma", "pw-two-2").name == "uma"
    problem(call(env, "PUT", "/api/v1/users/nobody/password", headers=ADMIN,
                 json={"password": "x"}), 404)
    r = call(env, "PATCH", "/api/v1/users/uma", headers=ADMIN, json={"role": "reader"})
    assert r.json()["role"] == "reader"
    problem(call(env, "PATCH", "/api/v1/users/uma", headers=ADMIN, json={"role": "root"}), 400)
    listed = call(env, "GET", "/api/v1/users", headers=ADMIN,
                  params={"tenant": "umbrella"}).json()["users"]
    assert [u["name"] for u in listed] == ["uma"]
    assert call(env, "GET", "/api/v1/users/uma", headers=ADMIN).json()["tenant"] == "umbrella"
    assert call(env, "DELETE", "/api/v1/users/uma", headers=ADMIN).status_code == 204
    problem(call(env, "GET", "/api/v1/users/uma", headers=ADMIN), 404)
    logged = " ".join(r.getMessage() for r in caplog.records)
    assert "pw-one-1" not in logged and "pw-two-2" not in logged and "user.passwd" in logged


def test_tokens(env, caplog):
    caplog.set_level(logging.DEBUG)
    reg = env["registry"]
    call(env, "POST", "/api/v1/tenants", headers=ADMIN, json={"name": "tokco"})
    call(env, "POST", "/api/v1/users", headers=ADMIN,
         json={"name": "tina", "tenant": "tokco", "role": "writer", "password": "pw-tina"})
    r = call(env, "POST", "/api/v1/users/tina/tokens", headers=ADMIN, json={"label": "backup"})
    assert r.status_code == 201
    token_id, token = r.json()["id"], r.json()["token"]
    assert reg.verify_password("tina", token).name == "tina"
    listed = call(env, "GET", "/api/v1/users/tina/tokens", headers=ADMIN).json()["tokens"]
    assert [(t["id"], t["label"]) for t in listed] == [(token_id, "backup")]
    assert token not in json.dumps(listed)
    problem(call(env, "POST", "/api/v1/users/ghost/tokens", headers=ADMIN, json={}), 404)
    problem(call(env, "POST", "/api/v1/users/tina/tokens", headers=ADMIN,
                 json={"label": "l" * 101}), 400)
    assert call(env, "DELETE", f"/api/v1/tokens/{token_id}", headers=ADMIN).status_code == 204
    assert reg.verify_password("tina", token) is None
    problem(call(env, "DELETE", f"/api/v1/tokens/{token_id}", headers=ADMIN), 404)
    assert token not in " ".join(r.getMessage() for r in caplog.records)


def test_new_limits_reach_an_open_volume(env):
    vol = env["vols"]["globex"]
    call(env, "POST", "/api/v1/tenants", headers=ADMIN, json={"name": "globex"})
    try:
        r = call(env, "PATCH", "/api/v1/tenants/globex", headers=ADMIN,
                 json={"quota_bytes": 1, "max_files": 1000})
        assert r.status_code == 200
        assert (vol.max_bytes, vol.max_files) == (1, 1000)
        problem(put(env, "/over", b"xx", headers=GLOBEX), 507)
    finally:
        call(env, "PATCH", "/api/v1/tenants/globex", headers=ADMIN, json={})
        call(env, "DELETE", "/api/v1/tenants/globex", headers=ADMIN)
    assert (vol.max_bytes, vol.max_files) == (None, None)


def test_admin_routes_without_a_registry_are_501(env):
    from falcon import testing
    service = StandInService(env["vols"]["main"], {"": env["vols"]["main"]}, None)
    client = testing.TestClient(_as_gate(make_api(service)))
    r = client.simulate_get("/api/v1/tenants", headers=ADMIN)
    assert r.status_code == 501 and r.headers["content-type"] == PROBLEM


# -- stats, jobs, health --

def test_stats(env):
    mine = call(env, "GET", "/api/v1/stats").json()["volumes"]
    assert list(mine) == ["acme"]
    for key in ("cache_bytes", "dirty_bytes", "upload_queue", "logical_bytes",
                "block_stored_bytes", "compression"):
        assert key in mine["acme"], key
    quota = mine["acme"]["quota"]
    assert quota["max_bytes"] is None and quota["bytes"] == env["vols"]["acme"].usage()["bytes"]
    everything = call(env, "GET", "/api/v1/stats", headers=ADMIN).json()["volumes"]
    assert set(everything) == {"acme", "globex"}


def _wait_job(env, location, headers=ACME):
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        job = call(env, "GET", location, headers=headers).json()
        if job["state"] != "running":
            return job
        time.sleep(0.05)
    raise AssertionError(f"job {location} still running")


def test_jobs(env):
    put(env, "/job-file", b"j" * 200_000)
    r = call(env, "POST", "/api/v1/jobs", json={"kind": "fsck", "full": True})
    assert r.status_code == 202 and r.json()["state"] == "running"
    job = _wait_job(env, r.headers["Location"])
    assert job["state"] == "done" and job["progress"] == 1.0, job
    assert job["result"]["clean"] and job["result"]["checked_blocks"] > 0
    r = call(env, "POST", "/api/v1/jobs", json={"kind": "gc"})
    job = _wait_job(env, r.headers["Location"])
    assert job["state"] == "done" and "blocks_deleted" in job["result"]
    problem(call(env, "GET", r.headers["Location"], headers=GLOBEX), 404)
    assert call(env, "GET", r.headers["Location"], headers=ADMIN).status_code == 200
    problem(call(env, "GET", "/api/v1/jobs/feedface"), 404)
    problem(call(env, "POST", "/api/v1/jobs", json={"kind": "defrag"}), 400)
    r = call(env, "POST", "/api/v1/jobs", headers=ADMIN, json={"kind": "gc", "tenant": "globex"})
    assert _wait_job(env, r.headers["Location"], ADMIN)["tenant"] == "globex"
    problem(call(env, "POST", "/api/v1/jobs", json={"kind": "gc", "tenant": "globex"}), 403)
    problem(call(env, "POST", "/api/v1/jobs", headers=ADMIN,
                 json={"kind": "gc", "tenant": "ghost"}), 503)
    ids = {j["id"] for j in call(env, "GET", "/api/v1/jobs").json()["jobs"]}
    assert job["id"] in ids
    assert [j["tenant"] for j in call(env, "GET", "/api/v1/jobs", headers=GLOBEX).json()
            ["jobs"]] == ["globex"]


def test_readyz_answers_503_when_metadata_or_store_fail(env):
    vol = env["vols"]["globex"]
    vol.lease.lost = True                       # as after a 412 on the lease
    try:
        body = problem(call(env, "GET", "/readyz", headers={}), 503)
        assert "globex" not in body["detail"]          # anyone may ask: names no tenant
    finally:
        vol.lease.lost = False
    store_dir = vol.data_dir / "store"
    store_dir.rename(vol.data_dir / "store-away")
    try:
        problem(call(env, "GET", "/readyz", headers={}), 503)
    finally:
        (vol.data_dir / "store-away").rename(store_dir)
    assert call(env, "GET", "/readyz", headers={}).status_code == 200
    assert call(env, "GET", "/healthz", headers={}).status_code == 200


def test_unknown_routes_and_methods_are_problems(env):
    problem(call(env, "GET", "/api/v1/nothing-here"), 404)
    problem(call(env, "PATCH", "/api/v1/files/x"), 405)


# -- behind the real gate, beside WebDAV --

def test_behind_the_gate_with_basic_auth_and_beside_webdav(tmp_path):
    from razordav.dav.app import make_app
    from razordav.service.gate import Gate, Service

    opened = []

    def open_volume(data_dir, store_url, cache_size):
        opened.append(Volume.open(data_dir, store_url, block_size=BLOCK, cache_size=cache_size,
                                  journal_interval=0, workers=2, uploaders=2))
        return opened[-1]
    main = open_volume(tmp_path / "main", None, 1 << 30)
    registry = Registry(main.tree, hasher=PasswordHasher(time_cost=1, memory_cost=64,
                                                         parallelism=1))
    service = Service(main, registry, open_volume=open_volume,
                      make_dav_app=lambda v, key: make_app(v, trusted_user_key=key, verbose=0))
    registry.add_tenant("acme")
    registry.add_user("alice", "acme", "writer", "alice-pw")
    registry.add_user("rita", "acme", "reader", "rita-pw")
    server = wsgi.Server(("127.0.0.1", 0), Gate(service, api_app=make_api(service)),
                         numthreads=4)
    server.prepare()
    thread = threading.Thread(target=server.serve, daemon=True)
    thread.start()
    url = "http://%s:%d" % server.bind_addr
    try:
        assert requests.get(url + "/healthz", timeout=30).json() == {"status": "ok"}
        assert requests.get(url + "/readyz", timeout=30).status_code == 200
        assert requests.get(url + "/api/v1/files/", timeout=30).status_code == 401
        r = requests.get(url + "/api/v1/files/", auth=("alice", "wrong"), timeout=30)
        assert r.status_code == 401
        alice, rita = ("alice", "alice-pw"), ("rita", "rita-pw")
        r = requests.put(url + "/api/v1/content/both-faces.txt", data=b"via the API",
                         auth=alice, timeout=30)
        assert r.status_code == 201, r.text
        r = requests.get(url + "/both-faces.txt", auth=rita, timeout=30)      # WebDAV
        assert r.status_code == 200 and r.content == b"via the API"
        r = requests.put(url + "/api/v1/content/both-faces.txt", data=b"no", auth=rita,
                         timeout=30)
        assert r.status_code == 403 and r.headers["Content-Type"] == PROBLEM
        r = requests.get(url + "/api/v1/tenants", auth=alice, timeout=30)
        assert r.status_code == 403
        assert opened[-1].read_file("/both-faces.txt") == b"via the API"
        assert main.listdir("/") == []          # nothing reached the main namespace
    finally:
        server.stop()
        thread.join(10)
        service.close()
        main.close()
