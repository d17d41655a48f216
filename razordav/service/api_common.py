"""What the REST API's route modules share: the one ``SpecTree`` their routes are declared
with (it writes the OpenAPI document from those declarations), the problem model and the
one table that turns errors into RFC 9457 ``application/problem+json`` answers, the role
check every route passes, and the limit on JSON bodies.

spectree is used as designed, through one module-level ``SpecTree`` whose decorators the
route classes carry; it writes the document once, from the first app registered with it
(every app ``make_api`` builds has the same routes).

Threading: ``make_api`` runs at start-up; everything here is read-only afterwards.
"""

from __future__ import annotations

import io
import json
import logging
from http import HTTPStatus

import falcon
from pydantic import BaseModel
from spectree import Response, SecurityScheme, SpecTree
from spectree.models import SecuritySchemeData
from spectree.utils import get_model_key

from .. import __version__
from ..core import errors
from . import Principal

log = logging.getLogger("razordav.api")

PROBLEM = "application/problem+json"
API = "/api/v1"
MAX_JSON = 64 << 10


class Problem(BaseModel):
    """An error (RFC 9457). ``code`` names the error class, for clients to switch on."""
    type: str = "about:blank"
    title: str
    status: int
    detail: str = ""
    code: str = ""


def _validation_problem(req, resp, req_validation_error, instance, adapter) -> None:
    """spectree's hook: a request that does not match its model is a 400 problem."""
    if req_validation_error is None:
        return
    detail = "; ".join(f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg')}"
                       for e in req_validation_error.errors())
    _write_problem(resp, 400, detail or "invalid request", "ValidationError")


spec = SpecTree(
    "falcon", mode="strict", path="api/v1", filename="openapi.json", page_templates={},
    openapi_version="3.1.0",
    title="razordav", version=__version__, validation_error_status=400,
    before=_validation_problem, annotations=False,
    description="The REST face of razordav: files, tenants, users, tokens, stats and jobs.",
    security_schemes=[
        SecurityScheme(name="basic", data=SecuritySchemeData(type="http", scheme="basic")),
        SecurityScheme(name="bearer", data=SecuritySchemeData(type="http", scheme="bearer",
                                                              bearer_format="JWT")),
    ],
    security=[{"basic": []}, {"bearer": []}],
)


def problems(*codes: int) -> dict:
    """The response declarations of the errors a route can answer, for spectree."""
    return {f"HTTP_{c}": Problem for c in codes}


class Answers(Response):
    """spectree's ``Response``, with the media types the bodies really have: spectree writes
    application/json for every model, but problems are application/problem+json, and the
    codes in ``raw`` carry bytes of any type (a download)."""

    def __init__(self, *codes, raw: tuple[str, ...] = (), **code_models):
        super().__init__(*codes, **code_models)
        self.raw = raw

    def generate_spec(self, naming_strategy=get_model_key) -> dict:
        spec = super().generate_spec(naming_strategy)
        problem_ref = f"#/components/schemas/{naming_strategy(Problem)}"
        for answer in spec.values():
            content = answer.get("content", {})
            if content.get("application/json", {}).get("schema", {}).get("$ref") == problem_ref:
                content[PROBLEM] = content.pop("application/json")
        for code in self.raw:
            spec[code]["content"] = {"*/*": {"schema": {"type": "string",
                                                         "format": "binary"}}}
        return spec


def _write_problem(resp, status: int, detail: str, code: str = "") -> None:
    body = {"type": "about:blank", "title": _phrase(status), "status": status,
            "detail": detail, "code": code}
    resp.status = status
    resp.content_type = PROBLEM
    resp.data = json.dumps(body).encode()
    resp.media = None


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def serialize_error(req, resp, exc: falcon.HTTPError) -> None:
    """Falcon's error serializer: every HTTPError leaves as a problem document."""
    detail = exc.description or ""
    code = getattr(exc, "code", None) or type(exc).__name__
    _write_problem(resp, exc.status_code, detail, code)
    for name, value in (exc.headers or {}).items():
        resp.set_header(name, value)


def fs_error(req, resp, exc: errors.FsError, params) -> None:
    """The one table from core errors to HTTP: the status each class carries."""
    if exc.http_status >= 500 and not isinstance(exc, (errors.NoSpace, errors.Unavailable)):
        log.error("%s %s: %s: %s", req.method, req.path, type(exc).__name__, exc)
    raise falcon.HTTPError(exc.http_status, description=str(exc), code=type(exc).__name__)


def principal_of(req) -> Principal:
    return req.context.principal


def tenant_volume(service, principal: Principal):
    """The caller's tenant's volume; 503 when it cannot be opened (a tenant deleted
    meanwhile, its store unreachable), as the gate answers on WebDAV."""
    try:
        return service.volume_for(principal)
    except Exception as exc:
        log.warning("tenant %s cannot be opened: %s", principal.tenant, exc)
        raise falcon.HTTPServiceUnavailable(
            description=f"tenant {principal.tenant} is not available") from None


class RoleCheck:
    """Falcon middleware: every route but the public ones (``public = True`` on the
    resource) needs a principal; a reader may only read, and a resource marked
    ``admin_only`` answers admins alone. The gate checks roles too; this does not rely on it."""

    def __init__(self, service):
        self.service = service

    def process_resource(self, req, resp, resource, params) -> None:
        if resource is None or getattr(resource, "public", False):
            return
        principal = self.service.principal(req.env)
        if principal is None:
            raise falcon.HTTPUnauthorized(description="authentication required")
        req.context.principal = principal
        if getattr(resource, "admin_only", False) and principal.role != "admin":
            raise falcon.HTTPForbidden(description="this route is for admins only")
        if not principal.may(req.method):
            raise falcon.HTTPForbidden(
                description=f"role {principal.role} may not {req.method} here")


class JsonOnly:
    """Falcon middleware: a request that changes state carries a JSON body
    (``Content-Type: application/json``) or none; uploads (paths under ``stream_prefix``)
    carry bytes of any type. A form a page of another site can post without asking
    (urlencoded, multipart, text/plain) is a 415."""

    def __init__(self, stream_prefix: str):
        self.stream_prefix = stream_prefix

    def process_request(self, req, resp) -> None:
        if req.method in ("GET", "HEAD", "OPTIONS") or \
                (req.method == "PUT" and req.path.startswith(self.stream_prefix)):
            return
        media = (req.content_type or "").split(";", 1)[0].strip().lower()
        has_body = (req.content_length or 0) > 0 or \
            "chunked" in (req.get_header("Transfer-Encoding") or "").lower()
        if media == "application/json" or (not media and not has_body):
            return
        raise falcon.HTTPUnsupportedMediaType(
            description="a request that changes something here takes application/json")


class BodyLimit:
    """Falcon middleware: a JSON body is read whole, so it may be at most ``MAX_JSON``
    bytes (413 otherwise). A chunked one is read here, up to the limit (Falcon alone would
    see an empty body without a Content-Length). Uploads (paths under ``stream_prefix``)
    are streamed and not limited here."""

    def __init__(self, stream_prefix: str):
        self.stream_prefix = stream_prefix

    def process_request(self, req, resp) -> None:
        if req.method not in ("POST", "PUT", "PATCH") or req.path.startswith(self.stream_prefix):
            return
        if "chunked" in (req.get_header("Transfer-Encoding") or "").lower():
            body = req.stream.read(MAX_JSON + 1)
            if len(body) <= MAX_JSON:
                # Falcon reads a body by its Content-Length: give it one
                req.stream = req.env["wsgi.input"] = io.BytesIO(body)
                req.env["CONTENT_LENGTH"] = str(len(body))
                return
        elif (req.content_length or 0) <= MAX_JSON:
            return
        raise falcon.HTTPContentTooLarge(description=f"a request body here may be at most "
                                                     f"{MAX_JSON} bytes")
