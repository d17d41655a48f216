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


@dataclass(frozen=True)
class Principal:
    user: str
    tenant: str
    role: str            # one of ROLES
    via: str = "basic"   # basic, token, jwt

    def may(self, method: str) -> bool:
        """Whether this role may send ``method`` to its own tenant."""
        return self.role != "reader" or method.upper() in READ_METHODS
