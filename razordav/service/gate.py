"""The gate: who is asking, and which face and tenant gets the request.

``Service`` owns the volumes: the main one (the registry of users and tenants lives in its
tree, so it reaches the bucket with the rest of the metadata) and one per tenant, opened on
first use, each with its own WebDAV app (own lock table, own provider), so nothing a request
can name reaches another tenant's data. ``Gate`` is the WSGI app in front of everything when
``--auth`` is not ``none``:

    /healthz, /readyz        -> the REST API app, no authentication
    everything else          -> authenticate (Basic, Bearer) or 401; then
    /metrics                 -> metrics (admin, or the metrics token as a Bearer token)
    /api/v1/...              -> the REST API app
    anything else            -> the caller's tenant's WebDAV app, its root being "/"

Basic credentials are checked through WsgiDAV's domain-controller interface
(``RegistryDC.basic_auth_user``) for every face, so the REST API and WebDAV accept the same
passwords and app tokens; WsgiDAV's own authenticator knows no Bearer tokens, so the gate
does the HTTP side itself and hands the tenant's WsgiDAV app the user name through its
``trusted_auth_header`` (an environ key no HTTP header can set). Lock tokens are bound to
that user name by WsgiDAV.

Failures slow the next attempts down (``Backoff``): after 5 failures for one user name, or
20 from one address, attempts within a doubling window get 429 without a password check
(capped at a minute for an address, 30 s for a user name). Each attempt is counted before
its check, so parallel guesses get 429 too; a success takes back only its own count. An
address that logged in as a user skips that user's window (30 days), so guessing a
password elsewhere never locks the user out where it works; from a new address the user
waits at most 30 s after a failure.
"""

from __future__ import annotations

import base64
import hmac
import logging
import threading
import time

from ..core import errors
from ..dav.dc import REALM, TrustedDC
from ..web.wsgi import reply
from . import PRINCIPAL_KEY, Principal
from .tenancy import Tenancy, apply_limits

log = logging.getLogger(__name__)

USER_KEY = "razordav.user"      # the WsgiDAV trusted_auth_header: not settable over HTTP
HEALTH_PATHS = ("/healthz", "/readyz")
USER_WAIT_CAP = 30.0     # the longest a user name's own window lasts, in seconds
KNOWN_FOR = 30 * 86400   # an address that logged in as a user skips its window this long
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PROPFIND"})
ANONYMOUS = Principal("anonymous", "", "admin", "none")


class Service:
    """The volumes and apps of one gateway. With ``registry`` None there is one anonymous
    namespace, the main volume, and no tenants."""

    def __init__(self, main_volume, registry=None, open_volume=None, make_dav_app=None,
                 close_app=None):
        self.main_volume = main_volume
        self._close_app = close_app              # (WSGI app) -> None
        self.registry = registry
        self.tenancy = None if registry is None else \
            Tenancy(registry, main_volume.data_dir, main_volume.store.url)
        self._open_volume = open_volume          # (data_dir, store_url, cache_size) -> Volume
        self._make_dav_app = make_dav_app        # (volume, trusted_user_key) -> WSGI app
        self._lock = threading.Lock()
        self._volumes: dict[str, object] = {}
        self._apps: dict[str, object] = {}

    def principal(self, environ) -> Principal:
        return environ.get(PRINCIPAL_KEY) or ANONYMOUS

    def volume_for(self, principal: Principal):
        if self.registry is None or not principal.tenant:
            return self.main_volume
        return self._tenant(principal.tenant)[0]

    def dav_app(self, tenant: str):
        return self._tenant(tenant)[1]

    def lock_manager(self, tenant: str):
        """The WsgiDAV lock manager of a tenant's WebDAV app (or of the one namespace)."""
        return self.dav_app(tenant).wsgidav_app.lock_manager

    def volumes(self) -> dict:
        with self._lock:
            if self.registry is None:
                return {"": self.main_volume}
            return dict(self._volumes)

    def _tenant(self, name: str):
        try:
            tenant = self.registry.tenant(name)   # one indexed read: deleted tenants end here
        except errors.NotFound:
            self._forget(name)
            raise
        with self._lock:
            if name not in self._volumes:
                vol = self.tenancy.open(tenant, self._open_volume, self._cache_share())
                self._volumes[name] = vol
                self._apps[name] = self._make_dav_app(vol, USER_KEY)
            return self._volumes[name], self._apps[name]

    def _forget(self, name: str) -> None:
        """Close the volume of a tenant deleted while it was open (its data stays until
        ``razordav tenant del`` removes it, which needs the volume closed)."""
        with self._lock:
            vol = self._volumes.pop(name, None)
            app = self._apps.pop(name, None)
        if vol is not None:
            log.info("tenant %s was deleted: closing its volume", name)
            if self._close_app is not None and app is not None:
                self._close_app(app)
            vol.close()

    def delete_tenant(self, name: str) -> tuple[int, int]:
        """Remove a tenant from the registry (its users and tokens), close its volume and
        delete its data: the data dir and every object under its store prefix. Returns
        (users, objects) removed. Its name made again gets a new component, so it would
        not open these even if they stayed."""
        place = self.tenancy.place(name)
        users = self.registry.del_tenant(name)
        self._forget(name)
        return users, self.tenancy.delete_data(place, self.main_volume.store)

    def set_tenant_limits(self, name: str, quota_bytes: int | None, max_files: int | None):
        """New limits for a tenant, applied at once if its volume is open."""
        tenant = self.registry.set_tenant_limits(name, quota_bytes, max_files)
        with self._lock:
            vol = self._volumes.get(name)
        if vol is not None:
            apply_limits(vol, tenant)
        return tenant

    def _cache_share(self) -> int:
        """Each tenant's cache: an equal share of the configured size (at least 64 MiB)."""
        total = self.main_volume.cache_size()
        return max(64 << 20, total // max(1, len(self.registry.tenants())))

    def close(self) -> None:
        with self._lock:
            for name, vol in self._volumes.items():
                if self._close_app is not None:
                    self._close_app(self._apps[name])
                vol.close()
            self._volumes.clear()
            self._apps.clear()


class RegistryDC(TrustedDC):
    """WsgiDAV's domain-controller interface over the user registry; the gate calls
    ``basic_auth_user`` for Basic credentials on every face (WebDAV, REST API, metrics)."""

    def __init__(self, registry):
        self.registry = registry

    def basic_auth_user(self, realm, user_name, password, environ):
        principal = self.registry.principal(user_name, password)
        if principal is None:
            return False
        environ[PRINCIPAL_KEY] = principal
        return True


class Backoff:
    """Failure counts per key (an address, a user name); a key that failed more than
    ``free`` times must wait a window doubling with each failure, up to ``cap`` seconds.
    Counts are forgotten ``forget`` seconds after the key's last failure.

    ``begin`` checks and counts in one step: an attempt is counted as a failure before its
    password is checked, so parallel guesses cannot all slip in under the budget; ``undo``
    takes the count back when the attempt succeeded. A success never clears the failures
    of others."""

    def __init__(self, free: int = 5, base: float = 1.0, cap: float = 60.0,
                 forget: float = 900.0):
        self.free, self.base, self.cap, self.forget = free, base, cap, forget
        self._lock = threading.Lock()
        self._state: dict[str, tuple[int, float]] = {}   # key -> (failures, last failure)

    def _failures(self, key: str, now: float) -> tuple[int, float]:
        failures, last = self._state.get(key, (0, 0.0))
        return (0, 0.0) if now - last > self.forget else (failures, last)

    def wait(self, key: str) -> float:
        """Seconds ``key`` must still wait (0: go ahead)."""
        now = time.monotonic()
        with self._lock:
            failures, last = self._failures(key, now)
        return self._window(failures, last, now)

    def _window(self, failures: int, last: float, now: float) -> float:
        if failures <= self.free:
            return 0.0
        return max(0.0, last + min(self.cap, self.base * 2 ** (failures - self.free - 1)) - now)

    def begin(self, key: str) -> float:
        """0 and the attempt counted as a failure, or the seconds still to wait."""
        now = time.monotonic()
        with self._lock:
            failures, last = self._failures(key, now)
            wait = self._window(failures, last, now)
            if not wait:
                self._state[key] = (failures + 1, now)
                if len(self._state) > 100_000:     # forget the oldest half rather than grow
                    for k in sorted(self._state, key=lambda k: self._state[k][1])[:50_000]:
                        del self._state[k]
            return wait

    def undo(self, key: str) -> None:
        with self._lock:
            failures, last = self._state.get(key, (0, 0.0))
            if failures > 1:
                self._state[key] = (failures - 1, last)
            else:
                self._state.pop(key, None)


class Gate:
    def __init__(self, service: Service, basic: bool = True, jwt=None, api_app=None,
                 metrics_app=None, metrics_token: str | None = None,
                 allowed_origins: list[str] | tuple = ()):
        self.service = service
        self.allowed_origins = frozenset(o.rstrip("/").lower() for o in allowed_origins)
        self.dc = RegistryDC(service.registry) if basic else None
        self.jwt = jwt
        self.api_app = api_app
        self.metrics_app = metrics_app
        self.metrics_token = metrics_token
        # An address may hide many people (NAT, a proxy): it gets more tries than a name.
        self.backoff = {"addr": Backoff(free=20), "user": Backoff(free=5, cap=USER_WAIT_CAP)}
        self._known: dict[tuple[str, str], float] = {}   # (address, user) -> last success
        self._known_lock = threading.Lock()
        schemes = ([f'Basic realm="{REALM}", charset="UTF-8"'] if basic else []) + \
            ([f'Bearer realm="{REALM}"'] if jwt is not None else [])
        self._challenges = [("WWW-Authenticate", s) for s in schemes]

    def __call__(self, environ, start_response):
        environ.pop(PRINCIPAL_KEY, None)
        environ.pop(USER_KEY, None)
        path = environ.get("PATH_INFO", "")
        if path in HEALTH_PATHS and self.api_app is not None:
            return self.api_app(environ, start_response)
        if path == "/metrics" and self.metrics_app is not None and self._metrics_token(environ):
            return self.metrics_app(environ, start_response)
        refused = self._foreign(environ)
        if refused:
            return reply(start_response, "403 Forbidden", refused)
        principal, wait = self._authenticate(environ)
        if wait:
            return reply(start_response, "429 Too Many Requests",
                           "too many failed logins; try again later",
                           headers=[("Retry-After", str(int(wait) + 1))])
        if principal is None:
            return reply(start_response, "401 Unauthorized", "authentication required",
                           headers=self._challenges)
        if not principal.may_reach(path):
            return reply(start_response, "403 Forbidden",
                         "this app token may only reach files (its scope is files)")
        environ[PRINCIPAL_KEY] = principal
        # lock tokens are bound to this: a JWT "alice" is not the registry's "alice"
        environ[USER_KEY] = principal.user if principal.via in ("basic", "token") else \
            f"{principal.via}:{principal.user}"
        if path == "/metrics" and self.metrics_app is not None:
            if principal.role != "admin":
                return reply(start_response, "403 Forbidden", "metrics are for admins")
            return self.metrics_app(environ, start_response)
        if (path == "/api/v1" or path.startswith("/api/v1/")) and self.api_app is not None:
            return self.api_app(environ, start_response)
        if not principal.may(environ.get("REQUEST_METHOD", "GET")):
            return reply(start_response, "403 Forbidden",
                           f"user {principal.user} may only read")
        if not principal.tenant:
            return reply(start_response, "403 Forbidden",
                           f"user {principal.user} belongs to no tenant")
        try:
            app = self.service.dav_app(principal.tenant)
        except errors.NotFound:    # a tenant deleted meanwhile, or a token's unknown tenant
            return reply(start_response, "403 Forbidden",
                           f"tenant {principal.tenant} does not exist")
        except Exception as exc:   # its store unreachable
            log.warning("tenant %s cannot be opened: %s", principal.tenant, exc)
            return reply(start_response, "503 Service Unavailable",
                           f"tenant {principal.tenant} is not available")
        return app(environ, start_response)

    def _foreign(self, environ) -> str | None:
        """Why a request that may change state comes from a page of another site, if it
        does: its ``Origin`` is neither the gateway's own nor allowed, or the browser says
        ``Sec-Fetch-Site: cross-site`` (or ``same-site``) for an origin not allowed. A
        browser with cached Basic credentials would otherwise send them along (CSRF)."""
        if environ.get("REQUEST_METHOD", "GET").upper() in SAFE_METHODS:
            return None
        origin = environ.get("HTTP_ORIGIN", "").strip().rstrip("/").lower()
        own = f"{environ.get('wsgi.url_scheme', 'http')}://" \
              f"{environ.get('HTTP_HOST', '')}".lower()
        if origin and origin != own and origin not in self.allowed_origins:
            return f"requests from pages of {origin} may not change anything here"
        site = environ.get("HTTP_SEC_FETCH_SITE", "").strip().lower()
        if site in ("cross-site", "same-site") and origin not in self.allowed_origins:
            return "requests from pages of another site may not change anything here"
        return None

    def _metrics_token(self, environ) -> bool:
        header = environ.get("HTTP_AUTHORIZATION", "")
        return bool(self.metrics_token) and header.startswith("Bearer ") and \
            hmac.compare_digest(header[7:].strip().encode(), self.metrics_token.encode())

    def _authenticate(self, environ) -> tuple[Principal | None, float]:
        header = environ.get("HTTP_AUTHORIZATION", "")
        scheme, _, credentials = header.partition(" ")
        scheme = scheme.lower()
        if scheme == "basic" and self.dc is not None:
            try:
                user, _, password = base64.b64decode(credentials.strip(), validate=True) \
                    .decode("utf-8").partition(":")
            except (ValueError, UnicodeError):
                return None, 0.0
            return self._checked(environ, user, lambda: self.dc.basic_auth_user(
                REALM, user, password, environ) and environ[PRINCIPAL_KEY])
        if scheme == "bearer" and self.jwt is not None:
            return self._checked(environ, None,
                                 lambda: self.jwt.authenticate(credentials.strip(), environ))
        return None, 0.0

    def _checked(self, environ, user: str | None, check) -> tuple[Principal | None, float]:
        """Check credentials within the backoff budgets: the address's always, the user
        name's unless this address logged in as that user before (so guessing a user's
        password from elsewhere does not lock the user out where it works)."""
        addr = environ.get("REMOTE_ADDR", "")
        keys = [("addr", addr)]
        if user and not self._is_known(addr, user):
            keys.append(("user", user))
        begun = []
        for kind, key in keys:
            wait = self.backoff[kind].begin(key)
            if wait:
                for k in begun:
                    self.backoff[k[0]].undo(k[1])
                return None, wait
            begun.append((kind, key))
        principal = check() or None
        if principal is None:
            log.info("failed login from %s%s", addr or "?", f" as {user!r}" if user else "")
            return None, 0.0
        for kind, key in begun:
            self.backoff[kind].undo(key)
        if user:
            with self._known_lock:
                if len(self._known) > 100_000:
                    self._known.clear()
                self._known[(addr, user)] = time.monotonic()
        return principal, 0.0

    def _is_known(self, addr: str, user: str) -> bool:
        with self._known_lock:
            seen = self._known.get((addr, user))
        return seen is not None and time.monotonic() - seen < KNOWN_FOR
