"""Bearer/JWT authentication against a real identity provider on loopback (issuer.py): valid
RS256 and ES256 tokens, the attack battery of forged tokens, key rotation, discovery, and
how the authenticator treats its provider (bounded fetches, outages)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import socket
import threading
import time
import uuid

import jwt
import pytest
from cryptography.hazmat.primitives import serialization

from razordav.service import Principal
from razordav.service import jwt_auth
from razordav.service.jwt_auth import JwtAuthenticator

from .issuer import DISCOVERY_PATH, JWKS_PATH, LocalIssuer, new_ec_key, new_rsa_key

LOGGER = "razordav.service.jwt_auth"


@pytest.fixture(scope="module")
def issuer():
    """One provider for the tests that do not change its keys (key generation costs)."""
    with LocalIssuer() as issuer:
        yield issuer


@pytest.fixture
def fresh_issuer():
    with LocalIssuer() as issuer:
        yield issuer


def authenticator(issuer: LocalIssuer, **options) -> JwtAuthenticator:
    options.setdefault("jwks_url", issuer.jwks_url)
    options.setdefault("issuer", issuer.issuer)
    options.setdefault("audience", issuer.audience)
    return JwtAuthenticator(**options)


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64json(value: dict) -> str:
    return b64(json.dumps(value).encode())


def hs256(header: dict, claims: dict, secret: bytes) -> str:
    """An HMAC token built by hand: PyJWT refuses to key HMAC with a PEM, an attacker won't."""
    signing_input = f"{b64json(header)}.{b64json(claims)}"
    mac = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(mac)}"


# -- valid tokens -------------------------------------------------------------------------

def test_rs256_token_gives_its_principal(issuer):
    auth = authenticator(issuer)
    assert auth.scheme == "Bearer"
    assert auth.authenticate(issuer.token(), {}) == Principal("alice", "acme", "writer", "jwt")


def test_es256_token_gives_its_principal(issuer):
    token = issuer.token(claims={"sub": "bob", "tenant": "beta", "role": "reader"}, key="ec")
    assert authenticator(issuer).authenticate(token, {}) == Principal("bob", "beta", "reader",
                                                                       "jwt")


@pytest.mark.parametrize("role", ["reader", "writer", "admin"])
def test_role_claim_is_used(issuer, role):
    principal = authenticator(issuer).authenticate(issuer.token(claims={"role": role}), {})
    assert principal.role == role


def test_default_role_applies_without_role_claim(issuer):
    auth = authenticator(issuer, default_role="reader")
    assert auth.authenticate(issuer.token(), {}).role == "reader"


def test_configured_claims_name_user_tenant_and_role(issuer):
    auth = authenticator(issuer, user_claim="email", tenant_claim="org", role_claim="razordav")
    token = issuer.token(claims={"email": "carol@example.org", "org": "gamma",
                                 "razordav": "admin", "tenant": None})
    assert auth.authenticate(token, {}) == Principal("carol@example.org", "gamma", "admin",
                                                     "jwt")


def test_small_clock_skew_is_tolerated(issuer):
    now = int(time.time())
    auth = authenticator(issuer, leeway=30)
    assert auth.authenticate(issuer.token(claims={"exp": now - 10, "iat": now - 100}), {})
    assert auth.authenticate(issuer.token(claims={"nbf": now + 10, "iat": now + 10}), {})


def test_surrounding_whitespace_in_credentials_is_ignored(issuer):
    assert authenticator(issuer).authenticate(f"  {issuer.token()} ", {})


def test_audience_and_issuer_are_optional(issuer):
    auth = JwtAuthenticator(jwks_url=issuer.jwks_url)
    assert auth.authenticate(issuer.token(claims={"aud": None, "iss": "anyone"}), {})


# -- the attack battery: every forged token is refused ------------------------------------

def _forgeries(issuer: LocalIssuer) -> dict:
    now = int(time.time())
    rsa_kid, rsa_key = issuer.keys["rsa"]
    ec_kid, _ = issuer.keys["ec"]
    public_pem = rsa_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    valid = issuer.token()
    head, _, signature = valid.split(".")
    return {
        "expired": issuer.token(claims={"exp": now - 3600, "iat": now - 7200}),
        "expired beyond leeway": issuer.token(claims={"exp": now - 60, "iat": now - 600}),
        "not yet valid (nbf)": issuer.token(claims={"nbf": now + 3600}),
        "issued in the future (iat)": issuer.token(claims={"iat": now + 3600,
                                                           "exp": now + 7200}),
        "wrong audience": issuer.token(claims={"aud": "another-service"}),
        "no audience": issuer.token(claims={"aud": None}),
        "wrong issuer": issuer.token(claims={"iss": "https://evil.example"}),
        "no issuer": issuer.token(claims={"iss": None}),
        "unknown kid": issuer.token(headers={"kid": "no-such-kid"}),
        "no kid": issuer.token(headers={"kid": None}),
        "kid not a string": hs256({"alg": "RS256", "kid": 7}, issuer.claims(), b"x"),
        "signed with another key": issuer.token(key=new_rsa_key(), headers={"kid": rsa_kid}),
        "signed with another EC key": issuer.token(key=new_ec_key(), headers={"kid": ec_kid}),
        "alg none": jwt.encode(issuer.claims(), None, algorithm="none",
                               headers={"kid": rsa_kid}),
        "alg none, valid signature kept": f"{b64json({'alg': 'none', 'kid': rsa_kid})}."
                                          f"{valid.split('.')[1]}.{signature}",
        "alg None spelled differently": f"{b64json({'alg': 'NONE', 'kid': rsa_kid})}."
                                        f"{b64json(issuer.claims())}.",
        "HS256 keyed with the RSA public key PEM": hs256(
            {"alg": "HS256", "typ": "JWT", "kid": rsa_kid}, issuer.claims(), public_pem),
        "HS256 keyed with the JWKS document": hs256(
            {"alg": "HS256", "kid": rsa_kid}, issuer.claims(), issuer.jwks),
        "RS512 (not allowed) with the right key": issuer.token(algorithm="RS512"),
        "PS256 (not allowed) with the right key": issuer.token(algorithm="PS256"),
        "RS256 header naming the EC key": issuer.token(headers={"kid": ec_kid}),
        "ES256 header naming the RSA key": issuer.token(key="ec", headers={"kid": rsa_kid}),
        "tampered payload": f"{head}.{b64json(issuer.claims(sub='mallory', role='admin'))}"
                            f".{signature}",
        "tampered tenant": f"{head}.{b64json(issuer.claims(tenant='other'))}.{signature}",
        "tampered header": f"{b64json({'alg': 'RS256', 'kid': rsa_kid, 'x': 1})}."
                           f"{valid.split('.')[1]}.{signature}",
        "signature stripped": f"{head}.{valid.split('.')[1]}.",
        "jku pointing elsewhere": issuer.token(key=new_rsa_key(), headers={
            "kid": "attacker", "jku": "http://127.0.0.1:9/jwks.json"}),
        "garbage": "garbage",
        "empty": "",
        "three dots": "a.b.c",
        "base64 noise": f"{b64(b'{')}.{b64(b'}')}.{b64(b'x')}",
        "header not JSON object": f"{b64(b'[1]')}.{b64json(issuer.claims())}.",
        "non-ascii": "ä.ö.ü",
        "oversized": "a" * (jwt_auth.MAX_TOKEN_CHARS + 1),
        "missing tenant claim": issuer.token(claims={"tenant": None}),
        "tenant not a name": issuer.token(claims={"tenant": "../other"}),
        "tenant upper case": issuer.token(claims={"tenant": "ACME"}),
        "tenant a list": issuer.token(claims={"tenant": ["acme"]}),
        "invalid role": issuer.token(claims={"role": "root"}),
        "role a list": issuer.token(claims={"role": ["admin"]}),
        "role empty": issuer.token(claims={"role": ""}),
        "missing exp": issuer.token(claims={"exp": None}),
        "missing iat": issuer.token(claims={"iat": None}),
        "exp not a number": issuer.token(claims={"exp": "tomorrow"}),
        "missing sub": issuer.token(claims={"sub": None}),
        "empty sub": issuer.token(claims={"sub": ""}),
        "sub with a newline": issuer.token(claims={"sub": "alice\nadmin"}),
        "sub a number": issuer.token(claims={"sub": 42}),
    }


# Why each forgery must be refused: a fragment of the debug line, so a token refused for
# an unrelated reason (a typo in the test, say) does not pass as a caught attack. A tuple
# lists alternatives: newer PyJWT releases catch some of these before our own checks do.
REASONS = {
    "expired": "ExpiredSignature",
    "expired beyond leeway": "ExpiredSignature",
    "not yet valid (nbf)": "(nbf)",
    "issued in the future (iat)": "(iat)",
    "wrong audience": "Audience",
    "no audience": '"aud"',
    "wrong issuer": "InvalidIssuer",
    "no issuer": '"iss"',
    "unknown kid": "no signing key",
    "no kid": "no kid",
    "kid not a string": ("Key ID", "no kid"),
    "signed with another key": "InvalidSignature",
    "signed with another EC key": "InvalidSignature",
    "alg none": "'none' is not allowed",
    "alg none, valid signature kept": "'none' is not allowed",
    "alg None spelled differently": "'NONE' is not allowed",
    "HS256 keyed with the RSA public key PEM": "'HS256' is not allowed",
    "HS256 keyed with the JWKS document": "'HS256' is not allowed",
    "RS512 (not allowed) with the right key": "'RS512' is not allowed",
    "PS256 (not allowed) with the right key": "'PS256' is not allowed",
    "RS256 header naming the EC key": "is for ES256",
    "ES256 header naming the RSA key": "is for RS256",
    "tampered payload": "InvalidSignature",
    "tampered tenant": "InvalidSignature",
    "tampered header": "InvalidSignature",
    "signature stripped": "InvalidSignature",
    "jku pointing elsewhere": "no signing key",
    "garbage": "DecodeError",
    "empty": "empty",
    "three dots": "DecodeError",
    "base64 noise": "DecodeError",
    "header not JSON object": "DecodeError",
    "non-ascii": "DecodeError",
    "oversized": "oversized",
    "missing tenant claim": "no tenant",
    "tenant not a name": "not a tenant name",
    "tenant upper case": "not a tenant name",
    "tenant a list": "no tenant",
    "invalid role": "not a role",
    "role a list": "not a role",
    "role empty": "not a role",
    "missing exp": '"exp"',
    "missing iat": '"iat"',
    "exp not a number": "(exp)",
    "missing sub": "user name",
    "empty sub": "user name",
    "sub with a newline": "user name",
    "sub a number": ("Subject", "user name"),
}


@pytest.fixture(scope="module")
def forgeries(issuer):
    return _forgeries(issuer)


def test_every_forgery_has_its_reason(forgeries):
    assert set(forgeries) == set(REASONS)


@pytest.mark.parametrize("name", list(REASONS))
def test_forged_token_is_refused(issuer, forgeries, caplog, name):
    token = forgeries[name]
    auth = authenticator(issuer)
    with caplog.at_level(logging.DEBUG, logger=LOGGER):
        assert auth.authenticate(token, {}) is None
    records = [r for r in caplog.records if r.name == LOGGER]
    assert len(records) == 1, [r.getMessage() for r in records]
    assert records[0].levelno == logging.DEBUG
    reasons = REASONS[name] if isinstance(REASONS[name], tuple) else (REASONS[name],)
    assert any(reason in records[0].getMessage() for reason in reasons)
    # The reason is logged, the token is not: no part of it long enough to matter.
    assert not [part for part in token.split(".") if len(part) >= 16 and part in caplog.text]


@pytest.mark.parametrize("name", ["alg none", "HS256 keyed with the RSA public key PEM",
                                  "RS512 (not allowed) with the right key", "garbage",
                                  "no kid", "alg None spelled differently"])
def test_bad_algorithm_is_refused_before_any_key_lookup(fresh_issuer, name):
    token = _forgeries(fresh_issuer)[name]
    assert authenticator(fresh_issuer).authenticate(token, {}) is None
    assert fresh_issuer.requests == 0


def test_token_with_audience_is_refused_when_none_is_configured(issuer):
    """A token minted for another service of the same provider must not open this one."""
    auth = JwtAuthenticator(jwks_url=issuer.jwks_url, issuer=issuer.issuer)
    assert auth.authenticate(issuer.token(), {}) is None
    assert auth.authenticate(issuer.token(claims={"aud": None}), {})


def test_audience_list_containing_ours_is_accepted(issuer):
    token = issuer.token(claims={"aud": ["other", issuer.audience]})
    assert authenticator(issuer).authenticate(token, {})


def test_only_es256_allowed_refuses_rs256(issuer):
    auth = authenticator(issuer, algorithms=("ES256",))
    assert auth.authenticate(issuer.token(), {}) is None
    assert auth.authenticate(issuer.token(key="ec"), {})


def test_non_string_credentials_are_refused(issuer):
    assert authenticator(issuer).authenticate(None, {}) is None


# -- what the key set may hold -----------------------------------------------------------

def test_unusable_key_set_entries_are_skipped(fresh_issuer, caplog):
    """Only signing keys with a kid, of an allowed algorithm and the matching key type,
    verify anything; the odd entries around them do not spoil the good ones."""
    rsa_entry, ec_entry = fresh_issuer.public_jwks()
    secret = b"shared-secret"
    odd = [
        {"kty": "oct", "kid": "hmac", "k": b64(secret)},
        {**rsa_entry, "kid": "enc", "use": "enc"},
        {**rsa_entry, "kid": "rs512", "alg": "RS512"},
        {**rsa_entry, "kid": "claims-es256", "alg": "ES256"},
        {**ec_entry, "kid": "p384", "crv": "P-384"},
        {"kty": "RSA", "kid": "broken", "n": "AQAB", "e": "AQAB"},
        {**rsa_entry, "kid": None},
        "not an object",
    ]
    fresh_issuer.jwks_override = json.dumps({"keys": [*odd, rsa_entry, ec_entry]}).encode()
    auth = authenticator(fresh_issuer)
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        assert auth.authenticate(fresh_issuer.token(), {})
    # The malformed key is worth a warning; the keys merely not for us are not.
    assert [r.getMessage().split(":")[0] for r in caplog.records] == \
        ["skipping JWKS key 'broken'"]
    assert auth.authenticate(fresh_issuer.token(key="ec"), {})
    _, rsa_key = fresh_issuer.keys["rsa"]
    for kid in ("enc", "rs512", "claims-es256", "broken"):
        assert auth.authenticate(fresh_issuer.token(key=rsa_key, headers={"kid": kid}), {}) \
            is None, kid
    assert auth.authenticate(hs256({"alg": "HS256", "kid": "hmac"}, fresh_issuer.claims(),
                                    secret), {}) is None
    assert fresh_issuer.hits[JWKS_PATH] == 1


@pytest.mark.parametrize("body", [b"not json", b"[]", b'{"keys": "none"}', b'{"keys": []}',
                                  b"{}"])
def test_broken_key_set_gives_none_and_a_warning(fresh_issuer, caplog, body):
    fresh_issuer.jwks_override = body
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        assert authenticator(fresh_issuer).authenticate(fresh_issuer.token(), {}) is None
    assert [r.levelno for r in caplog.records if r.name == LOGGER] == [logging.WARNING]


# -- configuration ------------------------------------------------------------------------

@pytest.mark.parametrize("options, message", [
    ({}, "--jwks-url or --oidc-issuer"),
    ({"jwks_url": ""}, "--jwks-url or --oidc-issuer"),
    ({"jwks_url": "file:///etc/passwd"}, "not an http"),
    ({"oidc_issuer": "ftp://idp.example"}, "not an http"),
    ({"jwks_url": "http://idp/jwks", "algorithms": ("HS256",)}, "algorithms"),
    ({"jwks_url": "http://idp/jwks", "algorithms": ("none",)}, "algorithms"),
    ({"jwks_url": "http://idp/jwks", "algorithms": ("RS256", "HS256")}, "algorithms"),
    ({"jwks_url": "http://idp/jwks", "algorithms": ()}, "algorithms"),
    ({"jwks_url": "http://idp/jwks", "default_role": "root"}, "default role"),
    ({"jwks_url": "http://idp/jwks", "user_claim": None}, "claim names"),
    ({"jwks_url": "http://idp/jwks", "tenant_claim": ""}, "claim names"),
    ({"jwks_url": "http://idp/jwks", "leeway": -1}, "leeway"),
    ({"jwks_url": "http://idp/jwks", "timeout": 0}, "timeout"),
])
def test_bad_configuration_is_refused(options, message):
    with pytest.raises(ValueError, match=message):
        JwtAuthenticator(**options)


def test_constructor_fetches_nothing(fresh_issuer):
    JwtAuthenticator(oidc_issuer=fresh_issuer.url)
    authenticator(fresh_issuer)
    assert fresh_issuer.requests == 0


# -- key rotation -------------------------------------------------------------------------

def test_rotated_key_is_fetched_on_its_unknown_kid(fresh_issuer):
    auth = authenticator(fresh_issuer, refresh_interval=0)
    old_token = fresh_issuer.token()
    assert auth.authenticate(old_token, {})
    new_kid = fresh_issuer.rotate()
    new_token = fresh_issuer.token()
    assert jwt.get_unverified_header(new_token)["kid"] == new_kid
    assert auth.authenticate(new_token, {}) == Principal("alice", "acme", "writer", "jwt")
    assert fresh_issuer.hits[JWKS_PATH] == 2
    # The old key is gone from the provider: after the next refresh its tokens fail.
    assert auth.authenticate(old_token, {}) is None
    assert auth.authenticate(fresh_issuer.token(key="ec"), {})


def test_rotation_with_overlap_keeps_both_keys(fresh_issuer):
    auth = authenticator(fresh_issuer, refresh_interval=0)
    old_token = fresh_issuer.token()
    assert auth.authenticate(old_token, {})
    fresh_issuer.rotate(keep_old=True)
    assert auth.authenticate(fresh_issuer.token(), {})
    assert auth.authenticate(old_token, {})


def test_rotated_ec_key(fresh_issuer):
    auth = authenticator(fresh_issuer, refresh_interval=0)
    assert auth.authenticate(fresh_issuer.token(key="ec"), {})
    fresh_issuer.rotate("ec")
    assert auth.authenticate(fresh_issuer.token(key="ec"), {})


def test_rotation_is_picked_up_after_the_refresh_interval(fresh_issuer):
    auth = authenticator(fresh_issuer, refresh_interval=1.0)
    new_key = new_rsa_key()     # made beforehand: key generation is slow on a busy machine
    assert auth.authenticate(fresh_issuer.token(), {})
    fresh_issuer.rotate(key=new_key)
    new_token = fresh_issuer.token()
    # Right after a fetch, a new kid waits for the interval: that is the flood guard.
    assert auth.authenticate(new_token, {}) is None
    time.sleep(1.05)
    assert auth.authenticate(new_token, {})
    assert fresh_issuer.hits[JWKS_PATH] == 2


def test_old_keys_are_refetched_after_their_max_age(fresh_issuer, monkeypatch):
    monkeypatch.setattr(jwt_auth, "KEYS_MAX_AGE", 0.5)
    auth = authenticator(fresh_issuer, refresh_interval=0)
    assert auth.authenticate(fresh_issuer.token(), {})
    assert auth.authenticate(fresh_issuer.token(), {})
    assert fresh_issuer.hits[JWKS_PATH] == 1
    time.sleep(0.55)
    assert auth.authenticate(fresh_issuer.token(), {})
    assert fresh_issuer.hits[JWKS_PATH] == 2


# -- the provider is not hammered ---------------------------------------------------------

def _random_kid_tokens(issuer: LocalIssuer, count: int) -> list[str]:
    return [issuer.token(headers={"kid": uuid.uuid4().hex}) for _ in range(count)]


def test_flood_of_unknown_kids_fetches_keys_once(fresh_issuer):
    auth = authenticator(fresh_issuer)       # the default 10 s refresh interval
    forged = _random_kid_tokens(fresh_issuer, 200)
    assert all(auth.authenticate(token, {}) is None for token in forged)
    assert fresh_issuer.hits[JWKS_PATH] == 1
    # Valid tokens still pass during the flood, from the cache.
    assert auth.authenticate(fresh_issuer.token(), {})
    assert fresh_issuer.requests == 1


def test_concurrent_flood_of_unknown_kids_fetches_keys_once(fresh_issuer):
    auth = authenticator(fresh_issuer)
    forged = _random_kid_tokens(fresh_issuer, 40)
    valid = fresh_issuer.token()
    results = []

    def attack():
        results.extend(auth.authenticate(token, {}) for token in forged)
        results.append(auth.authenticate(valid, {}))

    threads = [threading.Thread(target=attack) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert len(results) == 8 * 41
    assert results.count(Principal("alice", "acme", "writer", "jwt")) == 8
    assert fresh_issuer.hits[JWKS_PATH] == 1


def test_flood_fetches_are_bounded_by_the_interval(fresh_issuer):
    auth = authenticator(fresh_issuer, refresh_interval=0.2)
    forged = _random_kid_tokens(fresh_issuer, 30)
    started = time.monotonic()
    for token in forged:
        auth.authenticate(token, {})
        time.sleep(0.02)
    elapsed = time.monotonic() - started
    assert fresh_issuer.hits[JWKS_PATH] <= int(elapsed / 0.2) + 1


# -- discovery ----------------------------------------------------------------------------

def test_discovery_finds_the_jwks_and_defaults_the_issuer(fresh_issuer):
    auth = JwtAuthenticator(oidc_issuer=fresh_issuer.url, audience=fresh_issuer.audience,
                            refresh_interval=0)
    assert auth.issuer == fresh_issuer.url
    assert auth.authenticate(fresh_issuer.token(key="ec"), {}) == \
        Principal("alice", "acme", "writer", "jwt")
    assert auth.jwks_url == fresh_issuer.jwks_url
    # The issuer defaulted from oidc_issuer is enforced.
    assert auth.authenticate(fresh_issuer.token(claims={"iss": "https://evil.example"}),
                             {}) is None
    fresh_issuer.rotate()
    assert auth.authenticate(fresh_issuer.token(), {})
    assert fresh_issuer.hits[DISCOVERY_PATH] == 1
    assert fresh_issuer.hits[JWKS_PATH] == 2


def test_discovery_with_an_explicit_issuer(fresh_issuer):
    auth = JwtAuthenticator(oidc_issuer=fresh_issuer.url, issuer="urn:other",
                            audience=fresh_issuer.audience)
    assert auth.authenticate(fresh_issuer.token(), {}) is None
    assert auth.authenticate(fresh_issuer.token(claims={"iss": "urn:other"}), {})


def test_discovery_document_naming_another_issuer_is_refused(caplog):
    with LocalIssuer(discovery_issuer="https://evil.example") as issuer:
        auth = JwtAuthenticator(oidc_issuer=issuer.url, audience=issuer.audience)
        with caplog.at_level(logging.WARNING, logger=LOGGER):
            assert auth.authenticate(issuer.token(), {}) is None
        assert "evil.example" in caplog.text
        assert issuer.hits[JWKS_PATH] == 0


def test_discovery_of_a_missing_document_is_refused(fresh_issuer, caplog):
    auth = JwtAuthenticator(oidc_issuer=fresh_issuer.url + "/realms/none")
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        assert auth.authenticate(fresh_issuer.token(), {}) is None
    assert "404" in caplog.text


# -- the provider is down -----------------------------------------------------------------

def test_provider_down_gives_none_quickly(caplog):
    issuer = LocalIssuer()
    token = issuer.token()
    issuer.stop()
    auth = authenticator(issuer)
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        assert auth.authenticate(token, {}) is None
        assert auth.authenticate(token, {}) is None    # within the interval: no new try
    assert time.monotonic() - started < 2
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "cannot fetch" in warnings[0].getMessage()


def test_discovery_provider_down_gives_none_quickly():
    issuer = LocalIssuer()
    token = issuer.token()
    issuer.stop()
    auth = JwtAuthenticator(oidc_issuer=issuer.url)
    started = time.monotonic()
    assert auth.authenticate(token, {}) is None
    assert time.monotonic() - started < 2


@pytest.fixture
def silent_port():
    """A port that accepts connections and never answers: a hung provider."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    yield listener.getsockname()[1]
    listener.close()


@pytest.mark.parametrize("option", ["jwks_url", "oidc_issuer"])
def test_hung_provider_times_out(issuer, silent_port, option):
    url = f"http://127.0.0.1:{silent_port}" + ("/jwks.json" if option == "jwks_url" else "")
    auth = JwtAuthenticator(**{option: url}, timeout=0.5)
    started = time.monotonic()
    assert auth.authenticate(issuer.token(), {}) is None
    assert time.monotonic() - started < 3
    # Within the refresh interval nobody waits for the hung provider again.
    started = time.monotonic()
    assert auth.authenticate(issuer.token(), {}) is None
    assert time.monotonic() - started < 0.5


@pytest.fixture
def garbage_port():
    """A port that answers every request with bytes that are not HTTP."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    listener.settimeout(0.05)   # closing a socket does not wake accept(): poll a flag
    done = threading.Event()

    def serve():
        while not done.is_set():
            try:
                connection, _ = listener.accept()
            except OSError:     # socket.timeout included
                continue
            with connection:
                connection.settimeout(2)
                connection.recv(65536)
                connection.sendall(b"garbage\r\n\r\n")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield listener.getsockname()[1]
    done.set()
    thread.join(timeout=5)
    listener.close()


@pytest.mark.parametrize("option", ["jwks_url", "oidc_issuer"])
def test_provider_speaking_garbage_gives_none_and_a_warning(issuer, garbage_port, option,
                                                            caplog):
    url = f"http://127.0.0.1:{garbage_port}" + ("/jwks.json" if option == "jwks_url" else "")
    auth = JwtAuthenticator(**{option: url}, timeout=2)
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        assert auth.authenticate(issuer.token(), {}) is None
    assert [r.levelno for r in caplog.records if r.name == LOGGER] == [logging.WARNING]


def test_known_keys_keep_working_while_the_provider_is_down(monkeypatch, caplog):
    monkeypatch.setattr(jwt_auth, "KEYS_MAX_AGE", 0.2)
    issuer = LocalIssuer()
    auth = authenticator(issuer, refresh_interval=0)
    token = issuer.token()
    assert auth.authenticate(token, {})
    issuer.stop()
    time.sleep(0.25)
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        assert auth.authenticate(token, {}) == Principal("alice", "acme", "writer", "jwt")
    assert "cannot fetch" in caplog.text
    # An unknown kid is still refused.
    assert auth.authenticate(issuer.token(headers={"kid": "new"}), {}) is None


def test_provider_back_up_is_used_again():
    """A failed fetch is retried after the interval, not remembered forever."""
    issuer = LocalIssuer()
    port = issuer.port
    issuer.stop()
    auth = authenticator(issuer, refresh_interval=0.2)
    assert auth.authenticate(issuer.token(), {}) is None
    with LocalIssuer(port=port) as back:
        time.sleep(0.25)
        assert auth.authenticate(back.token(), {}) == \
            Principal("alice", "acme", "writer", "jwt")
        assert back.hits[JWKS_PATH] == 1


def test_a_verified_token_is_remembered_until_it_expires(issuer, monkeypatch):
    """The second use of a token costs no signature check; an expired one is checked (and
    refused) again; a failure is never remembered."""
    auth = authenticator(issuer)
    checks = []
    real_decode = jwt_auth.jwt.decode
    monkeypatch.setattr(jwt_auth.jwt, "decode",
                        lambda *a, **kw: checks.append(1) or real_decode(*a, **kw))
    token = issuer.token(claims={"exp": int(time.time()) + 2})
    for _ in range(5):
        assert auth.authenticate(token, {}) == Principal("alice", "acme", "writer", "jwt")
    assert len(checks) == 1
    bad = issuer.token(claims={"aud": "elsewhere"})
    assert auth.authenticate(bad, {}) is None and auth.authenticate(bad, {}) is None
    assert len(checks) == 3
    time.sleep(2.1)
    auth.leeway = 0
    assert auth.authenticate(token, {}) is None
