"""``serve --auth basic,jwt`` with a local OIDC provider: Bearer tokens on WebDAV, the
REST API and /metrics; forged tokens and unknown tenants refused; health without auth."""

import os

import pytest
import requests

from tests.razor import RazorServer
from tests.service.issuer import LocalIssuer
from tests.service.test_gate import PASSWORDS, setup_registry


@pytest.fixture(scope="module")
def issuer():
    with LocalIssuer() as iss:
        yield iss


@pytest.fixture(scope="module")
def server(tmp_path_factory, issuer):
    data = tmp_path_factory.mktemp("gatejwt") / "data"
    setup_registry(data)
    srv = RazorServer(data, extra=["--auth", "basic,jwt", "--oidc-issuer", issuer.url,
                                   "--jwt-audience", issuer.audience]).start()
    yield srv
    srv.stop()


def bearer(token):
    return {"Authorization": f"Bearer {token}"}


def test_bearer_token_reaches_its_tenant(server, issuer):
    basic = requests.put(server.url + "/shared.txt", data=b"acme", auth=("alice",
                                                                        PASSWORDS["alice"]))
    assert basic.status_code == 201
    token = issuer.token(claims={"sub": "dana"})
    r = requests.get(server.url + "/shared.txt", headers=bearer(token))
    assert r.status_code == 200 and r.content == b"acme"
    assert requests.put(server.url + "/by-dana.txt", data=b"d",
                        headers=bearer(token)).status_code == 201
    r = requests.get(server.url + "/api/v1/files/", headers=bearer(token))
    assert r.status_code == 200 and "by-dana.txt" in r.text
    token = issuer.token(claims={"sub": "eve", "tenant": "globex"}, key="ec")
    assert requests.get(server.url + "/shared.txt", headers=bearer(token)).status_code == 404


def test_reader_role_from_the_token(server, issuer):
    token = issuer.token(claims={"sub": "ron", "role": "reader"})
    assert requests.get(server.url + "/", headers=bearer(token)).status_code == 200
    assert requests.put(server.url + "/r.txt", data=b"r",
                        headers=bearer(token)).status_code == 403


@pytest.mark.parametrize("claims", [{"exp": 1}, {"aud": "another-service"},
                                    {"iss": "http://evil.example"}, {"tenant": None}])
def test_forged_or_foreign_tokens_get_401(server, issuer, claims):
    token = issuer.token(claims=claims)
    r = requests.get(server.url + "/shared.txt", headers=bearer(token))
    assert r.status_code == 401
    assert 'Bearer realm="razordav"' in r.headers.get("WWW-Authenticate", "") or \
        "Bearer" in str(r.headers)


def test_alg_none_and_hs256_get_401(server, issuer):
    import jwt
    claims = issuer.claims()
    none = jwt.encode(claims, None, algorithm="none")
    assert requests.get(server.url + "/", headers=bearer(none)).status_code == 401
    assert requests.get(server.url + "/", headers=bearer("garbage.garbage.garbage")) \
        .status_code == 401


def test_unknown_tenant_in_a_valid_token_is_403(server, issuer):
    token = issuer.token(claims={"sub": "x", "tenant": "initech"})
    r = requests.get(server.url + "/", headers=bearer(token))
    assert r.status_code == 403 and "initech" in r.text


def test_health_without_auth_metrics_for_admins(server, issuer):
    assert requests.get(server.url + "/healthz").status_code == 200
    assert requests.get(server.url + "/readyz").status_code == 200
    assert requests.get(server.url + "/metrics").status_code == 401
    assert requests.get(server.url + "/metrics", auth=("alice", PASSWORDS["alice"])) \
        .status_code == 403
    r = requests.get(server.url + "/metrics", auth=("root", PASSWORDS["root"]))
    assert r.status_code == 200 and "razordav_http_requests_total" in r.text
    assert 'tenant="acme"' in r.text


def test_a_tenant_deleted_while_open_is_closed_then_its_data_can_go(server, issuer):
    from tests.service.test_gate import cli
    token = issuer.token(claims={"sub": "eve", "tenant": "globex"})
    assert requests.put(server.url + "/g.txt", data=b"g", headers=bearer(token)).status_code \
        in (201, 204)
    r = requests.delete(server.url + "/api/v1/tenants/globex", auth=("root", PASSWORDS["root"]))
    assert r.status_code == 204, r.text
    r = requests.get(server.url + "/g.txt", headers=bearer(token))
    assert r.status_code == 403 and "globex" in r.text
    # the gateway closed the volume (and gave up its lease) and deleted its data
    r = cli("tenant", "del", "globex", "--yes", data_dir=server.data_dir)
    assert r.returncode == 1 and "no tenant 'globex'" in r.stderr
    assert not [d for d in os.listdir(os.path.join(server.data_dir, "tenants"))
                if d.startswith("globex")]
    assert [d for d in os.listdir(os.path.join(server.data_dir, "tenants"))
            if d.startswith("acme.")]


def test_a_jwt_user_does_not_own_the_locks_of_a_basic_user_of_that_name(server, issuer):
    alice = ("alice", PASSWORDS["alice"])
    lockinfo = (b'<?xml version="1.0"?><D:lockinfo xmlns:D="DAV:"><D:lockscope><D:exclusive/>'
                b'</D:lockscope><D:locktype><D:write/></D:locktype></D:lockinfo>')
    assert requests.put(server.url + "/mine.txt", data=b"v1", auth=alice).status_code == 201
    r = requests.request("LOCK", server.url + "/mine.txt", data=lockinfo, auth=alice)
    assert r.status_code == 200
    lock = r.headers["Lock-Token"]
    jwt_alice = bearer(issuer.token(claims={"sub": "alice"}))
    r = requests.put(server.url + "/mine.txt", data=b"jwt", headers={**jwt_alice,
                                                                     "If": f"({lock})"})
    assert r.status_code in (403, 412, 423), r.status_code
    r = requests.request("UNLOCK", server.url + "/mine.txt",
                         headers={**jwt_alice, "Lock-Token": lock})
    assert r.status_code in (403, 409), r.status_code
    assert requests.get(server.url + "/mine.txt", auth=alice).content == b"v1"
    assert requests.request("UNLOCK", server.url + "/mine.txt", auth=alice,
                            headers={"Lock-Token": lock}).status_code == 204
