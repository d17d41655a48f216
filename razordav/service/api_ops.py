"""The REST API's operator routes: figures, background jobs, liveness and readiness.

    GET  /api/v1/stats       ``Volume.figures()`` and the quota of the caller's tenant; an
                             admin gets every open volume's
    POST /api/v1/jobs        start fsck or GC on the caller's tenant's volume, in a thread
    GET  /api/v1/jobs        the jobs the caller may see; GET /api/v1/jobs/{id}: one
    GET  /healthz            200 while the process answers (no authentication)
    GET  /readyz             200 when every open volume's store answers and its metadata
                             takes a write transaction, else 503 (no authentication)

Jobs live in memory: a restart forgets them (the work itself is safe to repeat). fsck here
repairs only the counters (one recounting transaction, safe while serving); its other
repairs delete objects the metadata does not know, which on a live volume include blocks
of uploads in flight, so they stay with ``razordav fsck --repair`` on a stopped gateway.
One job of a kind runs per tenant at a time (409 otherwise).

Threading: ``Jobs._lock`` guards ``Jobs._jobs`` and each job's fields; it is a leaf lock,
never held around volume calls. Each job runs in its own daemon thread.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import replace
import time
import uuid
from collections import OrderedDict
from typing import Any, Literal

import falcon
from pydantic import BaseModel, Field

from ..core import errors
from .api_common import API, Answers, principal_of, problems, spec, tenant_volume

log = logging.getLogger("razordav.api")

KEEP_JOBS = 100


class Stats(BaseModel):
    volumes: dict[str, dict[str, Any]] = Field(
        description="tenant ('' for the one namespace without tenants) -> its figures")


class JobIn(BaseModel):
    kind: Literal["fsck", "gc"]
    full: bool = Field(False, description="fsck: download and verify every block")
    tenant: str | None = Field(None, description="admins: another tenant's volume")


class Job(BaseModel):
    id: str
    kind: str
    tenant: str
    user: str
    state: Literal["running", "done", "failed"]
    progress: float = Field(description="0 to 1")
    stage: str = ""
    started: float
    finished: float | None = None
    result: dict[str, Any] | None = None
    error: str | None = None


class JobList(BaseModel):
    jobs: list[Job]


class Health(BaseModel):
    status: str


class _Progress:
    """The tqdm-like bar fsck reports to; it moves the job's progress."""

    def __init__(self, jobs: "Jobs", job_id: str, total: int, desc: str):
        self.jobs, self.job_id, self.total, self.done = jobs, job_id, max(total, 1), 0
        jobs.update(job_id, stage=desc)

    def update(self, n: int = 1) -> None:
        self.done += n
        self.jobs.update(self.job_id, progress=min(1.0, self.done / self.total))

    def close(self) -> None:
        pass


class Jobs:
    """Background fsck and GC runs, the last ``KEEP_JOBS`` of them kept for GET."""

    def __init__(self):
        self._lock = threading.Lock()
        self._jobs: OrderedDict[str, dict] = OrderedDict()

    def start(self, kind: str, tenant: str, user: str, vol, full: bool = False) -> dict:
        with self._lock:
            if any(j["kind"] == kind and j["tenant"] == tenant and j["state"] == "running"
                   for j in self._jobs.values()):
                raise errors.Conflict(f"a {kind} job runs on this volume already")
            job = {"id": uuid.uuid4().hex, "kind": kind, "tenant": tenant, "user": user,
                   "state": "running", "progress": 0.0, "stage": "", "started": time.time(),
                   "finished": None, "result": None, "error": None}
            self._jobs[job["id"]] = job
            self._trim()
            snapshot = dict(job)
        threading.Thread(target=self._run, args=(job["id"], kind, vol, full), daemon=True,
                         name=f"rzd-job-{kind}").start()
        return snapshot

    def _trim(self) -> None:
        done = [k for k, j in self._jobs.items() if j["state"] != "running"]
        for key in done[:max(0, len(self._jobs) - KEEP_JOBS)]:
            del self._jobs[key]

    def _run(self, job_id: str, kind: str, vol, full: bool) -> None:
        try:
            if kind == "gc":
                self.update(job_id, stage="collecting")
                result = {"blocks_deleted": vol.collect_garbage()}
            else:
                report = vol.fsck(full=full, repair=False, counters=True,
                                  progress=lambda total, desc: _Progress(self, job_id, total, desc))
                result = {"clean": report.clean, "problems": report.problems,
                          "repaired": report.repaired, "checked_blocks": report.checked_blocks}
        except Exception as exc:  # reported in the job; a bug keeps its traceback in the log
            if not isinstance(exc, errors.FsError):
                log.exception("%s job %s failed", kind, job_id)
            self.update(job_id, state="failed", error=f"{type(exc).__name__}: {exc}",
                        finished=time.time())
            return
        self.update(job_id, state="done", progress=1.0, result=result, finished=time.time())

    def update(self, job_id: str, **fields) -> None:
        with self._lock:
            if job_id in self._jobs:
                self._jobs[job_id].update(fields)

    def get(self, job_id: str) -> dict | None:
        with self._lock:
            job = self._jobs.get(job_id)
            return dict(job) if job else None

    def all(self) -> list[dict]:
        with self._lock:
            return [dict(j) for j in self._jobs.values()]


def _visible(principal, job: dict) -> bool:
    return principal.role == "admin" or job["tenant"] == principal.tenant


class StatsRoute:
    def __init__(self, service):
        self.service = service

    @spec.validate(resp=Answers(HTTP_200=Stats, **problems(403)), tags=["operations"])
    def on_get(self, req, resp):
        """Cache, upload queue, blocks, compression, journal and quota figures per volume."""
        principal = principal_of(req)
        if principal.role == "admin":
            volumes = self.service.volumes()
        else:
            volumes = {principal.tenant: tenant_volume(self.service, principal)}
        resp.media = {"volumes": {name: _figures(vol) for name, vol in volumes.items()}}


def _figures(vol) -> dict:
    """``Volume.figures()``, and the quota with what it counts (bytes and files used)."""
    quota = {"max_bytes": vol.max_bytes, "max_files": vol.max_files, **vol.usage()}
    return _plain({**vol.figures(), "quota": quota})


def _plain(value):
    """Figures as JSON values (some are bytes or other objects; those become strings)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


class JobsRoute:
    def __init__(self, service, jobs: Jobs):
        self.service, self.jobs = service, jobs

    @spec.validate(json=JobIn, resp=Answers(HTTP_202=Job, **problems(400, 403, 409)),
                   tags=["operations"])
    def on_post(self, req, resp):
        """Start fsck (a check, no repair) or GC on the caller's tenant's volume (an admin
        may name another tenant)."""
        principal, body = principal_of(req), req.context.json
        tenant = principal.tenant if body.tenant is None else body.tenant
        if tenant != principal.tenant and principal.role != "admin":
            raise falcon.HTTPForbidden(description="only admins start jobs on other tenants")
        vol = tenant_volume(self.service, replace(principal, tenant=tenant))
        job = self.jobs.start(body.kind, tenant, principal.user, vol, body.full)
        resp.status = 202
        resp.location = f"{API}/jobs/{job['id']}"
        resp.media = job

    @spec.validate(resp=Answers(HTTP_200=JobList, **problems(403)), tags=["operations"])
    def on_get(self, req, resp):
        """The jobs of the caller's tenant (an admin's: all)."""
        principal = principal_of(req)
        resp.media = {"jobs": [j for j in self.jobs.all() if _visible(principal, j)]}


class JobItem:
    def __init__(self, jobs: Jobs):
        self.jobs = jobs

    @spec.validate(resp=Answers(HTTP_200=Job, **problems(403, 404)), tags=["operations"])
    def on_get(self, req, resp, job_id):
        """A job's state, progress and, once done, its result."""
        job = self.jobs.get(job_id)
        if job is None or not _visible(principal_of(req), job):
            raise falcon.HTTPNotFound(description=f"no job {job_id!r}")
        resp.media = job


class Healthz:
    public = True

    @spec.validate(resp=Answers(HTTP_200=Health), tags=["operations"], security={})
    def on_get(self, req, resp):
        """Liveness: the process answers."""
        resp.media = {"status": "ok"}


class Readyz:
    public = True

    def __init__(self, service):
        self.service = service

    @spec.validate(resp=Answers(HTTP_200=Health, **problems(503)), tags=["operations"],
                   security={})
    def on_get(self, req, resp):
        """Readiness: every open volume's store answers and its metadata is writable.
        Anyone may ask, so the answer names no tenant and no error (the log has them),
        and nothing here takes a lock a writer would wait for."""
        found = []
        for name, vol in self.service.volumes().items():
            found += [f"{name or 'main'}: {p}" for p in vol.problems()]
        if found:
            log.warning("not ready: %s", "; ".join(found))
            raise falcon.HTTPServiceUnavailable(description="not ready (see the log)")
        resp.media = {"status": "ok"}


def add_routes(app, service) -> None:
    jobs = Jobs()
    app.add_route(f"{API}/stats", StatsRoute(service))
    app.add_route(f"{API}/jobs", JobsRoute(service, jobs))
    app.add_route(f"{API}/jobs/{{job_id}}", JobItem(jobs))
    app.add_route("/healthz", Healthz())
    app.add_route("/readyz", Readyz(service))
