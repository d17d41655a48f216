"""The service layer: who is asking (users, tokens, JWT), which tenant's volume they see,
and the faces an operator uses (REST API, metrics). Without ``--auth`` none of it runs and
razordav serves one anonymous namespace, as before.

Shared vocabulary of the modules here:

- ``Principal``: an authenticated caller. The gate (``gate.py``) puts it in the WSGI
  environ as ``environ["razordav.principal"]`` before any face sees the request.
- Roles: ``reader`` (GET, HEAD, PROPFIND, OPTIONS), ``writer`` (every method in its tenant),
  ``admin`` (writer, plus the admin API across tenants).
- An authenticator has ``scheme`` ("Basic" or "Bearer") and ``authenticate(credentials,
  environ) -> Principal | None``: None when the credentials are wrong, whatever the reason
  (the caller answers 401 and says no more).
"""

from __future__ import annotations

from dataclasses import dataclass

from .. import dav  # noqa: F401  before gate.py imports WsgiDAV: see dav/xmlsafe.py

ROLES = ("reader", "writer", "admin")
READ_METHODS = frozenset({"GET", "HEAD", "PROPFIND", "OPTIONS"})
PRINCIPAL_KEY = "razordav.principal"
TOKEN_SCOPES = ("files", "all")
FILE_ROUTES = tuple(f"/api/v1/{r}" for r in ("files/", "content/", "dirs/", "move", "copy")) \
    + ("/api/v1/files",)


@dataclass(frozen=True)
class Principal:
    user: str
    tenant: str
    role: str            # one of ROLES
    via: str = "basic"   # basic, token, jwt
    scope: str = "all"   # an app token's: "files" (WebDAV and the file routes) or "all"

    def may_reach(self, path: str) -> bool:
        """Whether this principal's scope covers ``path`` (a files-only app token reaches
        WebDAV and the REST file routes, never the admin, job or metrics routes)."""
        return self.scope == "all" or not (path in ("/metrics", "/api/v1") or (
            path.startswith("/api/v1/") and not path.startswith(FILE_ROUTES)))

    def may(self, method: str) -> bool:
        """Whether this role may send ``method`` to its own tenant."""
        return self.role != "reader" or method.upper() in READ_METHODS
