"""The REST API's admin routes: tenants, users and app tokens, through the service's
``Registry`` (registry.py owns the rules: names, roles, hashing). Admins only; each change
is written to the audit log (never with a password or token in it).

    GET, POST          /api/v1/tenants                 list, add
    GET, PATCH, DELETE /api/v1/tenants/{name}          one, set limits, remove
    GET, POST          /api/v1/users                   list (?tenant=), add
    GET, PATCH, DELETE /api/v1/users/{name}            one, set role, remove
    PUT                /api/v1/users/{name}/password   set the password
    GET, POST          /api/v1/users/{name}/tokens     list, create (the token is in the
                                                       answer once, never again)
    DELETE             /api/v1/tokens/{id}             revoke
    GET                /api/v1/locks?tenant=           a tenant's WebDAV locks
    DELETE             /api/v1/locks/{token}?tenant=   break one (its owner loses it)

Deleting a tenant removes its users and tokens and deletes its data (data dir and store
prefix), as ``razordav tenant del`` does. With ``--auth none`` there is no registry: these routes are 501.

Threading: none of its own; the registry is safe from many threads.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Literal

import falcon
from pydantic import BaseModel, Field

from ..core import errors
from .api_common import API, Answers, principal_of, problems, spec
from .metrics import audit

ADMIN_ERRORS = problems(400, 403, 404, 501)


class TenantOut(BaseModel):
    name: str
    quota_bytes: int | None
    max_files: int | None
    created: int


class TenantLimits(BaseModel):
    quota_bytes: int | None = Field(None, ge=0, le=2**63 - 1, description="null: no limit")
    max_files: int | None = Field(None, ge=0, le=2**63 - 1, description="null: no limit")


class TenantIn(TenantLimits):
    name: str


class TenantList(BaseModel):
    tenants: list[TenantOut]


class UserOut(BaseModel):
    name: str
    tenant: str
    role: str
    created: int


class Role(BaseModel):
    role: Literal["reader", "writer", "admin"]


class UserIn(Role):
    name: str
    tenant: str
    password: str = Field(min_length=1)


class UserList(BaseModel):
    users: list[UserOut]


class UserQuery(BaseModel):
    tenant: str | None = None


class Password(BaseModel):
    password: str = Field(min_length=1)


class TokenOut(BaseModel):
    id: str
    user: str
    label: str
    created: int


class TokenIn(BaseModel):
    label: str = ""
    scope: Literal["files", "all"] = Field(
        "files", description="files: WebDAV and the file routes only; all: what the "
                             "user's role allows")


class NewToken(BaseModel):
    id: str
    token: str = Field(description="the whole token, shown this once")


class TokenList(BaseModel):
    tokens: list[TokenOut]


class LockOut(BaseModel):
    token: str
    path: str
    owner: str = Field(description="the <owner> the client sent, as XML text")
    principal: str = Field(description="the user that holds it")
    depth: str
    scope: str
    expires: float = Field(description="seconds since the epoch")


class LockList(BaseModel):
    locks: list[LockOut]


class LockQuery(BaseModel):
    tenant: str = Field(description="whose locks")


class _Admin:
    admin_only = True
    needs_password = False    # app tokens may not do this, whatever their scope

    def on_request(self, req) -> None:
        if self.needs_password and principal_of(req).via == "token":
            raise falcon.HTTPForbidden(description="passwords and tokens are managed with "
                                                   "a password, not an app token")

    def __init__(self, service):
        self.service = service

    @property
    def registry(self):
        if self.service.registry is None:
            raise falcon.HTTPError(501, description="this gateway runs without users "
                                                    "(--auth none): there is no registry")
        return self.service.registry


class Tenants(_Admin):
    @spec.validate(resp=Answers(HTTP_200=TenantList, **ADMIN_ERRORS), tags=["admin"])
    def on_get(self, req, resp):
        """All tenants."""
        resp.media = {"tenants": [asdict(t) for t in self.registry.tenants()]}

    @spec.validate(json=TenantIn, resp=Answers(HTTP_201=TenantOut, **problems(405),
                                                **ADMIN_ERRORS), tags=["admin"])
    def on_post(self, req, resp):
        """Add a tenant (405 if the name exists)."""
        body: TenantIn = req.context.json
        tenant = self.registry.add_tenant(body.name, body.quota_bytes, body.max_files)
        audit(principal_of(req), "tenant.add", tenant.name, quota_bytes=tenant.quota_bytes,
              max_files=tenant.max_files)
        resp.status = 201
        resp.location = f"{API}/tenants/{tenant.name}"
        resp.media = asdict(tenant)


class TenantItem(_Admin):
    @spec.validate(resp=Answers(HTTP_200=TenantOut, **ADMIN_ERRORS), tags=["admin"])
    def on_get(self, req, resp, name):
        """One tenant."""
        resp.media = asdict(self.registry.tenant(name))

    @spec.validate(json=TenantLimits, resp=Answers(HTTP_200=TenantOut, **ADMIN_ERRORS),
                   tags=["admin"])
    def on_patch(self, req, resp, name):
        """Replace the tenant's quota and file limit (null: none), at once."""
        body: TenantLimits = req.context.json
        self.registry.tenant(name)     # 404 (or 501) before anything changes
        tenant = self.service.set_tenant_limits(name, body.quota_bytes, body.max_files)
        audit(principal_of(req), "tenant.limits", name, quota_bytes=tenant.quota_bytes,
              max_files=tenant.max_files)
        resp.media = asdict(tenant)

    @spec.validate(resp=Answers("HTTP_204", **ADMIN_ERRORS), tags=["admin"])
    def on_delete(self, req, resp, name):
        """Remove the tenant, its users and their tokens, and delete its data (data dir
        and stored objects). A tenant made again with this name starts empty."""
        self.registry.tenant(name)     # 404 (or 501) before anything changes
        users, objects = self.service.delete_tenant(name)
        audit(principal_of(req), "tenant.del", name, users=users, objects=objects)
        resp.status = 204


class Users(_Admin):
    @spec.validate(query=UserQuery, resp=Answers(HTTP_200=UserList, **ADMIN_ERRORS),
                   tags=["admin"])
    def on_get(self, req, resp):
        """All users, or those of one tenant."""
        users = self.registry.users(req.context.query.tenant)
        resp.media = {"users": [asdict(u) for u in users]}

    @spec.validate(json=UserIn, resp=Answers(HTTP_201=UserOut, **problems(405),
                                              **ADMIN_ERRORS), tags=["admin"])
    def on_post(self, req, resp):
        """Add a user to an existing tenant (405 if the name exists)."""
        body: UserIn = req.context.json
        user = self.registry.add_user(body.name, body.tenant, body.role, body.password)
        audit(principal_of(req), "user.add", user.name, tenant=user.tenant, role=user.role)
        resp.status = 201
        resp.location = f"{API}/users/{user.name}"
        resp.media = asdict(user)


class UserItem(_Admin):
    @spec.validate(resp=Answers(HTTP_200=UserOut, **ADMIN_ERRORS), tags=["admin"])
    def on_get(self, req, resp, name):
        """One user."""
        resp.media = asdict(self.registry.user(name))

    @spec.validate(json=Role, resp=Answers(HTTP_200=UserOut, **ADMIN_ERRORS), tags=["admin"])
    def on_patch(self, req, resp, name):
        """Change the user's role."""
        user = self.registry.set_role(name, req.context.json.role)
        audit(principal_of(req), "user.role", name, role=user.role)
        resp.media = asdict(user)

    @spec.validate(resp=Answers("HTTP_204", **ADMIN_ERRORS), tags=["admin"])
    def on_delete(self, req, resp, name):
        """Remove the user and its tokens."""
        self.registry.del_user(name)
        audit(principal_of(req), "user.del", name)
        resp.status = 204


class UserPassword(_Admin):
    needs_password = True

    @spec.validate(json=Password, resp=Answers("HTTP_204", **ADMIN_ERRORS), tags=["admin"])
    def on_put(self, req, resp, name):
        """Set the user's password (its app tokens stay valid)."""
        self.on_request(req)
        self.registry.set_password(name, req.context.json.password)
        audit(principal_of(req), "user.passwd", name)
        resp.status = 204


class UserTokens(_Admin):
    needs_password = True

    @spec.validate(resp=Answers(HTTP_200=TokenList, **ADMIN_ERRORS), tags=["admin"])
    def on_get(self, req, resp, name):
        """The user's app tokens (ids and labels; secrets are never shown again)."""
        resp.media = {"tokens": [asdict(t) for t in self.registry.tokens(name)]}

    @spec.validate(json=TokenIn, resp=Answers(HTTP_201=NewToken, **ADMIN_ERRORS),
                   tags=["admin"])
    def on_post(self, req, resp, name):
        """Create an app token, usable as the user's Basic password."""
        self.on_request(req)
        token_id, token = self.registry.create_token(name, req.context.json.label,
                                                     req.context.json.scope)
        audit(principal_of(req), "token.create", name, token_id=token_id,
              label=req.context.json.label)
        resp.status = 201
        resp.media = {"id": token_id, "token": token}


class TokenItem(_Admin):
    needs_password = True

    @spec.validate(resp=Answers("HTTP_204", **ADMIN_ERRORS), tags=["admin"])
    def on_delete(self, req, resp, token_id):
        """Revoke an app token."""
        self.on_request(req)
        self.registry.revoke_token(token_id)
        audit(principal_of(req), "token.revoke", token_id)
        resp.status = 204


def _storage(service, tenant: str):
    try:
        return service.lock_manager(tenant).storage
    except errors.NotFound:
        raise falcon.HTTPNotFound(description=f"no tenant {tenant!r}") from None


def _lock_out(lock: dict) -> dict:
    owner = lock.get("owner") or b""
    return {"token": lock["token"], "path": lock["root"],
            "owner": owner.decode("utf-8", "replace") if isinstance(owner, bytes) else owner,
            "principal": lock.get("principal") or "", "depth": lock.get("depth", "0"),
            "scope": lock.get("scope", ""), "expires": lock.get("expire", -1)}


class Locks(_Admin):
    @spec.validate(query=LockQuery, resp=Answers(HTTP_200=LockList, **ADMIN_ERRORS),
                   tags=["admin"])
    def on_get(self, req, resp):
        """The tenant's live WebDAV locks."""
        locks = _storage(self.service, req.context.query.tenant).all_locks()
        resp.media = {"locks": [_lock_out(lock) for lock in locks]}


class LockItem(_Admin):
    @spec.validate(query=LockQuery, resp=Answers("HTTP_204", **ADMIN_ERRORS), tags=["admin"])
    def on_delete(self, req, resp, token):
        """Break a lock: it is gone at once, whoever holds it."""
        tenant = req.context.query.tenant
        storage = _storage(self.service, tenant)
        if storage.get(token) is None:
            raise falcon.HTTPNotFound(description=f"no lock {token!r} in tenant {tenant!r}")
        storage.delete(token)
        audit(principal_of(req), "lock.break", token, tenant=tenant)
        resp.status = 204


def add_routes(app, service) -> None:
    app.add_route(f"{API}/locks", Locks(service))
    app.add_route(f"{API}/locks/{{token}}", LockItem(service))
    app.add_route(f"{API}/tenants", Tenants(service))
    app.add_route(f"{API}/tenants/{{name}}", TenantItem(service))
    app.add_route(f"{API}/users", Users(service))
    app.add_route(f"{API}/users/{{name}}", UserItem(service))
    app.add_route(f"{API}/users/{{name}}/password", UserPassword(service))
    app.add_route(f"{API}/users/{{name}}/tokens", UserTokens(service))
    app.add_route(f"{API}/tokens/{{token_id}}", TokenItem(service))
