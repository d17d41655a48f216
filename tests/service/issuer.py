"""A local OIDC identity provider for tests: serves its discovery document and JWKS on
127.0.0.1 (ephemeral port) from a thread, and mints tokens with its own keys, or with
any key and header a forger likes.

    issuer = LocalIssuer()              # started; issuer.stop() at the end
    JwtAuthenticator(jwks_url=issuer.jwks_url, issuer=issuer.issuer, audience=issuer.audience)
    issuer.token(claims={"tenant": "acme"})            # valid RS256 token for alice@acme
    issuer.token(key="ec")                             # valid ES256 token
    issuer.token(claims={"exp": None})                 # a None value drops the claim
    issuer.rotate()                                    # new RSA key and kid, old one gone

``requests`` counts every request served, ``hits`` counts them by path. Threading: the
server thread only reads ``jwks`` (replaced whole by ``rotate``) and bumps the counters
under ``_lock``.
"""

from __future__ import annotations

import collections
import itertools
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

DISCOVERY_PATH = "/.well-known/openid-configuration"
JWKS_PATH = "/jwks.json"


def new_rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def new_ec_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


class LocalIssuer:
    """An identity provider on loopback with one RSA (RS256) and one EC (ES256) key."""

    def __init__(self, audience: str = "razordav", discovery_issuer: str | None = None,
                 port: int = 0):
        self.audience = audience
        self._kids = itertools.count(1)
        self.keys = {"rsa": (f"rsa-{next(self._kids)}", new_rsa_key()),
                     "ec": (f"ec-{next(self._kids)}", new_ec_key())}
        self.retired: list[tuple[str, object]] = []   # (kid, key) pairs rotated out
        self.requests = 0
        self.hits: collections.Counter = collections.Counter()
        self._lock = threading.Lock()
        # port=0 picks a free one; a stopped issuer's port brings "the provider back up".
        self._server = ThreadingHTTPServer(("127.0.0.1", port), _handler(self))
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.issuer = self.url
        self.jwks_url = self.url + JWKS_PATH
        # What the discovery document claims as issuer; tests of a lying document change it.
        self.discovery_issuer = discovery_issuer or self.issuer
        # Served instead of the real key set when set: tests of a broken or odd provider.
        self.jwks_override: bytes | None = None
        self._publish()
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,),
                                        daemon=True, name="local-issuer")
        self._thread.start()

    # -- keys -------------------------------------------------------------------------

    def rotate(self, kind: str = "rsa", keep_old: bool = False, key=None) -> str:
        """Replace the ``kind`` ("rsa" or "ec") key by ``key`` (default: a new one) with a
        new kid; return the kid. With ``keep_old`` the old key stays published (a
        provider's overlap window)."""
        if key is None:
            key = new_rsa_key() if kind == "rsa" else new_ec_key()
        self.retired.append(self.keys[kind])
        self.keys[kind] = (f"{kind}-{next(self._kids)}", key)
        self._publish(extra=[self.retired[-1]] if keep_old else [])
        return self.keys[kind][0]

    def public_jwks(self) -> list[dict]:
        """The JWK entries of the current keys, to build odd key sets from."""
        return json.loads(self._jwks)["keys"]

    @property
    def jwks(self) -> bytes:
        """The key set document as served."""
        return self.jwks_override if self.jwks_override is not None else self._jwks

    def _publish(self, extra=()):
        self._jwks = json.dumps({"keys": [_public_jwk(kid, key) for kid, key in
                                          [*self.keys.values(), *extra]]}).encode()

    # -- tokens -----------------------------------------------------------------------

    def claims(self, **overrides) -> dict:
        """Valid claims for alice in tenant acme, five minutes to live; None drops one."""
        now = int(time.time())
        claims = {"iss": self.issuer, "aud": self.audience, "sub": "alice",
                  "tenant": "acme", "iat": now, "exp": now + 300}
        claims.update(overrides)
        return {name: value for name, value in claims.items() if value is not None}

    def token(self, claims: dict | None = None, key="rsa", headers: dict | None = None,
              algorithm: str | None = None) -> str:
        """A token with ``claims`` merged over the valid ones, signed with ``key``: "rsa" or
        "ec" (this issuer's current keys, their kid in the header), a private key object
        or a bytes/str HMAC secret. ``headers`` are merged over the JOSE header (None drops
        one, e.g. ``{"kid": None}``)."""
        kid = None
        if key in self.keys:
            kid, key = self.keys[key]
        if algorithm is None:
            algorithm = ("RS256" if isinstance(key, rsa.RSAPrivateKey) else
                         "ES256" if isinstance(key, ec.EllipticCurvePrivateKey) else "HS256")
        header = {"kid": kid} if kid else {}
        header.update(headers or {})
        header = {name: value for name, value in header.items() if value is not None}
        return jwt.encode(self.claims(**(claims or {})), key, algorithm=algorithm,
                          headers=header)

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()

    def _count(self, path: str) -> None:
        with self._lock:
            self.requests += 1
            self.hits[path] += 1

    def _discovery(self) -> bytes:
        return json.dumps({"issuer": self.discovery_issuer, "jwks_uri": self.jwks_url,
                           "id_token_signing_alg_values_supported": ["RS256", "ES256"]
                           }).encode()


def _public_jwk(kid: str, key) -> dict:
    if isinstance(key, rsa.RSAPrivateKey):
        jwk, alg = json.loads(RSAAlgorithm.to_jwk(key.public_key())), "RS256"
    else:
        jwk, alg = json.loads(ECAlgorithm.to_jwk(key.public_key())), "ES256"
    return {**jwk, "kid": kid, "use": "sig", "alg": alg}


def _handler(issuer: LocalIssuer):
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            issuer._count(self.path)
            body = {DISCOVERY_PATH: issuer._discovery, JWKS_PATH: lambda: issuer.jwks}.get(
                self.path)
            if body is None:
                self.send_error(404)
                return
            data = body()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            pass   # keep test output clean; the counters say what was asked

    return Handler
