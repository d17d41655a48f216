"""ObjectStore conformance for the local store, S3 (moto, in process) and wrappers;
plus open_store URL handling and the retry wrapper's behaviour."""

import pytest

from razordav.store import ConfigError, ObjectStore, RetryingStore, Unavailable, open_store
from razordav.store.local import LocalStore

from .store_contract import CONTRACT


@pytest.mark.parametrize("check", CONTRACT, ids=lambda f: f.__name__[6:])
def test_contract(store, check):
    check(store)


def test_open_store_rejects_bad_urls(tmp_path):
    with pytest.raises(ConfigError, match="unknown store URL"):
        open_store("ftp://x/y")
    with pytest.raises(ConfigError, match="file:///"):
        open_store("file://host/path")
    with pytest.raises(ConfigError, match="needs a bucket"):
        open_store("s3:///prefix")
    assert isinstance(open_store((tmp_path / "s").as_uri()), RetryingStore)


def test_local_store_refuses_escaping_keys(tmp_path):
    s = LocalStore(tmp_path / "o")
    for key in ("../x", "/abs", "a/../../b", ""):
        with pytest.raises(ValueError):
            s.put(key, b"x")


def test_local_put_leaves_no_temp_files(tmp_path):
    s = LocalStore(tmp_path / "o")
    s.put("a/b", b"x" * 100)
    assert [p.name for p in (tmp_path / "o" / "a").iterdir()] == ["b"]


def test_missing_bucket_is_a_clear_error(monkeypatch):
    from moto import mock_aws
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    with mock_aws():
        with pytest.raises(ConfigError, match="bucket 'nosuch' does not exist"):
            open_store("s3://nosuch/p")


class Flaky(ObjectStore):
    """Fails the first ``failures`` calls with a transient error."""

    def __init__(self, failures, exc=ConnectionError("reset")):
        self.failures, self.calls, self.exc = failures, 0, exc

    def _maybe_fail(self):
        self.calls += 1
        if self.calls <= self.failures:
            raise self.exc

    def put(self, key, data, **kw):
        self._maybe_fail()
        return "etag"

    def get(self, key, offset=0, length=None):
        self._maybe_fail()
        return b"data"

    def head(self, key):
        self._maybe_fail()

    def delete_many(self, keys):
        self._maybe_fail()

    def list(self, prefix=""):
        self._maybe_fail()
        return iter([])

    def copy(self, src, dst, storage_class=None):
        self._maybe_fail()


def test_retry_recovers_from_transient_errors():
    inner = Flaky(3)
    s = RetryingStore(inner, attempts=5, base_delay=0.001)
    assert s.get("k") == b"data"
    assert inner.calls == 4


def test_retry_gives_up_with_unavailable():
    inner = Flaky(100)
    s = RetryingStore(inner, attempts=3, base_delay=0.001)
    with pytest.raises(Unavailable, match="failed 3 times"):
        s.put("k", b"x")
    assert inner.calls == 3


def test_retry_does_not_retry_permanent_errors():
    inner = Flaky(5, exc=PermissionError("denied"))
    s = RetryingStore(inner, attempts=5, base_delay=0.001)
    with pytest.raises(PermissionError):
        s.get("k")
    assert inner.calls == 1


def test_retry_respects_deadline():
    import time
    inner = Flaky(100)
    s = RetryingStore(inner, attempts=100, base_delay=0.05, max_delay=0.1, deadline=0.3)
    t = time.monotonic()
    with pytest.raises(Unavailable):
        s.get("k")
    assert time.monotonic() - t < 1.0


def test_guarded_store_asks_before_every_write_attempt(tmp_path):
    asked = []

    def guard(op):
        asked.append(op)
        if op == "delete":
            raise PermissionError("no deletes now")
    store = RetryingStore(LocalStore(tmp_path / "o"), base_delay=0.001).guarded(guard)
    store.put("a", b"1")
    store.copy("a", "b")
    assert store.get("b") == b"1" and store.exists("a")
    with pytest.raises(PermissionError):
        store.delete("a")
    assert store.get("a") == b"1"                    # nothing was sent
    assert asked == ["put", "put", "delete"]          # reads are not asked


def test_s3_writes_are_bounded_and_aborted_requests_store_nothing(moto_server):
    """limit_write_time: abortive closes and an unacknowledged-data timeout on every socket,
    and a body not sent by its deadline aborts the request: the server stores nothing."""
    import socket
    import struct
    from razordav.store.s3 import S3Store
    bucket = moto_server.make_bucket("bounded")
    s3 = S3Store(bucket, "p", endpoint=moto_server.endpoint)
    s3.limit_write_time(5)
    options = s3.write_socket_options()
    assert (socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)) in options
    assert (socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, 1000) in options
    s3.put("ok", b"x" * 100_000)
    assert s3.get("ok") == b"x" * 100_000
    s3._send_limit = -1.0                            # the deadline has passed already
    with pytest.raises(Exception):
        s3.put("late", b"y" * 100_000)
    s3._send_limit = 5.0
    assert not s3.exists("late")
    s3.close()


def test_local_delete_prefix_removes_the_emptied_directories(tmp_path):
    store = LocalStore(tmp_path / "objects")
    store.put("tenants/a/blocks/00/k", b"x")
    store.put("tenants/b/k", b"x")
    store.delete_prefix("tenants/a/")
    assert not (tmp_path / "objects" / "tenants" / "a").exists()
    assert (tmp_path / "objects" / "tenants" / "b" / "k").exists()
    store.delete_prefix("")
    assert (tmp_path / "objects").is_dir() and not any((tmp_path / "objects").iterdir())


def test_guarded_delete_prefix_asks_before_each_batch(tmp_path):
    from razordav.store import GuardedStore
    asked = []
    store = GuardedStore(LocalStore(tmp_path / "objects"), asked.append)
    for i in range(5):
        store.put(f"p/{i}", b"x")
    asked.clear()
    assert store.delete_prefix("p/", batch=2) == 5
    assert asked == ["delete"] * 3
