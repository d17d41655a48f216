"""Issue 14, one test (or a few) per point, each against a real gateway on 127.0.0.1:
idle and slow connections, CSRF, stored XSS, locks on every face, quotas on properties,
header values, login backoff, names, deleted tenants, lock administration, token scopes,
and the smaller ones (readyz, error texts, file modes, lock owners)."""

import json
import os
import socket
import stat
import time
from pathlib import Path

import pytest
import requests

from tests.razor import HOST, RazorServer
from tests.service.test_gate import (LOCKINFO, PASSWORDS, as_, cli, ok, server,  # noqa: F401
                                     setup_registry)


def _meta_db(data_dir, tenant):
    """The tenant's tree database (its directory is <name>.<hex>)."""
    (db,) = [os.path.join(data_dir, "tenants", d, "meta.db")
             for d in os.listdir(os.path.join(data_dir, "tenants"))
             if d.startswith(tenant + ".")]
    assert os.path.exists(db)
    return db


# -- 1: idle and slow connections --

def _connect_from(address, port):
    s = socket.socket()
    s.bind((address, 0))
    s.connect((HOST, port))
    return s


def test_hundreds_of_idle_and_slow_connections_lock_nobody_out(server):
    """300 sockets from five addresses (60 each, under the per-address cap): half send
    nothing, half a request head that never ends. A real client is still served at once."""
    socks = []
    try:
        for i in range(300):
            s = _connect_from(f"127.0.0.{2 + i % 5}", server.port)
            if i % 2:
                s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: a")
            socks.append(s)
        time.sleep(0.5)          # let the gateway see them all
        for _ in range(3):
            r = requests.get(server.url + "/healthz", timeout=1)
            assert r.status_code == 200
            r = as_("alice").request("PROPFIND", server.url + "/", headers={"Depth": "0"},
                                     timeout=1)
            assert r.status_code == 207
    finally:
        for s in socks:
            s.close()


def test_connections_past_the_per_address_cap_are_closed(server):
    socks = [_connect_from("127.0.0.9", server.port) for _ in range(70)]
    try:
        last = socks[-1]
        last.settimeout(5)
        assert last.recv(10) == b""          # closed by the gateway, unanswered
        assert requests.get(server.url + "/healthz", timeout=1).status_code == 200
    finally:
        for s in socks:
            s.close()


def test_a_head_that_never_ends_is_closed_after_header_timeout(tmp_path):
    conf = tmp_path / "c.yaml"
    conf.write_text("header_timeout: 1\n")
    with RazorServer(tmp_path / "data", extra=["--config", str(conf)]) as srv:
        s = socket.create_connection((HOST, srv.port))
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")
        s.settimeout(15)
        deadline = time.monotonic() + 15
        data = b"x"
        while data and time.monotonic() < deadline:   # trickle until the gateway hangs up
            s.sendall(b"X: y\r\n")
            try:
                data = s.recv(100)
            except socket.timeout:
                break
            except ConnectionResetError:
                data = b""
        assert data == b""
        s.close()


# -- 2: CSRF --

def test_state_changing_api_calls_take_json_from_the_gateways_own_pages(server):
    root = as_("root")
    url = server.url + "/api/v1/users"
    user = {"name": "mallory", "tenant": "acme", "role": "admin", "password": "pw-mallory"}
    r = root.post(url, data=user)                                   # a form post
    assert r.status_code == 415, r.text
    r = root.post(url, data=str(user), headers={"Content-Type": "text/plain"})
    assert r.status_code == 415
    r = root.post(url, json=user, headers={"Origin": "https://evil.example"})
    assert r.status_code == 403
    r = root.post(url, json=user, headers={"Sec-Fetch-Site": "cross-site"})
    assert r.status_code == 403
    r = root.request("DELETE", server.url + "/report.txt",
                     headers={"Origin": "https://evil.example"})
    assert r.status_code == 403                                      # WebDAV too
    assert root.get(server.url + "/api/v1/users/mallory").status_code == 404
    r = root.post(url, json=user, headers={"Origin": server.url, "Sec-Fetch-Site": "same-origin"})
    assert r.status_code == 201, r.text
    assert root.delete(server.url + "/api/v1/users/mallory").status_code == 204


def test_allowed_origins_come_from_the_config(tmp_path):
    setup_registry(tmp_path / "data")
    conf = tmp_path / "c.yaml"
    conf.write_text("cors_origins: [https://app.example]\n")
    with RazorServer(tmp_path / "data", extra=["--auth", "basic", "--config", str(conf)]) as srv:
        root = as_("root")
        r = root.post(srv.url + "/api/v1/dirs/from-app",
                      headers={"Origin": "https://app.example", "Sec-Fetch-Site": "cross-site"})
        assert r.status_code == 201, r.text
        r = root.post(srv.url + "/api/v1/dirs/from-evil", headers={"Origin": "https://evil.example"})
        assert r.status_code == 403


# -- 3: stored XSS --

@pytest.mark.parametrize("name", ["evil.html", "evil.svg", "evil.js", "evil.xml", "evil.txt"])
def test_uploaded_files_cannot_run_in_the_gateways_origin(server, name):
    alice = as_("alice")
    assert alice.put(server.url + "/" + name, data=b"<script>alert(1)</script>").status_code \
        in (201, 204)
    for r in (alice.get(server.url + "/" + name),
              alice.get(server.url + "/api/v1/content/" + name)):
        assert r.status_code == 200
        assert r.headers["X-Content-Type-Options"] == "nosniff"
        assert "sandbox" in r.headers["Content-Security-Policy"].split(";")[0]


def test_the_gateways_own_pages_have_a_strict_policy(server):
    for r in (as_("alice").get(server.url + "/"), requests.get(server.url + "/"),
              requests.get(server.url + "/healthz"), as_("alice").get(server.url + "/nope")):
        policy = r.headers["Content-Security-Policy"]
        assert "default-src 'none'" in policy and "sandbox" in policy, r.status_code
        assert r.headers["X-Content-Type-Options"] == "nosniff"


# -- 6: header values compared as the RFCs say --

def test_depth_infinity_in_any_case_is_bounded(tmp_path):
    from tests.dav.test_hostile import make_big_tree
    make_big_tree(tmp_path / "data")
    with RazorServer(tmp_path / "data") as s:
        for depth in ("Infinity", "INFINITY"):
            r = requests.request("PROPFIND", s.url + "/", headers={"Depth": depth})
            assert r.status_code == 403 and "propfind-finite-depth" in r.text, depth
        requests.put(s.url + "/r.txt", data=b"0123456789")
        r = requests.get(s.url + "/r.txt", headers={"Range": "BYTES=2-4"})
        assert r.status_code == 206 and r.content == b"234"


# -- 7: login backoff --

def _get_from(address, port, auth):
    import base64
    import http.client
    conn = http.client.HTTPConnection(HOST, port, timeout=30, source_address=(address, 0))
    token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
    conn.request("GET", "/", headers={"Authorization": f"Basic {token}"})
    status = conn.getresponse().status
    conn.close()
    return status


def test_parallel_guesses_are_counted_before_they_are_checked(server):
    from concurrent.futures import ThreadPoolExecutor
    with ThreadPoolExecutor(16) as pool:
        codes = list(pool.map(lambda i: _get_from("127.0.0.20", server.port,
                                                  ("dave", f"guess{i}")), range(24)))
    assert codes.count(401) <= 6 and codes.count(429) >= 18, codes


def test_a_success_does_not_reset_the_address_budget(server):
    addr = "127.0.0.21"
    for i in range(19):       # different names: only the address budget counts them
        assert _get_from(addr, server.port, (f"spray{i}", "guess")) == 401
    assert _get_from(addr, server.port, ("alice", PASSWORDS["alice"])) == 200
    codes = [_get_from(addr, server.port, (f"spray-b{i}", "guess")) for i in range(3)]
    assert 429 in codes, codes


def test_guessing_a_password_elsewhere_does_not_lock_the_user_out(server):
    assert _get_from("127.0.0.22", server.port, ("bob", PASSWORDS["bob"])) == 200
    for i in range(10):
        _get_from("127.0.0.23", server.port, ("bob", f"guess{i}"))
    assert _get_from("127.0.0.23", server.port, ("bob", PASSWORDS["bob"])) == 429
    assert _get_from("127.0.0.22", server.port, ("bob", PASSWORDS["bob"])) == 200


# -- 8: names --

@pytest.mark.parametrize("name", ["c\n", "acme\n", "c\r", " c", "C", "c/d", "", "a" * 64])
def test_names_are_matched_whole(server, name):
    root = as_("root")
    r = root.post(server.url + "/api/v1/tenants", json={"name": name})
    assert r.status_code == 400, (name, r.status_code)
    if name not in ("C", ""):   # "xC" and "x" are fine user names
        r = root.post(server.url + "/api/v1/users", json={
            "name": "x" + name, "tenant": "acme", "role": "writer", "password": "pw"})
        assert r.status_code == 400, (name, r.status_code)
    r = cli("tenant", "add", name, data_dir=server.data_dir)
    assert r.returncode != 0
    names = [t["name"] for t in root.get(server.url + "/api/v1/tenants").json()["tenants"]]
    assert all(n.strip() == n and "\n" not in n for n in names)


# -- 4 and 10: locks on every face; admins list and break them --

def _lock(session, url, depth="infinity", timeout="Infinite", body=LOCKINFO):
    return session.request("LOCK", url, data=body,
                           headers={"Depth": depth, "Timeout": timeout})


def _locks(tenant="acme"):
    r = as_("root").get(f"{_locks.url}/api/v1/locks", params={"tenant": tenant})
    assert r.status_code == 200, r.text
    return r.json()["locks"]


def test_the_rest_api_honours_webdav_locks(server):
    _locks.url = server.url
    alice, root = as_("alice"), as_("root")
    alice.request("MKCOL", server.url + "/tree")
    alice.request("MKCOL", server.url + "/tree/sub")
    alice.put(server.url + "/tree/sub/f.txt", data=b"v1")
    alice.put(server.url + "/free.txt", data=b"free")
    r = _lock(alice, server.url + "/tree/sub/f.txt", depth="0")
    assert r.status_code == 200
    token = r.headers["Lock-Token"].strip("<>")
    api = server.url + "/api/v1"
    assert root.put(api + "/content/tree/sub/f.txt", data=b"v2").status_code == 423
    assert root.delete(api + "/files/tree", params={"recursive": "true"}).status_code == 423
    assert root.delete(api + "/files/tree/sub/f.txt").status_code == 423
    assert root.post(api + "/move", json={"from": "free.txt", "to": "tree/sub/f.txt",
                                          "overwrite": True}).status_code == 423
    assert root.post(api + "/move", json={"from": "tree", "to": "t2"}).status_code == 423
    assert root.post(api + "/copy", json={"from": "free.txt", "to": "tree/sub/f.txt",
                                          "overwrite": True}).status_code == 423
    assert alice.get(server.url + "/tree/sub/f.txt").content == b"v1"
    r = alice.request("UNLOCK", server.url + "/tree/sub/f.txt",
                      headers={"Lock-Token": f"<{token}>"})
    assert r.status_code == 204
    assert root.delete(api + "/files/tree", params={"recursive": "true"}).status_code == 204
    assert not [lock for lock in _locks() if lock["path"].startswith("/tree")]


def test_admins_list_and_break_locks_and_timeouts_are_capped(server):
    _locks.url = server.url
    alice, root = as_("alice"), as_("root")
    r = _lock(alice, server.url + "/", timeout="Infinite, Second-4100000000")
    assert r.status_code == 200, r.text
    import re
    seconds = int(re.search(r"Second-(\d+)", r.text).group(1))
    assert 3500 < seconds <= 3600                        # lock_timeout_max, not forever
    assert root.put(server.url + "/x.txt", data=b"x").status_code == 423
    (lock,) = [lock for lock in _locks() if lock["path"] == "/"]
    assert lock["principal"] == "alice" and lock["depth"] == "infinity"
    assert lock["expires"] <= time.time() + 3601
    assert root.get(server.url + "/api/v1/locks", params={"tenant": "acme"},
                    auth=("alice", PASSWORDS["alice"])).status_code == 403
    r = root.delete(f"{server.url}/api/v1/locks/{lock['token']}", params={"tenant": "acme"})
    assert r.status_code == 204
    assert root.put(server.url + "/x.txt", data=b"x").status_code in (201, 204)
    assert not _locks()


def test_a_lock_that_fails_stores_nothing(server):
    _locks.url = server.url
    body = (b'<?xml version="1.0"?><!DOCTYPE d [<!ENTITY e SYSTEM "file:///etc/passwd">]>'
            b'<D:lockinfo xmlns:D="DAV:"><D:lockscope><D:exclusive/></D:lockscope>'
            b'<D:locktype><D:write/></D:locktype><D:owner>&undefined;</D:owner></D:lockinfo>')
    r = _lock(as_("alice"), server.url + "/", body=body)
    assert r.status_code >= 400
    assert "Traceback" not in r.text and "undefined" not in r.text
    assert not _locks()
    assert as_("root").put(server.url + "/y.txt", data=b"y").status_code in (201, 204)


# -- 12: the smaller ones --

def test_errors_are_400s_with_no_exception_text(server):
    alice, root = as_("alice"), as_("root")
    r = alice.put(server.url + "/m.txt", data=b"m", headers={"X-OC-Mtime": "9" * 30})
    assert r.status_code == 400
    r = root.post(server.url + "/api/v1/tenants", json={"name": "huge", "quota_bytes": 10**30})
    assert r.status_code == 400
    r = root.patch(server.url + "/api/v1/tenants/acme", json={"quota_bytes": 10**30})
    assert r.status_code == 400
    assert "Overflow" not in r.text and "Traceback" not in r.text


def test_the_data_dir_is_private_whatever_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        setup_registry(tmp_path / "data")
        with RazorServer(tmp_path / "data", extra=["--auth", "basic"]) as srv:
            assert as_("alice").put(srv.url + "/f.txt", data=b"f").status_code == 201
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(tmp_path / "data").st_mode) == 0o700
    for dirpath, dirs, files in os.walk(tmp_path / "data"):
        for name in dirs + files:
            mode = stat.S_IMODE(os.lstat(os.path.join(dirpath, name)).st_mode)
            assert not mode & 0o077, (dirpath, name, oct(mode))


def test_readyz_takes_no_write_lock_and_names_nothing(server):
    import sqlite3
    assert as_("alice").get(server.url + "/").status_code == 200     # acme's volume is open
    db = sqlite3.connect(_meta_db(server.data_dir, "acme"),
                         timeout=1)
    db.execute("BEGIN IMMEDIATE")           # a writer holds acme's write lock
    try:
        r = requests.get(server.url + "/readyz", timeout=5)
        assert r.status_code == 200, r.text
        assert "acme" not in r.text
    finally:
        db.rollback()
        db.close()


# -- 5: dead properties count against the quota --

def test_dead_properties_count_against_the_quota(tmp_path):
    setup_registry(tmp_path / "data")
    ok(cli("tenant", "add", "tiny", "--quota", "1000", data_dir=tmp_path / "data"))
    ok(cli("user", "add", "tim", "--tenant", "tiny", "--role", "writer", "--password-stdin",
           data_dir=tmp_path / "data", stdin="tim-pw\n"))
    with RazorServer(tmp_path / "data", extra=["--auth", "basic"]) as srv:
        tim = requests.Session()
        tim.auth = ("tim", "tim-pw")
        assert tim.put(srv.url + "/f.txt", data=b"f" * 100).status_code == 201
        statuses = []
        for i in range(5):
            body = (b'<?xml version="1.0"?><D:propertyupdate xmlns:D="DAV:"><D:set><D:prop>'
                    b'<x:p%d xmlns:x="urn:x">' % i + b"v" * 100_000 +
                    b'</x:p%d></D:prop></D:set></D:propertyupdate>' % i)
            r = tim.request("PROPPATCH", srv.url + "/f.txt", data=body)
            statuses.append(r.status_code)
            assert r.status_code == 207 and "507" in r.text, (i, r.status_code, r.text[:300])
        db = _meta_db(srv.data_dir, "tiny")
        assert os.path.getsize(db) < 2_000_000
        # a small one fits, and counts
        body = (b'<?xml version="1.0"?><D:propertyupdate xmlns:D="DAV:"><D:set><D:prop>'
                b'<x:s xmlns:x="urn:x">small</x:s></D:prop></D:set></D:propertyupdate>')
        r = tim.request("PROPPATCH", srv.url + "/f.txt", data=body)
        assert r.status_code == 207 and "200 OK" in r.text


# -- 11: app token scopes --

def _token(server, user, *extra):
    import re
    return re.search(r"rzt_\S+", ok(cli("token", "create", user, *extra,
                                        data_dir=server.data_dir))).group(0)


def test_app_tokens_reach_files_only_unless_scoped_all(server):
    url = server.url
    files_token = _token(server, "root")
    s = requests.Session()
    s.auth = ("root", files_token)
    assert s.request("PROPFIND", url + "/", headers={"Depth": "0"}).status_code == 207
    assert s.get(url + "/api/v1/files").status_code == 200
    for path in ("/api/v1/users", "/api/v1/tenants", "/metrics", "/api/v1/stats"):
        assert s.get(url + path).status_code == 403, path
    assert s.put(url + "/api/v1/users/alice/password",
                 json={"password": "stolen"}).status_code == 403
    assert s.post(url + "/api/v1/users/root/tokens", json={}).status_code == 403
    s.auth = ("root", _token(server, "root", "--scope", "all"))
    assert s.get(url + "/api/v1/users").status_code == 200
    # password and token management need the password, whatever the token's scope
    assert s.put(url + "/api/v1/users/alice/password",
                 json={"password": "stolen"}).status_code == 403
    assert s.post(url + "/api/v1/users/root/tokens", json={"scope": "all"}).status_code == 403
    assert as_("alice").get(url + "/").status_code == 200           # her password still works
    r = as_("root").post(url + "/api/v1/users/alice/tokens", json={"label": "x"})
    assert r.status_code == 201


# -- 9: a deleted tenant's data goes with it --

def test_a_tenant_made_again_starts_empty(server):
    root, api = as_("root"), server.url + "/api/v1"
    user = {"name": "tess", "tenant": "temp", "role": "writer", "password": "tess-pw"}
    for round_ in range(2):
        assert root.post(api + "/tenants", json={"name": "temp"}).status_code == 201
        assert root.post(api + "/users", json=user).status_code == 201
        tess = requests.Session()
        tess.auth = ("tess", "tess-pw")
        assert tess.get(server.url + "/secret.txt").status_code == 404, round_
        assert tess.put(server.url + "/secret.txt", data=b"old secret").status_code == 201
        assert root.delete(api + "/tenants/temp").status_code == 204
    tenants = os.path.join(server.data_dir, "tenants")
    assert not [d for d in os.listdir(tenants) if d.startswith("temp")]
    stored = os.path.join(server.data_dir, "store", "tenants")
    assert not [d for d in os.listdir(stored) if d.startswith("temp") and
                any(files for _, _, files in os.walk(os.path.join(stored, d)))]


def test_a_tenant_made_before_tenant_dirs_keeps_its_data(tmp_path):
    """A registry written by main's code has no tenant_dir rows: its tenants live under
    their bare names, and still do."""
    import sqlite3
    data = tmp_path / "data"
    setup_registry(data)
    db = sqlite3.connect(data / "meta.db")
    with db:
        db.execute("DELETE FROM meta WHERE key LIKE 'tenant_dir:%'")
    db.close()
    with RazorServer(data, extra=["--auth", "basic"]) as srv:
        assert as_("alice").put(srv.url + "/old.txt", data=b"old").status_code == 201
    assert (data / "tenants" / "acme" / "meta.db").exists()
    with RazorServer(data, extra=["--auth", "basic"]) as srv:
        assert as_("alice").get(srv.url + "/old.txt").content == b"old"


def test_admins_list_and_break_locks_from_the_cli(server):
    """``razordav lock list|break`` on a running gateway: the gateway reads its lock
    table through, so a lock broken from the command line is gone at its next check."""
    _locks.url = server.url
    alice, root = as_("alice"), as_("root")
    assert alice.put(server.url + "/cli-locked.txt", data=b"v1").status_code in (201, 204)
    r = _lock(alice, server.url + "/cli-locked.txt", depth="0")
    assert r.status_code == 200, r.text
    token = r.headers["Lock-Token"].strip("<>")
    assert root.put(server.url + "/cli-locked.txt", data=b"v2").status_code == 423
    listed = ok(cli("lock", "list", "--tenant", "acme", data_dir=server.data_dir))
    (row,) = [line for line in listed.splitlines() if token in line]
    assert row.split()[:5] == ["acme", token, "/cli-locked.txt", "alice", "0"]
    assert token in ok(cli("lock", "list", data_dir=server.data_dir))     # every tenant
    assert token not in ok(cli("lock", "list", "--tenant", "globex", data_dir=server.data_dir))
    r = cli("lock", "break", token, "--tenant", "globex", data_dir=server.data_dir)
    assert r.returncode == 1 and "no live lock" in r.stderr
    assert "broken" in ok(cli("lock", "break", token, data_dir=server.data_dir))
    # at once: no wait, no restart
    assert root.put(server.url + "/cli-locked.txt", data=b"v2").status_code in (201, 204)
    assert not [lock for lock in _locks() if lock["token"] == token]
    r = alice.request("UNLOCK", server.url + "/cli-locked.txt",
                      headers={"Lock-Token": f"<{token}>"})
    assert r.status_code == 409                  # its holder lost it
    audit = (Path(server.data_dir) / "audit.log").read_text().splitlines()
    (line,) = [json.loads(a) for a in audit if token in a]
    assert line["action"] == "lock.break" and line["details"]["tenant"] == "acme"


def test_locks_are_listed_and_broken_on_a_stopped_data_dir(tmp_path):
    data = tmp_path / "data"
    setup_registry(data)
    with RazorServer(data, extra=["--auth", "basic"]) as srv:
        r = _lock(as_("alice"), srv.url + "/", depth="infinity")
        assert r.status_code == 200, r.text
        token = r.headers["Lock-Token"].strip("<>")
    assert token in ok(cli("lock", "list", data_dir=data))
    ok(cli("lock", "break", token, "--tenant", "acme", data_dir=data))
    assert token not in ok(cli("lock", "list", data_dir=data))
    with RazorServer(data, extra=["--auth", "basic"]) as srv:
        assert as_("root").put(srv.url + "/x.txt", data=b"x").status_code == 201
