"""Bearer authentication: a JWT signed by an OIDC identity provider becomes a ``Principal``.

Owns: checking a token (signature against the provider's JWKS, algorithm, exp/nbf/iat,
issuer, audience) and mapping its claims to user, tenant and role; fetching and caching
the provider's keys, and its discovery document. Leaves to the gate (``gate.py``) reading
the ``Authorization`` header, answering 401, checking that the tenant exists and
enforcing the role.

Why the checks are in this order:

- The header's ``alg`` is checked against the allowed list *before* any key is looked up,
  so ``alg: none`` and HMAC tokens (``HS256`` keyed with the provider's public key, the
  classic confusion attack) never reach a verifier, and a forged token cannot make us
  fetch anything. The key found for the ``kid`` must also be a key for that ``alg``.
- Keys are cached by ``kid``. An unknown ``kid`` (the provider rotated its keys) triggers a
  refresh, but at most one fetch attempt per ``refresh_interval`` (10 s), successful or
  not, so a flood of tokens with made-up kids costs the provider one request per interval
  and never a request per token. The price: a token signed with a brand-new key may be
  refused for up to ``refresh_interval`` after someone else's refresh.
- Keys older than ``KEYS_MAX_AGE`` are refreshed on use; if the provider is down then, the
  old keys keep working (tokens still expire), and requests do not queue behind the
  slow fetch.
- A token carrying an ``aud`` claim is refused when no ``audience`` is configured
  (PyJWT's rule, kept on purpose: a token minted for another service of the same provider
  must not open this one).

Any refusal is ``None`` and one debug log line with the reason, never the token. Network
trouble with the provider is a warning and ``None``, never an exception to the caller.

Threading: ``authenticate`` is called from many server threads at once. ``_lock`` guards
``_last_try``, ``_jwks_client`` and every fetch; ``_keys`` and ``_fetched_at`` are
replaced whole under ``_lock`` and may be read without it (a reader sees the old or the
new dict, both valid). One lock only, so no lock order.
"""

from __future__ import annotations

import hmac
import http.client
import os
import json
import logging
import threading
import time
import urllib.parse
import urllib.request

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt import PyJWKClient

from . import ROLES, Principal
from .tenants import check_tenant_name
from ..core import errors

log = logging.getLogger(__name__)

SUPPORTED_ALGORITHMS = ("RS256", "ES256")
KEYS_MAX_AGE = 300.0           # seconds before cached keys are fetched again on use
MAX_TOKEN_CHARS = 16 * 1024   # a longer "token" is refused before parsing
CACHE_SECONDS = 60.0          # a verified token is trusted this long without a new check
CACHE_ENTRIES = 10_000
MAX_DOCUMENT_BYTES = 1 << 20   # the discovery document is small; refuse a flood
MAX_NAME_CHARS = 256           # a user name longer than this is not a name


class JwtAuthenticator:
    """Validates ``Authorization: Bearer <JWT>`` credentials against an OIDC provider.

    Give ``jwks_url`` (the provider's key set), or ``oidc_issuer`` to discover it from
    ``<oidc_issuer>/.well-known/openid-configuration`` on first use; ``issuer`` then
    defaults to ``oidc_issuer``. Nothing is fetched in the constructor, so the gateway
    starts while the provider is down.
    """

    scheme = "Bearer"

    def __init__(self, jwks_url: str | None = None, oidc_issuer: str | None = None,
                 issuer: str | None = None, audience: str | None = None,
                 user_claim: str = "sub", tenant_claim: str = "tenant",
                 role_claim: str = "role", default_role: str = "writer",
                 leeway: float = 30, algorithms=SUPPORTED_ALGORITHMS, *,
                 refresh_interval: float = 10.0, timeout: float = 5.0):
        if not jwks_url and not oidc_issuer:
            raise ValueError("JWT authentication needs --jwks-url or --oidc-issuer "
                             "to know where the signing keys are")
        for url in (jwks_url, oidc_issuer):
            if url and urllib.parse.urlsplit(url).scheme not in ("http", "https"):
                raise ValueError(f"{url!r} is not an http:// or https:// URL")
        self.algorithms = _check_algorithms(algorithms)
        if default_role not in ROLES:
            raise ValueError(f"default role {default_role!r} is not one of {', '.join(ROLES)}")
        for claim in (user_claim, tenant_claim, role_claim):
            if not isinstance(claim, str) or not claim:
                raise ValueError(f"JWT claim names must be non-empty strings, not {claim!r}")
        if leeway < 0 or refresh_interval < 0 or timeout <= 0:
            raise ValueError("leeway and refresh_interval must be >= 0, timeout > 0")
        self.jwks_url = jwks_url
        self.oidc_issuer = oidc_issuer
        self.issuer = issuer if issuer is not None else oidc_issuer
        self.audience = audience
        self.user_claim, self.tenant_claim, self.role_claim = user_claim, tenant_claim, role_claim
        self.default_role = default_role
        self.leeway = leeway
        self.refresh_interval = refresh_interval
        self.timeout = timeout
        self._lock = threading.Lock()
        self._jwks_client = PyJWKClient(jwks_url, cache_jwk_set=False, timeout=timeout) \
            if jwks_url else None
        self._keys: dict[str, tuple[str, object]] = {}   # kid -> (algorithm, public key)
        self._fetched_at: float | None = None   # monotonic time of the last good fetch
        self._last_try: float | None = None     # monotonic time of the last fetch attempt
        self._cache_key = os.urandom(32)
        self._cache: dict[bytes, tuple] = {}   # keyed hash -> (who, until, kid)
        self._cache_lock = threading.Lock()

    def authenticate(self, credentials: str, environ=None) -> Principal | None:
        """The caller named by a valid token, else None (the reason goes to the debug log).

        A token that verified is remembered (by a keyed hash, never the token) until it
        expires, at most ``CACHE_SECONDS``: a signature check per request would cost a
        gateway serving small files a sixth of its throughput. Failures are not remembered.
        """
        token = (credentials or "").strip()
        key = hmac.new(self._cache_key, token.encode("utf-8", "replace"), "sha256").digest()
        now = time.time()
        hit = self._cache.get(key)
        # still valid, its key still published, the key set fresh: no new check needed
        if hit is not None and hit[1] > now and hit[2] in self._keys and self._fresh():
            return hit[0]
        try:
            claims = self._claims(token)
            principal = self._principal(claims)
            with self._cache_lock:
                if len(self._cache) >= CACHE_ENTRIES:
                    self._cache = {k: v for k, v in self._cache.items() if v[1] > now}
                    if len(self._cache) >= CACHE_ENTRIES:
                        self._cache = {}
                self._cache[key] = (principal, min(float(claims["exp"]), now + CACHE_SECONDS),
                                    jwt.get_unverified_header(token)["kid"])
            return principal
        except _Refused as e:
            log.debug("bearer token refused: %s", e)
        except jwt.PyJWTError as e:
            log.debug("bearer token refused: %s: %s", type(e).__name__, _short(str(e)))
        except Exception:
            # A bug, not a bad token: keep the traceback, and stay closed.
            log.exception("bearer token check failed")
        return None

    # -- the token --------------------------------------------------------------------

    def _claims(self, token: str) -> dict:
        if not token or len(token) > MAX_TOKEN_CHARS:
            raise _Refused("empty or oversized token")
        header = jwt.get_unverified_header(token)
        alg = header.get("alg")
        if alg not in self.algorithms:
            raise _Refused(f"algorithm {_short(alg)} is not allowed")
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise _Refused("no kid in the token header")
        found = self._signing_key(kid)
        if found is None:
            raise _Refused(f"no signing key with kid {_short(kid)}")
        key_alg, key = found
        if key_alg != alg:
            raise _Refused(f"key {_short(kid)} is for {key_alg}, token says {alg}")
        claims = jwt.decode(token, key, algorithms=[alg], audience=self.audience,
                            issuer=self.issuer, leeway=self.leeway,
                            options={"require": ["exp", "iat"]})
        # PyJWT before 2.10 accepts an iat in the future; a token cannot be issued later.
        if claims["iat"] > time.time() + self.leeway:
            raise _Refused("token issued in the future (iat)")
        return claims

    def _principal(self, claims: dict) -> Principal:
        user = claims.get(self.user_claim)
        if not isinstance(user, str) or not user or len(user) > MAX_NAME_CHARS \
                or not user.isprintable():
            raise _Refused(f"claim {self.user_claim!r} is not a usable user name")
        tenant = claims.get(self.tenant_claim)
        if not isinstance(tenant, str):
            raise _Refused(f"no tenant in claim {self.tenant_claim!r}")
        try:
            check_tenant_name(tenant)
        except errors.FsError:
            raise _Refused(f"claim {self.tenant_claim!r} is not a tenant name: "
                           f"{_short(tenant)}") from None
        role = claims.get(self.role_claim, self.default_role)
        if role not in ROLES:
            raise _Refused(f"claim {self.role_claim!r} is not a role: {_short(role)}")
        return Principal(user=user, tenant=tenant, role=role, via="jwt")

    # -- the keys ---------------------------------------------------------------------

    def _signing_key(self, kid: str) -> tuple[str, object] | None:
        """(algorithm, public key) of the provider's key ``kid``, or None; fetches the key
        set again when it is needed and the rate limit allows."""
        keys = self._keys
        if kid in keys and self._fresh():
            return keys[kid]
        # A stale but known key serves at once while another thread refreshes: nobody
        # queues behind a slow provider. An unknown kid waits for the fetch in flight (at
        # most ``timeout``): it may be the new key that fetch brings.
        if not self._lock.acquire(blocking=kid not in keys):
            return keys[kid]
        try:
            if (kid not in self._keys or not self._fresh()) and self._may_try():
                self._refresh()
            return self._keys.get(kid)
        finally:
            self._lock.release()

    def _fresh(self) -> bool:
        fetched = self._fetched_at
        return fetched is not None and time.monotonic() - fetched < KEYS_MAX_AGE

    def _may_try(self) -> bool:
        """At most one fetch attempt per refresh_interval, whatever triggers it. Holds _lock."""
        return self._last_try is None or time.monotonic() - self._last_try >= self.refresh_interval

    def _refresh(self) -> None:
        """Fetch the key set (and, once, the discovery document). Holds _lock."""
        self._last_try = time.monotonic()
        try:
            if self._jwks_client is None:
                self._jwks_client = PyJWKClient(self._discover(), cache_jwk_set=False,
                                                timeout=self.timeout)
            document = self._jwks_client.fetch_data()
            if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
                raise ValueError("the JWKS is not a JSON object with a list of keys")
        except (jwt.PyJWTError, OSError, ValueError, http.client.HTTPException) as e:
            log.warning("cannot fetch the JWT signing keys from %s: %s",
                        self.jwks_url or self.oidc_issuer, _short(str(e), 300))
            return
        keys = {}
        for jwk in document["keys"]:
            found = _public_key(jwk, self.algorithms)
            if found:
                keys[jwk["kid"]] = found
        if not keys:
            log.warning("the JWKS at %s has no %s signing key with a kid", self.jwks_url,
                        " or ".join(self.algorithms))
        self._keys = keys
        self._fetched_at = time.monotonic()

    def _discover(self) -> str:
        """The ``jwks_uri`` of the provider's OpenID configuration. Holds _lock."""
        url = self.oidc_issuer.rstrip("/") + "/.well-known/openid-configuration"
        with urllib.request.urlopen(url, timeout=self.timeout) as response:
            document = json.loads(response.read(MAX_DOCUMENT_BYTES + 1)[:MAX_DOCUMENT_BYTES])
        if not isinstance(document, dict):
            raise ValueError(f"{url} is not a JSON object")
        # OpenID Connect Discovery 1.0, section 4.3: the document MUST name the issuer
        # it was fetched from, or it is someone else's.
        if document.get("issuer") != self.oidc_issuer:
            raise ValueError(f"{url} names issuer {_short(document.get('issuer'))}")
        jwks_uri = document.get("jwks_uri")
        if not isinstance(jwks_uri, str) or \
                urllib.parse.urlsplit(jwks_uri).scheme not in ("http", "https"):
            raise ValueError(f"{url} has no http(s) jwks_uri")
        self.jwks_url = jwks_uri
        return jwks_uri


class _Refused(Exception):
    """A token we do not accept; the message is the reason for the debug log."""


def _public_key(jwk, algorithms: tuple[str, ...]) -> tuple[str, object] | None:
    """(algorithm, public key) of a JWKS entry we may verify with, else None.

    Read here rather than through PyJWKSet so that the rules do not move with the PyJWT
    release: a signing key ("use" absent or "sig") with a kid, for one of ``algorithms``,
    whose key type matches that algorithm (RSA for RS256, EC P-256 for ES256)."""
    if not isinstance(jwk, dict) or not isinstance(jwk.get("kid"), str) \
            or jwk.get("use", "sig") != "sig":
        return None
    kty, crv = jwk.get("kty"), jwk.get("crv")
    implied = "RS256" if kty == "RSA" else "ES256" if (kty, crv) == ("EC", "P-256") else None
    alg = jwk.get("alg", implied)
    if alg is None or alg != implied or alg not in algorithms:
        return None
    try:
        key = jwt.PyJWK(jwk, algorithm=alg).key
    except (jwt.PyJWTError, ValueError, TypeError) as e:
        log.warning("skipping JWKS key %s: %s", _short(jwk.get("kid")), _short(str(e)))
        return None
    wanted = rsa.RSAPublicKey if alg == "RS256" else ec.EllipticCurvePublicKey
    return (alg, key) if isinstance(key, wanted) else None


def _check_algorithms(algorithms) -> tuple[str, ...]:
    algorithms = tuple(algorithms)
    if not algorithms or not set(algorithms) <= set(SUPPORTED_ALGORITHMS):
        raise ValueError(f"JWT algorithms must be among {', '.join(SUPPORTED_ALGORITHMS)}, "
                         f"not {algorithms!r}")
    return algorithms


def _short(value, limit: int = 80) -> str:
    """A claim or header value for a log line: repr (no raw newlines), cut to ``limit``."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."
