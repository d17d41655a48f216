"""Metrics, access log and audit log: a real WebDAV app over a real volume, served by cheroot
on loopback, wrapped in the metrics middleware; the scrape is parsed with prometheus_client's
own parser."""

import json
import logging
import os
import threading
import time

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from razordav.core.volume import Volume
from razordav.dav.app import close_app, make_app
from razordav.web.server import Server
from razordav.service import PRINCIPAL_KEY, Principal
from razordav.service.metrics import Metrics, access_line, audit
from razordav.store import RetryingStore, StoreWrapper, open_store

ALICE = Principal("alice", "acme", "writer")
TEXT = b"the quick brown fox jumps over the lazy dog\n" * 2000  # ~88 KiB: several blocks


class OneService:
    """The one thing ``Metrics`` asks of the service: its open volumes by tenant."""

    def __init__(self, volumes):
        self._volumes = volumes

    def volumes(self):
        return dict(self._volumes)


def as_principal(app, principal):
    """Stands where the gate stands: puts the caller in the environ, then calls the app."""
    def gate(environ, start_response):
        if principal is not None:
            environ[PRINCIPAL_KEY] = principal
        return app(environ, start_response)
    return gate


class Served:
    """A volume, its WebDAV app inside the metrics middleware, and a cheroot server on an
    ephemeral loopback port, all real."""

    def __init__(self, tmp_path, principal=ALICE, **volume_options):
        self.vol = Volume.open(tmp_path / "data", None, block_size=16 * 1024,
                               journal_interval=0, **volume_options)
        tenant = principal.tenant if principal else ""
        self.metrics = Metrics(OneService({tenant: self.vol}))
        self.dav = make_app(self.vol)
        app = self.metrics.middleware(as_principal(self.dav, principal))
        self.server = Server(app, host="127.0.0.1", port=0, threads=4, timeout=10)
        self.thread = threading.Thread(target=self.server.httpd.serve, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.port}"
        self.http = requests.Session()

    def scrape(self, requests_done: int = 0) -> dict:
        """``{(sample name, sorted label pairs): value}`` from the metrics app, once at least
        ``requests_done`` requests are counted: a request is counted when the server closes
        its body, which may come just after the client has read the response."""
        deadline = time.monotonic() + 5
        while True:
            status, headers, body = call_wsgi(self.metrics.app, "GET")
            assert status.startswith("200") and "text/plain" in dict(headers)["Content-Type"]
            samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
                       for fam in text_string_to_metric_families(body.decode())
                       for s in fam.samples}
            done = sum(v for (name, _), v in samples.items()
                       if name == "razordav_http_requests_total")
            if done >= requests_done or time.monotonic() > deadline:
                return samples
            time.sleep(0.01)

    def close(self):
        self.vol.cache.pause_uploads(False)  # else closing waits for the journal's blocks
        self.http.close()
        self.server.stop()
        self.thread.join(10)
        close_app(self.dav)
        self.vol.close()


@pytest.fixture
def served(tmp_path):
    s = Served(tmp_path, upload_paused=True)
    yield s
    s.close()


def call_wsgi(app, method, path="/metrics"):
    seen = {}

    def start_response(status, headers, exc_info=None):
        seen.update(status=status, headers=headers)
    body = b"".join(app({"REQUEST_METHOD": method, "PATH_INFO": path}, start_response))
    return seen["status"], seen["headers"], body


def value(samples, name, **labels):
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_requests_counted_by_method_status_and_bytes(served):
    r = served.http.put(f"{served.url}/a.txt", data=TEXT)
    assert r.status_code == 201
    assert served.http.get(f"{served.url}/a.txt").content == TEXT
    assert served.http.get(f"{served.url}/missing").status_code == 404
    assert served.http.request("PROPFIND", f"{served.url}/",
                               headers={"Depth": "1"}).status_code == 207
    assert served.http.delete(f"{served.url}/a.txt").status_code == 204
    m = served.scrape(requests_done=5)
    count = "razordav_http_requests_total"
    assert value(m, count, tenant="acme", method="PUT", status="201") == 1
    assert value(m, count, tenant="acme", method="GET", status="200") == 1
    assert value(m, count, tenant="acme", method="GET", status="404") == 1
    assert value(m, count, tenant="acme", method="PROPFIND", status="207") == 1
    assert value(m, count, tenant="acme", method="DELETE", status="204") == 1
    assert value(m, "razordav_http_request_bytes_total", tenant="acme", method="PUT") \
        == len(TEXT)
    assert value(m, "razordav_http_response_bytes_total", tenant="acme", method="GET") \
        >= len(TEXT)
    assert value(m, "razordav_http_request_duration_seconds_count", tenant="acme",
                 method="GET") == 2
    assert value(m, "razordav_http_request_duration_seconds_bucket", tenant="acme",
                 method="GET", le="+Inf") == 2
    assert value(m, "razordav_http_request_duration_seconds_sum", tenant="acme",
                 method="PUT") > 0


def test_chunked_upload_counted_as_it_streams(served):
    def body():
        for _ in range(10):
            yield b"y" * 10_000
    assert served.http.put(f"{served.url}/c.bin", data=body()).status_code == 201
    assert served.http.get(f"{served.url}/c.bin").content == b"y" * 100_000
    m = served.scrape(requests_done=2)
    assert value(m, "razordav_http_request_bytes_total", tenant="acme", method="PUT") \
        == 100_000


def test_made_up_methods_do_not_mint_label_values(served):
    served.http.request("BREW", f"{served.url}/pot")
    m = served.scrape(requests_done=1)
    assert not any(dict(labels).get("method") == "BREW" for _, labels in m)
    assert sum(v for (name, labels), v in m.items()
               if name == "razordav_http_requests_total"
               and dict(labels)["method"] == "other") == 1


def test_volume_figures_at_scrape_time(served):
    served.http.put(f"{served.url}/a.txt", data=TEXT)
    served.http.put(f"{served.url}/b.txt", data=TEXT)  # the same blocks again: dedup
    m = served.scrape(requests_done=2)
    # Uploads are paused: every block of the file waits, and the oldest has waited a while.
    assert value(m, "razordav_upload_queue_blocks", tenant="acme") >= len(TEXT) // (16 * 1024)
    assert value(m, "razordav_cache_dirty_bytes", tenant="acme") > 0
    assert value(m, "razordav_upload_oldest_age_seconds", tenant="acme") > 0
    assert value(m, "razordav_journal_pending_rows", tenant="acme") > 0
    assert value(m, "razordav_logical_bytes", tenant="acme") == 2 * len(TEXT)
    assert value(m, "razordav_dedup_ratio", tenant="acme") == pytest.approx(2.0)
    assert value(m, "razordav_compression_input_bytes_total", tenant="acme", kind="text") \
        >= len(TEXT)
    assert 0 < value(m, "razordav_compression_ratio", tenant="acme", kind="text") < 0.5

    hits = value(m, "razordav_cache_hits_total", tenant="acme")
    assert served.http.get(f"{served.url}/a.txt").content == TEXT
    served.vol.cache.pause_uploads(False)
    assert served.vol.cache.wait_uploaded(timeout=20)
    m = served.scrape(requests_done=3)
    assert value(m, "razordav_cache_hits_total", tenant="acme") > hits
    assert value(m, "razordav_cache_hit_ratio", tenant="acme") > 0
    assert value(m, "razordav_upload_queue_blocks", tenant="acme") == 0
    assert value(m, "razordav_upload_oldest_age_seconds", tenant="acme") == 0
    assert value(m, "razordav_cache_dirty_bytes", tenant="acme") == 0
    assert value(m, "razordav_uploads_total", tenant="acme") > 0
    store = dict(tenant="acme", backend="file")
    assert value(m, "razordav_store_requests_total", operation="put", **store) \
        >= value(m, "razordav_uploads_total", tenant="acme")
    assert value(m, "razordav_store_requests_total", operation="get", **store) > 0
    assert value(m, "razordav_store_errors_total", operation="put", **store) == 0


def test_metrics_app_answers_get_and_head_only(served):
    assert call_wsgi(served.metrics.app, "HEAD")[2] == b""
    status, headers, _ = call_wsgi(served.metrics.app, "POST")
    assert status.startswith("405") and dict(headers)["Allow"] == "GET, HEAD"


def test_metrics_instances_do_not_share_a_registry(served):
    served.http.get(f"{served.url}/")
    other = Metrics(OneService({}))
    status, _, body = call_wsgi(other.app, "GET")
    assert status.startswith("200") and b'method="GET"' not in body


def test_access_log_line_per_request(served, caplog):
    with caplog.at_level(logging.INFO, logger="razordav.access"):
        served.http.put(f"{served.url}/a b.txt", data=b"x" * 1234,
                        headers={"User-Agent": 'evil" \\agent'})
        served.http.get(f"{served.url}/a%20b.txt")
        served.scrape(requests_done=2)
    lines = [r.getMessage() for r in caplog.records if r.name == "razordav.access"]
    assert len(lines) == 2
    put, get = lines
    assert put.startswith('127.0.0.1 - alice [acme] "PUT /a%20b.txt HTTP/1.1" 201 ')
    status, out, inn, ms = put.split('" ', 1)[1].split()[:4]
    assert (status, inn) == ("201", "1234") and ms.endswith("ms") and int(ms[:-2]) >= 0
    assert put.endswith('"evil? ?agent"')
    assert get.startswith('127.0.0.1 - alice [acme] "GET /a%20b.txt HTTP/1.1" 200 1234 0 ')


def test_anonymous_requests_have_no_tenant(tmp_path, caplog):
    s = Served(tmp_path, principal=None)
    try:
        with caplog.at_level(logging.INFO, logger="razordav.access"):
            s.http.get(f"{s.url}/")
            m = s.scrape(requests_done=1)
        assert value(m, "razordav_http_requests_total", tenant="", method="GET",
                     status="200") == 1
        assert value(m, "razordav_cache_bytes", tenant="") >= 0
        line = [r.getMessage() for r in caplog.records if r.name == "razordav.access"][0]
        assert line.startswith('127.0.0.1 - - [-] "GET / HTTP/1.1" 200 ')
    finally:
        s.close()


def test_access_line_escapes_what_could_forge_a_line():
    environ = {"REQUEST_METHOD": "GET", "PATH_INFO": '/x" 200 0\n1.2.3.4 - root [x] "GET /',
               "QUERY_STRING": "a=1 2", "SERVER_PROTOCOL": "HTTP/1.1",
               "REMOTE_ADDR": "10.0.0.1", PRINCIPAL_KEY: ALICE}
    line = access_line(environ, "200", 0, 5, 0.0123)
    assert line == ('10.0.0.1 - alice [acme] "GET /x%22%20200%200%0A1.2.3.4%20-%20root%20'
                    '%5Bx%5D%20%22GET%20/?a=1%202 HTTP/1.1" 200 5 0 12ms "-"')


def test_failed_app_still_counted_as_500(tmp_path):
    metrics = Metrics(OneService({}))

    def broken(environ, start_response):
        raise RuntimeError("boom")
    with pytest.raises(RuntimeError):
        call_wsgi(metrics.middleware(broken), "GET", "/x")
    _, _, body = call_wsgi(metrics.app, "GET")
    assert b'razordav_http_requests_total{method="GET",status="500",tenant=""} 1.0' in body


class Flaky(StoreWrapper):
    """A real local store behind a link that drops the first ``failures`` calls."""

    def __init__(self, inner, failures):
        super().__init__(inner)
        self.failures = failures

    def _link(self):
        if self.failures > 0:
            self.failures -= 1
            raise ConnectionError("connection reset")

    def put(self, key, data, **kw):
        self._link()
        return self.inner.put(key, data, **kw)

    def get(self, key, offset=0, length=None):
        self._link()
        return self.inner.get(key, offset, length)


def test_store_counts_calls_retries_and_failures(tmp_path):
    local = open_store((tmp_path / "s").as_uri(), retry=False)
    store = RetryingStore(Flaky(local, failures=2), base_delay=0.001)
    store.put("k", b"v")                       # two failures, then success: three calls
    assert store.get("k") == b"v"
    with pytest.raises(Exception):
        store.head("missing")                  # NotFound is an answer, not a failure
    assert store.request_counts() == {"put": (3, 2), "get": (1, 0), "head": (1, 0)}


def test_audit_line_is_json(caplog):
    with caplog.at_level(logging.INFO, logger="razordav.audit"):
        before = time.time()
        audit(Principal("root", "ops", "admin"), "user.add", "bob", tenant="acme",
              role="writer")
    [record] = [r for r in caplog.records if r.name == "razordav.audit"]
    line = json.loads(record.getMessage())
    assert line.pop("time") >= before - 1
    assert line == {"user": "root", "tenant": "ops", "action": "user.add", "target": "bob",
                    "details": {"tenant": "acme", "role": "writer"}}
    assert "\n" not in record.getMessage() and os.linesep not in record.getMessage()
