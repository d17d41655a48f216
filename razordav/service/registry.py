"""The registry: tenants, users and app tokens, kept in the main volume's database (tables
``tenants``, ``users``, ``tokens``, declared here as replicated), so the journal ships them to
the bucket with the rest of the metadata and ``razordav restore`` brings them back.

Owns: the rows, name and role rules, argon2id hashing of passwords and token secrets, and
``verify_password``. Leaves to others: parsing ``Authorization`` headers and backing off
after failures (gate.py), JWTs (jwt_auth.py), where tenant volumes live, opening them,
applying quotas and deleting a tenant's data (tenancy.py).

Secrets: passwords and token secrets are stored only as argon2id hashes and are never
logged. An unknown user is verified against a dummy hash with the same parameters, so it
costs the same time as a wrong password.

App tokens look like ``rzt_<id>_<secret>``: the id (16 hex digits) finds the row, and only
the secret is hashed. A token is accepted as the Basic password of the user it belongs to.
``create_token`` returns the whole token once; it cannot be recovered later.

Cache: argon2 is slow on purpose (tens to hundreds of ms), and the gate verifies every
request, so successful verifications are remembered for ``cache_ttl`` seconds, keyed by an
HMAC of (user, password) under a per-process random key; failures are never cached. A hit
still reads the user's row (one indexed query) and must find the very hash that was
verified, so a password change, deletion, revocation or tenant removal made by ANY process
(the admin CLI beside a running gateway) applies at the next request; the TTL only bounds
how long a digest of a secret stays in memory. A role change applies at once too.

Threading: safe from many threads. SQLite goes through Tree (a connection per thread,
writes serialised in ``tree.db.write()``); ``_cache_lock`` guards ``_cache`` and is a leaf lock,
never held around SQLite or argon2. Hashing happens outside write transactions, so a slow
hash does not hold the database's write lock.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
import sqlite3
import threading
import time
from dataclasses import dataclass

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from ..core import errors
from ..core.db import table
from ..core.tree import Tree
from . import ROLES, TOKEN_SCOPES, Principal
from .tenants import check_tenant_dir, check_tenant_name, new_tenant_dir

# The service registry (service/registry.py) lives in the main volume's database, so it is
# journaled and restored with it. Hashes are argon2id strings, never clear text.
table("tenants", """
CREATE TABLE IF NOT EXISTS tenants (
    name TEXT PRIMARY KEY, quota_bytes INTEGER, max_files INTEGER,
    created INTEGER NOT NULL) WITHOUT ROWID;
""", ("name", "quota_bytes", "max_files", "created"), ("name",))
table("users", """
CREATE TABLE IF NOT EXISTS users (
    name TEXT PRIMARY KEY, tenant TEXT NOT NULL, role TEXT NOT NULL, hash TEXT NOT NULL,
    created INTEGER NOT NULL) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS users_tenant ON users (tenant);
""", ("name", "tenant", "role", "hash", "created"), ("name",))
table("tokens", """
CREATE TABLE IF NOT EXISTS tokens (
    id TEXT PRIMARY KEY, username TEXT NOT NULL, label TEXT NOT NULL, hash TEXT NOT NULL,
    created INTEGER NOT NULL) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS tokens_username ON tokens (username);
""", ("id", "username", "label", "hash", "created"), ("id",))

_USER = re.compile(r"[A-Za-z0-9_@][A-Za-z0-9._@-]{0,63}")
_TOKEN = re.compile(r"rzt_([0-9a-f]{16})_([A-Za-z0-9_-]{43})")
TOKEN_PREFIX = "rzt_"
MAX_PASSWORD = 1024          # characters; longer ones are refused, not truncated
MAX_LABEL = 100
DIR_KEY = "tenant_dir:"       # meta row of a tenant's directory component
SCOPE_KEY = "token_scope:"   # meta row of a token's scope
MAX_LIMIT = 2**63 - 1       # what SQLite's INTEGER holds
MAX_CACHE = 10_000           # cached verifications; the oldest go first


@dataclass(frozen=True)
class Tenant:
    name: str
    quota_bytes: int | None   # None: no limit
    max_files: int | None     # None: no limit
    created: int              # seconds since the epoch


@dataclass(frozen=True)
class User:
    name: str
    tenant: str
    role: str                 # one of ROLES
    created: int


@dataclass(frozen=True)
class Token:
    id: str
    user: str
    label: str
    created: int


@dataclass(frozen=True)
class _Hit:
    """A cached successful verification: which stored hash it matched, until when."""
    expires: float
    user: str
    token_id: str | None      # None: the user's password
    stored: str


def check_user_name(name: str) -> str:
    if not isinstance(name, str) or not _USER.fullmatch(name):
        raise errors.InvalidArgument(
            f"invalid user name {name!r}: use 1 to 64 letters, digits, '.', '_', '@' or '-', "
            "not starting with '.' or '-'")
    return name


def check_role(role: str) -> str:
    if role not in ROLES:
        raise errors.InvalidArgument(f"invalid role {role!r}: use one of {', '.join(ROLES)}")
    return role


def check_password(password: str) -> str:
    if not isinstance(password, str) or not password:
        raise errors.InvalidArgument("the password is empty")
    if len(password) > MAX_PASSWORD:
        raise errors.InvalidArgument(f"the password is longer than {MAX_PASSWORD} characters")
    try:
        password.encode("utf-8")
    except UnicodeEncodeError:
        raise errors.InvalidArgument("the password is not valid Unicode") from None
    return password


def _check_limit(what: str, value: int | None) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_LIMIT:
        raise errors.InvalidArgument(
            f"{what} must be a whole number from 0 to {MAX_LIMIT}, not {value!r}")
    return value


def _check_label(label: str) -> str:
    if not isinstance(label, str) or len(label) > MAX_LABEL or \
            any(ord(ch) < 32 or ord(ch) == 127 for ch in label):
        raise errors.InvalidArgument(
            f"invalid token label: at most {MAX_LABEL} characters, no control characters")
    return label


def _dummy_hash(hasher: PasswordHasher) -> str:
    """A hash no password matches, with the hasher's parameters: verifying against it
    costs what verifying a real one does, without spending a hash computation now."""
    def b64(n: int) -> str:
        return base64.b64encode(secrets.token_bytes(n)).decode().rstrip("=")
    return (f"$argon2id$v=19$m={hasher.memory_cost},t={hasher.time_cost},"
            f"p={hasher.parallelism}${b64(hasher.salt_len)}${b64(hasher.hash_len)}")


class Registry:
    """Tenants, users and tokens in ``tree`` (the MAIN volume's Tree).

    ``hasher`` defaults to argon2-cffi's ``PasswordHasher()`` (argon2id, RFC 9106 low-memory
    parameters); tests pass cheaper parameters. Hashes made with other parameters still
    verify: the parameters are part of each stored hash.
    """

    def __init__(self, tree: Tree, hasher: PasswordHasher | None = None,
                 cache_ttl: float = 60.0):
        self.tree = tree
        tree.db.create_tables()     # ours, if this database was opened before they were declared
        self.hasher = hasher or PasswordHasher()
        self.cache_ttl = cache_ttl
        self._dummy = _dummy_hash(self.hasher)
        self._key = secrets.token_bytes(32)
        self._cache: dict[bytes, _Hit] = {}   # guarded by _cache_lock
        self._cache_lock = threading.Lock()

    # -- tenants --

    def add_tenant(self, name: str, quota_bytes: int | None = None,
                   max_files: int | None = None) -> Tenant:
        """Register a tenant. MUST NOT exist yet (``Exists``)."""
        tenant = Tenant(check_tenant_name(name), _check_limit("quota_bytes", quota_bytes),
                        _check_limit("max_files", max_files), int(time.time()))
        with self.tree.db.write() as c:
            if self._tenant_row(c, name):
                raise errors.Exists(f"tenant {name!r} exists already")
            c.execute("INSERT INTO tenants VALUES (?, ?, ?, ?)",
                      (tenant.name, tenant.quota_bytes, tenant.max_files, tenant.created))
            c.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)",
                      (DIR_KEY + tenant.name, new_tenant_dir(tenant.name)))
        return tenant

    def set_tenant_limits(self, name: str, quota_bytes: int | None = None,
                          max_files: int | None = None) -> Tenant:
        """Replace a tenant's quota and file limit (None: no limit)."""
        with self.tree.db.write() as c:
            if not self._tenant_row(c, name):
                raise errors.NotFound(f"no tenant {name!r}")
            c.execute("UPDATE tenants SET quota_bytes = ?, max_files = ? WHERE name = ?",
                      (_check_limit("quota_bytes", quota_bytes),
                       _check_limit("max_files", max_files), name))
        return self.tenant(name)

    def del_tenant(self, name: str) -> list[str]:
        """Remove a tenant with its users and their tokens, in one transaction; return the
        names of the users removed. Its data (volume) is the caller's to delete."""
        with self.tree.db.write() as c:
            if not self._tenant_row(c, name):
                raise errors.NotFound(f"no tenant {name!r}")
            users = [r[0] for r in c.execute("SELECT name FROM users WHERE tenant = ?", (name,))]
            c.execute("DELETE FROM tokens WHERE username IN "
                      "(SELECT name FROM users WHERE tenant = ?)", (name,))
            c.execute("DELETE FROM users WHERE tenant = ?", (name,))
            c.execute("DELETE FROM tenants WHERE name = ?", (name,))
            c.execute("DELETE FROM meta WHERE key = ?", (DIR_KEY + name,))
        self._forget(lambda hit: hit.user in users)
        return users

    def tenant_dir(self, name: str) -> str:
        """The directory and store prefix component of a tenant's volume: ``<name>.<hex>``
        (a ``tenant_dir:<name>`` row in the replicated meta table, made with the tenant),
        or the bare name for a tenant made before those rows existed."""
        return check_tenant_dir(self.tree.meta(DIR_KEY + check_tenant_name(name), name))

    def tenants(self) -> list[Tenant]:
        return [Tenant(*r) for r in self.tree.db.reader().execute(
            "SELECT name, quota_bytes, max_files, created FROM tenants ORDER BY name")]

    def tenant(self, name: str) -> Tenant:
        row = self._tenant_row(self.tree.db.reader(), name)
        if row is None:
            raise errors.NotFound(f"no tenant {name!r}")
        return Tenant(*row)

    @staticmethod
    def _tenant_row(c: sqlite3.Connection, name: str):
        return c.execute("SELECT name, quota_bytes, max_files, created FROM tenants "
                         "WHERE name = ?", (name,)).fetchone()

    # -- users --

    def add_user(self, name: str, tenant: str, role: str, password: str) -> User:
        """Register a user of an existing tenant. The name MUST be new (``Exists``)."""
        check_user_name(name)
        check_role(role)
        check_password(password)
        self._check_new_user(self.tree.db.reader(), name, tenant)  # fail fast, before hashing
        stored = self.hasher.hash(password)
        user = User(name, tenant, role, int(time.time()))
        with self.tree.db.write() as c:
            self._check_new_user(c, name, tenant)
            c.execute("INSERT INTO users VALUES (?, ?, ?, ?, ?)",
                      (name, tenant, role, stored, user.created))
        return user

    def _check_new_user(self, c: sqlite3.Connection, name: str, tenant: str) -> None:
        if not self._tenant_row(c, tenant):
            raise errors.NotFound(f"no tenant {tenant!r}")
        if self._user_row(c, name):
            raise errors.Exists(f"user {name!r} exists already")

    def set_password(self, name: str, password: str) -> None:
        """Replace a user's password; cached verifications of the old one stop working.
        The user's app tokens stay valid (revoke them separately)."""
        stored = self.hasher.hash(check_password(password))
        with self.tree.db.write() as c:
            if not c.execute("UPDATE users SET hash = ? WHERE name = ?",
                             (stored, name)).rowcount:
                raise errors.NotFound(f"no user {name!r}")
        self._forget(lambda hit: hit.user == name and hit.token_id is None)

    def set_role(self, name: str, role: str) -> User:
        with self.tree.db.write() as c:
            if not c.execute("UPDATE users SET role = ? WHERE name = ?",
                             (check_role(role), name)).rowcount:
                raise errors.NotFound(f"no user {name!r}")
        return self.user(name)

    def del_user(self, name: str) -> None:
        """Remove a user and its tokens."""
        with self.tree.db.write() as c:
            c.execute("DELETE FROM tokens WHERE username = ?", (name,))
            if not c.execute("DELETE FROM users WHERE name = ?", (name,)).rowcount:
                raise errors.NotFound(f"no user {name!r}")
        self._forget(lambda hit: hit.user == name)

    def users(self, tenant: str | None = None) -> list[User]:
        sql = "SELECT name, tenant, role, created FROM users"
        args: tuple = ()
        if tenant is not None:
            sql, args = sql + " WHERE tenant = ?", (tenant,)
        return [User(*r) for r in self.tree.db.reader().execute(sql + " ORDER BY name", args)]

    def user(self, name: str) -> User:
        row = self._user_row(self.tree.db.reader(), name)
        if row is None:
            raise errors.NotFound(f"no user {name!r}")
        return User(*row)

    @staticmethod
    def _user_row(c: sqlite3.Connection, name: str):
        return c.execute("SELECT name, tenant, role, created FROM users WHERE name = ?",
                         (name,)).fetchone()

    # -- app tokens --

    def create_token(self, user: str, label: str = "", scope: str = "files") -> tuple[str, str]:
        """Make an app token for ``user``; return (token id, the whole token). The token is
        shown this once: only a hash of its secret is kept. ``scope``: "files" (WebDAV and
        the REST file routes) or "all" (also what the user's role allows besides); kept
        in the replicated ``meta`` table as ``token_scope:<id>``. Tokens made before scopes
        existed have no such row and are "files"."""
        _check_label(label)
        if scope not in TOKEN_SCOPES:
            raise errors.InvalidArgument(f"invalid scope {scope!r}: use files or all")
        self.user(user)   # fail fast, before hashing
        token_id, secret = secrets.token_hex(8), secrets.token_urlsafe(32)
        stored = self.hasher.hash(secret)
        with self.tree.db.write() as c:
            if not self._user_row(c, user):
                raise errors.NotFound(f"no user {user!r}")
            c.execute("INSERT INTO tokens VALUES (?, ?, ?, ?, ?)",
                      (token_id, user, label, stored, int(time.time())))
            c.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)",
                      (SCOPE_KEY + token_id, scope))
        return token_id, f"{TOKEN_PREFIX}{token_id}_{secret}"

    def revoke_token(self, token_id: str) -> None:
        with self.tree.db.write() as c:
            if not c.execute("DELETE FROM tokens WHERE id = ?", (token_id,)).rowcount:
                raise errors.NotFound(f"no token {token_id!r}")
            c.execute("DELETE FROM meta WHERE key = ?", (SCOPE_KEY + token_id,))
        self._forget(lambda hit: hit.token_id == token_id)

    def tokens(self, user: str) -> list[Token]:
        c = self.tree.db.reader()
        if not self._user_row(c, user):
            raise errors.NotFound(f"no user {user!r}")
        return [Token(*r) for r in c.execute(
            "SELECT id, username, label, created FROM tokens WHERE username = ? "
            "ORDER BY created, id", (user,))]

    # -- verification --

    def verify_password(self, name: str, password: str) -> User | None:
        """The user when ``password`` is its password or one of its app tokens, else None.

        Unknown users, bad names, users of a removed tenant and wrong passwords all cost
        one argon2 verification (unless a success is cached) and give None.
        """
        found = self._verify(name, password)
        return found[0] if found else None

    def principal(self, name: str, password: str) -> Principal | None:
        """``verify_password`` as the gate's ``Principal`` (via "basic" or "token")."""
        found = self._verify(name, password)
        if found is None:
            return None
        user, token_id = found
        if token_id is None:
            return Principal(user.name, user.tenant, user.role, "basic")
        return Principal(user.name, user.tenant, user.role, "token",
                         self.tree.meta(SCOPE_KEY + token_id, "files"))

    def _verify(self, name, password) -> tuple[User, str | None] | None:
        if not isinstance(name, str) or not isinstance(password, str):
            return None
        # surrogatepass: a password no stored hash can match still costs a verification
        raw = password.encode("utf-8", "surrogatepass")
        key = hmac.new(self._key, name.encode("utf-8", "surrogatepass") + b"\0" + raw,
                       hashlib.sha256).digest()
        hit = self._cached(key)
        if hit is not None:
            user = self._current(hit)
            if user is not None:
                return user, hit.token_id
            self._forget(lambda h: h is hit)
        token_id, stored, secret = self._stored_secret(name, password, raw)
        try:
            self.hasher.verify(stored, secret)
        except (VerificationError, InvalidHashError):
            return None
        if stored is self._dummy:
            return None
        hit = _Hit(time.monotonic() + self.cache_ttl, name, token_id, stored)
        user = self._current(hit)   # the row may have changed while argon2 ran
        if user is not None:
            self._remember(key, hit)
            return user, token_id
        return None

    def _stored_secret(self, name: str, password: str,
                       raw: bytes) -> tuple[str | None, str, bytes | str]:
        """(token id or None, the hash to verify against, the secret to verify)."""
        if not _USER.fullmatch(name) or not password or len(password) > MAX_PASSWORD:
            return None, self._dummy, raw[:MAX_PASSWORD]
        c = self.tree.db.reader()
        m = _TOKEN.fullmatch(password)
        if m:
            row = c.execute("SELECT hash FROM tokens WHERE id = ? AND username = ?",
                            (m.group(1), name)).fetchone()
            if row:
                return m.group(1), row[0], m.group(2)
        row = c.execute("SELECT u.hash FROM users u JOIN tenants t ON t.name = u.tenant "
                        "WHERE u.name = ?", (name,)).fetchone()
        return None, (row[0] if row else self._dummy), raw

    def _current(self, hit: _Hit) -> User | None:
        """The user, when what ``hit`` verified is still its password or live token."""
        c = self.tree.db.reader()
        if hit.token_id is None:
            row = c.execute(
                "SELECT u.name, u.tenant, u.role, u.created FROM users u "
                "JOIN tenants t ON t.name = u.tenant WHERE u.name = ? AND u.hash = ?",
                (hit.user, hit.stored)).fetchone()
        else:
            row = c.execute(
                "SELECT u.name, u.tenant, u.role, u.created FROM tokens k "
                "JOIN users u ON u.name = k.username JOIN tenants t ON t.name = u.tenant "
                "WHERE k.id = ? AND k.username = ? AND k.hash = ?",
                (hit.token_id, hit.user, hit.stored)).fetchone()
        return User(*row) if row else None

    # -- the cache of successes --

    def _cached(self, key: bytes) -> _Hit | None:
        with self._cache_lock:
            hit = self._cache.get(key)
            if hit is not None and hit.expires <= time.monotonic():
                del self._cache[key]
                hit = None
            return hit

    def _remember(self, key: bytes, hit: _Hit) -> None:
        with self._cache_lock:
            if len(self._cache) >= MAX_CACHE:
                now = time.monotonic()
                self._cache = {k: h for k, h in self._cache.items() if h.expires > now}
                while len(self._cache) >= MAX_CACHE:
                    del self._cache[next(iter(self._cache))]
            self._cache[key] = hit

    def _forget(self, which) -> None:
        with self._cache_lock:
            self._cache = {k: h for k, h in self._cache.items() if not which(h)}

    def cache_size(self) -> int:
        with self._cache_lock:
            return len(self._cache)
