"""What the service tells its operator: Prometheus metrics, the access log and the audit log.

Owns:
- ``Metrics.middleware(app)``: counts every HTTP request (method, status, latency, bytes in
  and out, by tenant) and writes one access-log line per request to ``razordav.access``.
- ``Metrics.app``: the WSGI app that serves the Prometheus text format. It does no auth:
  the gate (``gate.py``) routes ``/metrics`` to it only for an admin or the metrics token.
- ``VolumeCollector``: reads each open volume's figures at scrape time (cache, uploads,
  store requests, compression, dedup, journal), so nothing in core pushes metrics.
- ``audit(principal, action, target, **details)``: one JSON line per admin action to
  ``razordav.audit``.

Leaves to others: who the caller is (the gate puts a ``Principal`` in the environ before
the inner app runs; the middleware reads it when the request ends), and where log lines go
(the CLI's logging set-up).

Threading: prometheus_client metrics are thread-safe; the middleware keeps per-request
state in per-request objects only; the collector calls ``Volume.figures()``, which takes
the volume's own locks. Each ``Metrics`` has its own ``CollectorRegistry``, so several can
live in one process (tests) without clashing in the global one.
"""

from __future__ import annotations

import json
import logging
import os
import time
from typing import Callable, Iterable
from urllib.parse import quote, urlsplit

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram
from prometheus_client import generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from . import PRINCIPAL_KEY, Principal

log = logging.getLogger(__name__)
access_log = logging.getLogger("razordav.access")
audit_log = logging.getLogger("razordav.audit")

# Methods outside this set are counted as "other": a client MUST NOT be able to mint
# label values (and so unbounded time series) by sending made-up methods.
KNOWN_METHODS = frozenset({
    "GET", "HEAD", "PUT", "POST", "DELETE", "OPTIONS", "PATCH", "PROPFIND", "PROPPATCH",
    "MKCOL", "COPY", "MOVE", "LOCK", "UNLOCK"})

# Seconds; from a cached small GET up to a large upload over a slow link.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)

# Characters kept as they are in a logged path; everything else (spaces, quotes, control
# characters, non-ASCII) is percent-encoded, so a crafted name cannot forge a log line.
_PATH_SAFE = "/!$&'()*+,;=:@-._~"


class Metrics:
    """The request metrics of one service, and the volumes' figures at scrape time.

    ``service`` MUST offer ``volumes() -> dict[str, Volume]`` (tenant name -> open volume;
    ``""`` for the one anonymous namespace). Volumes may come and go between scrapes.
    """

    def __init__(self, service):
        self.registry = CollectorRegistry(auto_describe=True)
        labels = ("tenant", "method")
        self.requests = Counter("razordav_http_requests", "HTTP requests by method and status",
                                labels + ("status",), registry=self.registry)
        self.latency = Histogram("razordav_http_request_duration_seconds",
                                 "Time from the request's arrival to the end of its response "
                                 "body", labels, buckets=LATENCY_BUCKETS, registry=self.registry)
        self.bytes_in = Counter("razordav_http_request_bytes", "Request body bytes read",
                                labels, registry=self.registry)
        self.bytes_out = Counter("razordav_http_response_bytes", "Response body bytes sent",
                                 labels, registry=self.registry)
        self.registry.register(VolumeCollector(service))

    def middleware(self, app: Callable) -> Callable:
        """Wrap a WSGI app so each request is counted and access-logged when its body ends."""
        def counted(environ, start_response):
            return _Exchange(self, environ).run(app, start_response)
        return counted

    def app(self, environ, start_response) -> Iterable[bytes]:
        """Serve the metrics in Prometheus text format to GET or HEAD, whatever the path."""
        method = environ.get("REQUEST_METHOD", "GET")
        if method not in ("GET", "HEAD"):
            start_response("405 Method Not Allowed", [("Allow", "GET, HEAD"),
                                                      ("Content-Length", "0")])
            return [b""]
        body = generate_latest(self.registry)
        start_response("200 OK", [("Content-Type", CONTENT_TYPE_LATEST),
                                  ("Content-Length", str(len(body))),
                                  ("Cache-Control", "no-store")])
        return [b"" if method == "HEAD" else body]

    def record(self, environ: dict, status: str, bytes_in: int, bytes_out: int,
               seconds: float) -> None:
        """Count one finished request and write its access-log line."""
        principal = environ.get(PRINCIPAL_KEY)
        tenant = principal.tenant if isinstance(principal, Principal) else ""
        method = environ.get("REQUEST_METHOD", "")
        label = method if method in KNOWN_METHODS else "other"
        code = status.split(" ", 1)[0] or "000"
        self.requests.labels(tenant, label, code).inc()
        self.latency.labels(tenant, label).observe(seconds)
        self.bytes_in.labels(tenant, label).inc(bytes_in)
        self.bytes_out.labels(tenant, label).inc(bytes_out)
        access_log.info(access_line(environ, code, bytes_in, bytes_out, seconds))


def access_line(environ: dict, status: str, bytes_in: int, bytes_out: int,
                seconds: float) -> str:
    """The Common Log Format, with the tenant where CLF has the date (the log handler adds
    time) and the request's bytes in and duration after the bytes out:

    ``127.0.0.1 - alice [acme] "PUT /a.txt HTTP/1.1" 201 0 1234 12ms "rclone/v1.66"``
    (host, ident, user, [tenant], request, status, bytes out, bytes in, ms, user agent).
    A missing field is ``-``.
    """
    principal = environ.get(PRINCIPAL_KEY)
    user = getattr(principal, "user", "") or "-"
    tenant = getattr(principal, "tenant", "") or "-"
    path = _logged_path(environ)
    request = f'{_clean(environ.get("REQUEST_METHOD", "-"))} {path} ' \
              f'{_clean(environ.get("SERVER_PROTOCOL", "-"))}'
    agent = _clean(environ.get("HTTP_USER_AGENT", "-"))
    return (f'{environ.get("REMOTE_ADDR") or "-"} - {_clean(user)} [{_clean(tenant)}] '
            f'"{request}" {status} {bytes_out} {bytes_in} {round(seconds * 1000)}ms "{agent}"')


def _logged_path(environ: dict) -> str:
    # PEP 3333 hands the path over decoded, as latin-1 code points for the raw bytes;
    # encoding it again gives the URL form a client sent (a literal '%' shows as %25).
    raw = (environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", "")) or "/"
    path = quote(raw.encode("latin-1", "replace"), safe=_PATH_SAFE)
    query = environ.get("QUERY_STRING", "")
    return path + ("?" + quote(query.encode("latin-1", "replace"), safe=_PATH_SAFE + "%?")
                   if query else "")


def _clean(text: str) -> str:
    """A header value fit for one quoted log field: no quotes, backslashes or controls."""
    return "".join(c if c.isprintable() and c not in '"\\' else "?" for c in str(text))[:256]


class _Exchange:
    """One request on its way through the wrapped app: counts its bytes and times it until
    the server closes the response body (which PEP 3333 says a server MUST do)."""

    def __init__(self, metrics: Metrics, environ: dict):
        self.metrics, self.environ = metrics, environ
        self.start = time.perf_counter()
        self.status = "500 Internal Server Error"  # if the app fails before start_response
        self.bytes_out = 0
        self.done = False
        self.input = environ.get("wsgi.input")
        if self.input is not None:
            self.input = environ["wsgi.input"] = _CountingInput(self.input)

    def run(self, app: Callable, start_response: Callable) -> Iterable[bytes]:
        def counting_start_response(status, headers, exc_info=None):
            self.status = status
            write = start_response(status, headers, exc_info)

            def counting_write(data):
                self.bytes_out += len(data)
                return write(data)
            return counting_write

        try:
            body = app(self.environ, counting_start_response)
        except BaseException:
            self.finish()
            raise
        return _CountingBody(body, self)

    def finish(self) -> None:
        if self.done:
            return
        self.done = True
        bytes_in = self.input.count if self.input is not None else 0
        try:
            self.metrics.record(self.environ, self.status, bytes_in, self.bytes_out,
                                time.perf_counter() - self.start)
        except Exception:  # counting MUST NOT break the response; say why once per request
            log.exception("could not record request metrics")


class _CountingBody:
    """The app's response body, passed through chunk by chunk, counting its bytes."""

    def __init__(self, body: Iterable[bytes], exchange: _Exchange):
        self.body, self.exchange = body, exchange

    def __iter__(self):
        for chunk in self.body:
            self.exchange.bytes_out += len(chunk)
            yield chunk

    def close(self) -> None:
        try:
            close = getattr(self.body, "close", None)
            if close is not None:
                close()
        finally:
            self.exchange.finish()


class _CountingInput:
    """``wsgi.input`` that counts the bytes the app reads; it reads nothing ahead itself."""

    def __init__(self, stream):
        self.stream, self.count = stream, 0

    def _counted(self, data: bytes) -> bytes:
        self.count += len(data)
        return data

    def read(self, *args) -> bytes:
        return self._counted(self.stream.read(*args))

    def readline(self, *args) -> bytes:
        return self._counted(self.stream.readline(*args))

    def readlines(self, *args) -> list[bytes]:
        return [self._counted(line) for line in self.stream.readlines(*args)]

    def __iter__(self):
        for line in self.stream:
            yield self._counted(line)

    def __getattr__(self, name):
        return getattr(self.stream, name)


class VolumeCollector(Collector):
    """Figures of each open volume, read when Prometheus scrapes, labelled by tenant."""

    def __init__(self, service):
        self.service = service

    def describe(self):
        return []  # the families depend on the volumes open at scrape time

    def collect(self):
        families = _Families()
        for tenant, volume in sorted(self.service.volumes().items()):
            try:
                figures = volume.figures()
                counts = _request_counts(volume.store)
            except Exception as exc:  # a volume closing under us must not fail the scrape
                log.warning("no metrics from tenant %r's volume: %s", tenant, exc)
                continue
            families.add_volume(tenant, figures, counts, _backend(volume.store))
        return families.all()


def _request_counts(store) -> dict[str, tuple[int, int]]:
    """The request counts of the first wrapper in the chain that keeps them (the
    ``RetryingStore`` that ``open_store`` puts on every backend); empty if none does."""
    seen = 0
    while store is not None and seen < 16:
        counts = getattr(store, "request_counts", None)
        if counts is not None:
            return counts()
        store, seen = getattr(store, "inner", None), seen + 1
    return {}


def _backend(store) -> str:
    return urlsplit(getattr(store, "url", "") or "").scheme or "unknown"


class _Families:
    """The metric families of one scrape, filled volume by volume."""

    def __init__(self):
        t, tk, tb = ["tenant"], ["tenant", "kind"], ["tenant", "backend", "operation"]
        g, c = GaugeMetricFamily, CounterMetricFamily
        self.f = {
            "hits": c("razordav_cache_hits", "Block reads served by the local cache", labels=t),
            "misses": c("razordav_cache_misses", "Block reads fetched from the store", labels=t),
            "hit_ratio": g("razordav_cache_hit_ratio", "Hits / (hits + misses) since start",
                           labels=t),
            "cache_bytes": g("razordav_cache_bytes", "Bytes of blocks in the local cache",
                             labels=t),
            "cache_limit": g("razordav_cache_limit_bytes", "Cache size limit", labels=t),
            "dirty_bytes": g("razordav_cache_dirty_bytes",
                             "Bytes of blocks written locally, not yet uploaded", labels=t),
            "evictions": c("razordav_cache_evictions", "Blocks evicted from the cache",
                           labels=t),
            "queue": g("razordav_upload_queue_blocks", "Blocks waiting for or in upload",
                       labels=t),
            "age": g("razordav_upload_oldest_age_seconds",
                     "Age of the oldest block waiting for upload (0: none waits)", labels=t),
            "uploads": c("razordav_uploads", "Blocks uploaded", labels=t),
            "upload_errors": c("razordav_upload_errors", "Block uploads that failed", labels=t),
            "store_requests": c("razordav_store_requests", "Calls to the object store",
                                labels=tb),
            "store_errors": c("razordav_store_errors",
                              "Calls to the object store that failed", labels=tb),
            "comp_in": c("razordav_compression_input_bytes",
                         "Raw bytes of the blocks encoded, by data type", labels=tk),
            "comp_out": c("razordav_compression_stored_bytes",
                          "Stored bytes of the blocks encoded, by data type", labels=tk),
            "comp_ratio": g("razordav_compression_ratio",
                            "Stored / raw bytes of the blocks encoded, by data type",
                            labels=tk),
            "logical": g("razordav_logical_bytes", "Sum of the sizes of all files", labels=t),
            "raw": g("razordav_block_raw_bytes", "Raw bytes of the distinct blocks", labels=t),
            "stored": g("razordav_block_stored_bytes", "Stored bytes of the distinct blocks",
                        labels=t),
            "dedup": g("razordav_dedup_ratio",
                       "Logical bytes / raw bytes of distinct blocks (above 1: dedup saves)",
                       labels=t),
            "inodes": g("razordav_inodes", "Files and directories", labels=t),
            "packs": g("razordav_packs", "Packs in the store (objects holding small blocks)",
                       labels=t),
            "pack_bytes": g("razordav_pack_bytes", "Bytes of blocks in packs, live or dead",
                            labels=t),
            "packs_uploaded": c("razordav_packs_uploaded", "Packs uploaded (new blocks)",
                                labels=t),
            "packs_rewritten": c("razordav_packs_rewritten",
                                 "Sparse packs rewritten by the repacker", labels=t),
            "journal": g("razordav_journal_pending_rows",
                         "Metadata changes not yet shipped to the store", labels=t),
            "lease_held": g("razordav_lease_held",
                            "1 while this gateway may write the volume; 0 when its lease "
                            "lapsed (store unreachable) or was lost (another gateway)",
                            labels=t),
            "lease_lost": g("razordav_lease_lost",
                            "1 once another gateway took the volume over", labels=t),
            "lease_term": g("razordav_lease_term", "The lease term this gateway holds",
                            labels=t),
            "lease_valid": g("razordav_lease_valid_seconds",
                             "Seconds left before writes stop unless the lease is renewed",
                             labels=t),
        }

    def _put(self, key: str, labels: list[str], value) -> None:
        if value is not None:
            self.f[key].add_metric(labels, float(value))

    def add_volume(self, tenant: str, fig: dict, counts: dict, backend: str) -> None:
        t = [tenant]
        for key in ("hits", "misses", "evictions", "uploads", "upload_errors",
                    "packs_uploaded", "packs_rewritten"):
            self._put(key, t, fig.get(key, 0))
        for key in ("packs", "pack_bytes"):
            self._put(key, t, fig.get(key))
        for key in ("hit_ratio", "cache_bytes", "cache_limit", "dirty_bytes"):
            self._put(key, t, fig.get({"hit_ratio": "hit_rate"}.get(key, key)))
        self._put("queue", t, fig.get("upload_queue"))
        self._put("age", t, fig.get("upload_oldest_age") or 0.0)
        for op, (requests, errors) in sorted(counts.items()):
            self._put("store_requests", [tenant, backend, op], requests)
            self._put("store_errors", [tenant, backend, op], errors)
        for kind, k in sorted((fig.get("compression") or {}).items()):
            self._put("comp_in", [tenant, kind], k["bytes_in"])
            self._put("comp_out", [tenant, kind], k["bytes_stored"])
            if k["bytes_in"]:
                self._put("comp_ratio", [tenant, kind], k["bytes_stored"] / k["bytes_in"])
        self._put("logical", t, fig.get("logical_bytes"))
        self._put("raw", t, fig.get("block_raw_bytes"))
        self._put("stored", t, fig.get("block_stored_bytes"))
        if fig.get("block_raw_bytes"):
            self._put("dedup", t, fig.get("logical_bytes", 0) / fig["block_raw_bytes"])
        self._put("inodes", t, fig.get("inodes"))
        self._put("journal", t, fig.get("journal_pending"))
        if "lease_state" in fig:
            self._put("lease_held", t, fig["lease_state"] == "held")
            self._put("lease_lost", t, fig["lease_state"] == "lost")
            self._put("lease_term", t, fig.get("lease_term"))
            self._put("lease_valid", t, fig.get("lease_valid_for"))

    def all(self):
        return list(self.f.values())


def log_audit_to(path) -> None:
    """Append audit lines to ``path`` (<data dir>/audit.log) as well as the log; the server
    and the admin commands share the file. Once per path and process."""
    path = os.path.abspath(path)
    if any(getattr(h, "baseFilename", None) == path for h in audit_log.handlers):
        return
    handler = logging.FileHandler(path, encoding="utf-8", delay=True)
    handler.setFormatter(logging.Formatter("%(message)s"))
    audit_log.addHandler(handler)
    audit_log.setLevel(logging.INFO)


def audit(principal: Principal | None, action: str, target: str, **details) -> None:
    """Write one JSON line for an admin action: time (Unix seconds), user, tenant, action,
    target and the details given. Details MUST NOT hold secrets (passwords, tokens): the
    caller passes what happened, not the credentials it used."""
    audit_log.info(audit_line(principal, action, target, **details))


def audit_line(principal: Principal | None, action: str, target: str, **details) -> str:
    record = {"time": round(time.time(), 3),
              "user": getattr(principal, "user", None),
              "tenant": getattr(principal, "tenant", None),
              "action": action, "target": target, "details": details}
    return json.dumps(record, sort_keys=True, default=str)
