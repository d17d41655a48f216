"""``razordav serve --auth``, end to end through real processes: users and tenants made with
the CLI, Basic and app tokens, roles, isolation between tenants, backoff, TLS with litmus
and rclone, quotas, restore of the registry and the tenants' volumes."""

import os
import re
import shutil
import subprocess
import sys
import time
import xml.etree.ElementTree as ET

import pytest
import requests

from tests.razor import RazorServer

PASSWORDS = {"alice": "alice-pw-1", "bob": "bob-pw-2", "rita": "rita-pw-3", "root": "root-pw"}


def cli(*args, data_dir, stdin=None, timeout=120):
    return subprocess.run([sys.executable, "-m", "razordav.cli", *args, "--data-dir",
                           str(data_dir)], input=stdin, capture_output=True, text=True,
                          timeout=timeout)


def ok(r):
    assert r.returncode == 0, r.stdout + r.stderr
    return r.stdout


def setup_registry(data_dir):
    ok(cli("tenant", "add", "acme", "--quota", "3M", data_dir=data_dir))
    ok(cli("tenant", "add", "globex", data_dir=data_dir))
    for user, tenant, role in (("alice", "acme", "writer"), ("rita", "acme", "reader"),
                               ("bob", "globex", "writer"), ("root", "acme", "admin")):
        ok(cli("user", "add", user, "--tenant", tenant, "--role", role, "--password-stdin",
               data_dir=data_dir, stdin=PASSWORDS[user] + "\n"))


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    data = tmp_path_factory.mktemp("gate") / "data"
    setup_registry(data)
    srv = RazorServer(data, extra=["--auth", "basic"]).start()
    yield srv
    srv.stop()


def as_(user):
    s = requests.Session()
    s.auth = (user, PASSWORDS[user])
    return s


def test_registry_cli_errors_are_one_line(server):
    r = cli("tenant", "add", "acme", data_dir=server.data_dir)
    assert r.returncode == 1 and r.stderr.count("\n") == 1 and "acme" in r.stderr
    r = cli("user", "add", "zed", "--tenant", "nope", "--role", "writer", "--password-stdin",
            data_dir=server.data_dir, stdin="pw\n")
    assert r.returncode == 1 and "nope" in r.stderr
    r = cli("user", "add", "zed", "--tenant", "acme", "--role", "king", "--password-stdin",
            data_dir=server.data_dir, stdin="pw\n")
    assert r.returncode != 0 and "king" in r.stderr


def test_admin_actions_are_audited(server):
    import json
    lines = [json.loads(line) for line in open(os.path.join(server.data_dir, "audit.log"))]
    actions = [(r["action"], r["target"]) for r in lines]
    assert ("tenant.add", "acme") in actions and ("user.add", "alice") in actions
    assert all(r["user"] and r["time"] for r in lines)
    r = requests.post(server.url + "/api/v1/tenants", json={"name": "initech"},
                      auth=("root", PASSWORDS["root"]))
    assert r.status_code == 201, r.text
    lines = [json.loads(line) for line in open(os.path.join(server.data_dir, "audit.log"))]
    assert lines[-1]["action"] == "tenant.add" and lines[-1]["user"] == "root"


def test_no_wrong_or_unknown_credentials_get_the_same_401(server):
    answers = [requests.get(server.url + "/"),
               requests.get(server.url + "/", auth=("alice", "wrong")),
               requests.get(server.url + "/", auth=("nobody", "wrong"))]
    assert {r.status_code for r in answers} == {401}
    assert len({r.content for r in answers}) == 1
    assert 'Basic realm="razordav"' in answers[0].headers["WWW-Authenticate"]
    assert "alice-pw-1" not in open(server.log_path).read()


def test_each_tenant_sees_its_own_root(server):
    alice, bob = as_("alice"), as_("bob")
    assert alice.put(server.url + "/report.txt", data=b"acme data").status_code == 201
    assert bob.put(server.url + "/report.txt", data=b"globex data").status_code == 201
    assert alice.get(server.url + "/report.txt").content == b"acme data"
    assert bob.get(server.url + "/report.txt").content == b"globex data"
    assert as_("rita").get(server.url + "/report.txt").content == b"acme data"


@pytest.mark.parametrize("path", ["/../globex/report.txt", "/%2e%2e/globex/report.txt",
                                  "//globex/report.txt", "/tenants/globex/report.txt",
                                  "/..%2fglobex%2freport.txt", "/%2e%2e%2f%2e%2e%2fstore"])
def test_paths_cannot_leave_the_tenant(server, path):
    as_("bob").put(server.url + "/report.txt", data=b"globex data")
    r = as_("alice").get(server.url + path)
    assert r.status_code in (400, 404), (path, r.status_code)
    assert b"globex data" not in r.content


TRICKS = ["/../globex/report.txt", "/%2e%2e/globex/report.txt", "//globex/report.txt",
          "/tenants/globex/report.txt", "/..%2fglobex%2freport.txt", "/a/../../globex/report.txt",
          "/%2E%2E%5Cglobex%5Creport.txt", "/report.txt%00", "/./../globex"]
LOCKINFO = (b'<?xml version="1.0"?><D:lockinfo xmlns:D="DAV:"><D:lockscope><D:exclusive/>'
            b'</D:lockscope><D:locktype><D:write/></D:locktype></D:lockinfo>')
PATCH = (b'<?xml version="1.0"?><D:propertyupdate xmlns:D="DAV:"><D:set><D:prop>'
         b'<x:t xmlns:x="urn:t">v</x:t></D:prop></D:set></D:propertyupdate>')


@pytest.mark.parametrize("method", ["GET", "HEAD", "PUT", "DELETE", "MKCOL", "COPY", "MOVE",
                                    "PROPFIND", "PROPPATCH", "LOCK", "UNLOCK", "OPTIONS"])
def test_every_method_with_every_trick_stays_in_its_tenant(server, method):
    """alice (acme) sends each method with each path trick; bob's file in globex is
    untouched, and nothing outside acme's volume appears or changes."""
    bob = as_("bob")
    assert bob.put(server.url + "/report.txt", data=b"globex data").status_code in (201, 204)
    before = bob.request("PROPFIND", server.url + "/", headers={"Depth": "1"}).text
    for path in TRICKS:
        # a connection of its own per trick: cheroot answers a "//host/..." target itself
        # (400, absolute URI) and closes the connection without saying so
        alice = as_("alice")
        extra = {"data": b"evil"} if method == "PUT" else {"data": LOCKINFO} \
            if method == "LOCK" else {"data": PATCH} if method == "PROPPATCH" else {}
        headers = {"Destination": server.url + "/../globex/stolen.txt", "Depth": "1",
                   "Lock-Token": "<opaquelocktoken:x>", "Overwrite": "T"}
        r = alice.request(method, server.url + path, headers=headers, **extra)
        assert r.status_code < 500, (method, path, r.status_code)
        assert b"globex data" not in r.content
    assert bob.get(server.url + "/report.txt").content == b"globex data"
    assert bob.request("PROPFIND", server.url + "/",
                       headers={"Depth": "1"}).text.count("<ns0:response>") == \
        before.count("<ns0:response>")
    assert bob.get(server.url + "/stolen.txt").status_code == 404


def test_no_clear_text_secret_in_the_data_dir(server):
    out = ok(cli("token", "create", "bob", data_dir=server.data_dir))
    token = re.search(r"rzt_\S+", out).group(0)
    # rzt_<16 hex id>_<43 base64url characters of secret>: the secret may hold '_' itself
    secret_part = token[len("rzt_") + 16 + 1:]
    assert len(secret_part) == 43
    secrets = [pw.encode() for pw in PASSWORDS.values()] + [token.encode(),
                                                           secret_part.encode()]
    for dirpath, _, files in os.walk(server.data_dir):
        for name in files:
            with open(os.path.join(dirpath, name), "rb") as f:
                blob = f.read()
            for secret in secrets:
                assert secret not in blob, (name, secret)
    log = open(server.log_path, "rb").read()
    assert not any(secret in log for secret in secrets)


def test_destination_on_another_host_or_tenant(server):
    alice = as_("alice")
    alice.put(server.url + "/m.txt", data=b"m")
    r = alice.request("MOVE", server.url + "/m.txt",
                      headers={"Destination": "http://evil.example/m.txt"})
    assert r.status_code == 502
    r = alice.request("COPY", server.url + "/m.txt",
                      headers={"Destination": server.url + "/../globex/m.txt"})
    assert r.status_code in (400, 403, 404, 409), r.status_code
    assert as_("bob").get(server.url + "/m.txt").status_code == 404
    assert alice.get(server.url + "/m.txt").content == b"m"


def test_reader_may_only_read(server):
    rita = as_("rita")
    for method, extra in (("PUT", {"data": b"x"}), ("DELETE", {}), ("MKCOL", {}),
                          ("PROPPATCH", {"data": b"<x/>"}), ("LOCK", {"data": b"<x/>"}),
                          ("MOVE", {"headers": {"Destination": server.url + "/z"}})):
        r = rita.request(method, server.url + "/report.txt", **extra)
        assert r.status_code == 403, method
    assert rita.request("PROPFIND", server.url + "/", headers={"Depth": "1"}).status_code == 207
    assert as_("alice").get(server.url + "/report.txt").status_code == 200


def test_lock_tokens_belong_to_their_owner(server):
    alice, bob = as_("alice"), as_("bob")
    alice.put(server.url + "/locked.txt", data=b"v1")
    body = (b'<?xml version="1.0"?><D:lockinfo xmlns:D="DAV:"><D:lockscope><D:exclusive/>'
            b'</D:lockscope><D:locktype><D:write/></D:locktype></D:lockinfo>')
    r = alice.request("LOCK", server.url + "/locked.txt", data=body)
    assert r.status_code == 200
    token = r.headers["Lock-Token"]
    # another tenant's user with alice's token: it names nothing in globex
    bob.put(server.url + "/locked.txt", data=b"bob's own")
    r = bob.put(server.url + "/locked.txt", data=b"x", headers={"If": f"({token})"})
    assert r.status_code in (412, 423)
    # root is an admin of acme but not the lock's owner
    root = as_("root")
    r = root.put(server.url + "/locked.txt", data=b"x", headers={"If": f"({token})"})
    assert r.status_code in (403, 412, 423)
    assert alice.get(server.url + "/locked.txt").content == b"v1"
    assert alice.put(server.url + "/locked.txt", data=b"v2",
                     headers={"If": f"({token})"}).status_code == 204
    assert alice.request("UNLOCK", server.url + "/locked.txt",
                         headers={"Lock-Token": token}).status_code == 204


def test_app_token_is_a_basic_password(server):
    out = ok(cli("token", "create", "alice", "--label", "phone", data_dir=server.data_dir))
    token = re.search(r"rzt_\S+", out).group(0)
    r = requests.get(server.url + "/report.txt", auth=("alice", token))
    assert r.status_code == 200 and r.content == b"acme data"
    token_id = token.split("_")[1]
    ok(cli("token", "revoke", token_id, data_dir=server.data_dir))
    # the gateway caches good logins for a short while; a new connection must not help
    t0 = time.monotonic()
    while requests.get(server.url + "/report.txt", auth=("alice", token)).status_code != 401:
        assert time.monotonic() - t0 < 70
        time.sleep(1)


def test_quota_507_and_rfc4331_properties(server):
    alice = as_("alice")
    r = alice.put(server.url + "/big.bin", data=os.urandom(4 << 20))
    assert r.status_code == 507
    assert alice.get(server.url + "/big.bin").status_code == 404
    r = alice.request("PROPFIND", server.url + "/", headers={"Depth": "0"}, data=(
        b'<?xml version="1.0"?><D:propfind xmlns:D="DAV:"><D:prop><D:quota-available-bytes/>'
        b'<D:quota-used-bytes/></D:prop></D:propfind>'))
    tree = ET.fromstring(r.content)
    used = int(tree.find(".//{DAV:}quota-used-bytes").text)
    avail = int(tree.find(".//{DAV:}quota-available-bytes").text)
    assert used > 0 and used + avail == 3 << 20


def test_backoff_after_repeated_failures(server):
    s = requests.Session()
    codes = [s.get(server.url + "/", auth=("carol", f"guess{i}")).status_code for i in range(8)]
    assert codes[:6] == [401] * 6 and codes[-1] == 429, codes
    r = s.get(server.url + "/", auth=("carol", "guess"))
    assert r.status_code == 429 and int(r.headers["Retry-After"]) >= 1


def test_non_loopback_without_auth_is_refused(tmp_path):
    r = subprocess.run([sys.executable, "-m", "razordav.cli", "serve", "--host", "0.0.0.0",
                        "--data-dir", str(tmp_path / "d")], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 1 and "without authentication" in r.stderr


# -- TLS --

@pytest.fixture(scope="module")
def tls_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("tls")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout",
                    str(d / "key.pem"), "-out", str(d / "cert.pem"), "-days", "2", "-subj",
                    "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True)
    return str(d / "cert.pem"), str(d / "key.pem")


def test_litmus_over_https_with_basic_auth(tmp_path, tls_files):
    from tests.dav.test_litmus import GROUPS
    setup_registry(tmp_path / "data")
    with RazorServer(tmp_path / "data", tls=tls_files, extra=["--auth", "basic"]) as srv:
        assert requests.get(srv.url + "/", auth=("alice", PASSWORDS["alice"]),
                            verify=tls_files[0]).status_code == 200
        out = subprocess.run([shutil.which("litmus"), srv.url + "/", "alice", PASSWORDS["alice"]],
                             capture_output=True, cwd=tmp_path, timeout=600).stdout.decode()
    summary = {g: (int(n), int(p)) for g, n, p in re.findall(
        r"summary for `(\w+)': of (\d+) tests run: (\d+) passed", out)}
    problems = [line for line in out.splitlines() if "FAIL" in line or "WARNING" in line or
                ("SKIPPED" in line and "skipping for SSL server" not in line)]
    assert problems == [], out[-3000:]
    # litmus itself skips its one Expect: 100-continue test over TLS ...
    assert summary == {**{g: (n, n) for g, n in GROUPS.items()}, "http": (3, 3)}, out[-3000:]
    # ... so that group runs again with Basic auth over plain http: 104 of 104 in all
    with RazorServer(tmp_path / "data", extra=["--auth", "basic"]) as srv:
        out = subprocess.run([shutil.which("litmus"), srv.url + "/", "alice", PASSWORDS["alice"]],
                             capture_output=True, cwd=tmp_path, timeout=600,
                             env={**os.environ, "TESTS": "http"}).stdout.decode()
    assert "expect100" in out and "summary for `http': of 4 tests run: 4 passed" in out, out


def test_rclone_over_https(tmp_path, tls_files):
    from tests.e2e.davhttp import need_tool
    rclone = need_tool("rclone")
    setup_registry(tmp_path / "data")
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    for i in range(20):
        (src / "sub" / f"f{i}.bin").write_bytes(os.urandom(1000 * i))
    with RazorServer(tmp_path / "data", tls=tls_files, extra=["--auth", "basic"]) as srv:
        obscured = subprocess.run([rclone, "obscure", PASSWORDS["bob"]], capture_output=True,
                                  text=True, check=True).stdout.strip()
        remote = f":webdav,url='{srv.url}/',vendor=rclone,user=bob,pass='{obscured}':"
        base = [rclone, "--ca-cert", tls_files[0], "--retries", "1"]
        subprocess.run(base + ["copy", str(src), remote + "dst"], check=True,
                       capture_output=True, timeout=300)
        r = subprocess.run(base + ["check", "--download", str(src), remote + "dst"],
                           capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr
        # and the files are bob's tenant's, not alice's
        assert requests.get(srv.url + "/dst/sub/f3.bin", auth=("alice", PASSWORDS["alice"]),
                            verify=tls_files[0]).status_code == 404


def test_bad_tls_files_are_one_clear_line(tmp_path, tls_files):
    r = subprocess.run([sys.executable, "-m", "razordav.cli", "serve", "--data-dir",
                        str(tmp_path / "d"), "--tls-cert", tls_files[1], "--tls-key",
                        tls_files[1]], capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and r.stderr.startswith("razordav: error: TLS:")
    r = subprocess.run([sys.executable, "-m", "razordav.cli", "serve", "--data-dir",
                        str(tmp_path / "d"), "--tls-cert", tls_files[0]],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "go together" in r.stderr


def test_restore_brings_back_users_and_tenants(tmp_path):
    data = tmp_path / "data"
    setup_registry(data)
    with RazorServer(data, extra=["--auth", "basic"]) as srv:
        assert as_("bob").put(srv.url + "/kept.txt", data=b"globex file").status_code == 201
    shutil.move(str(data / "store"), str(tmp_path / "store"))
    store = f"file://{tmp_path}/store"
    r = cli("restore", "--store", store, data_dir=tmp_path / "new")
    assert r.returncode == 0, r.stderr
    assert "globex" in r.stdout
    with RazorServer(tmp_path / "new", store=store, extra=["--auth", "basic"]) as srv:
        r = as_("bob").get(srv.url + "/kept.txt")
        assert r.status_code == 200 and r.content == b"globex file"
        assert requests.get(srv.url + "/kept.txt", auth=("bob", "nope")).status_code == 401



def test_a_401_to_a_put_keeps_the_connection_for_the_retry(server):
    """Windows and Office send a PUT without credentials first; the 401 must leave the
    connection usable for the retry with them."""
    import http.client
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    for _ in range(3):
        conn.request("PUT", "/retry.txt", body=b"x" * 100_000)
        r = conn.getresponse()
        r.read()
        assert r.status == 401 and r.getheader("Connection") != "close"
        import base64
        auth = base64.b64encode(f"alice:{PASSWORDS['alice']}".encode()).decode()
        conn.request("PUT", "/retry.txt", body=b"y" * 100_000,
                     headers={"Authorization": f"Basic {auth}"})
        r = conn.getresponse()
        r.read()
        assert r.status in (201, 204)
    conn.close()
