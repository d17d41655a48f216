"""A store wrapper that plays the network between a gateway and its bucket: it records every
request, and can hold chosen requests (a partition: they hang, nothing is refused) or delay
them.

It models what ``ObjectStore.limit_write_time`` promises of a real backend: a request that
cannot complete within the bound is aborted by the client, and an aborted request never
reaches the bucket later (S3Store: a body deadline, ``TCP_USER_TIMEOUT`` and abortive
closes). A held or delayed request therefore either goes through within its bound after it
was sent, or fails with ``TimeoutError`` and changes nothing.
"""

from __future__ import annotations

import threading
import time

from razordav.store.base import ObjectStore

WRITES = ("put", "delete", "copy")


class NetStore(ObjectStore):
    def __init__(self, inner: ObjectStore, name: str = "net"):
        self.inner = inner
        self.url = inner.url
        self.name = name
        self.bound: float | None = None     # set by limit_write_time
        self.log: list[tuple[float, str, str, str]] = []   # (monotonic, op, key, outcome)
        self._log_lock = threading.Lock()
        self._healed = threading.Event()
        self._healed.set()
        self.hold = lambda op, key: True    # which requests a partition holds
        self.delay = lambda op, key: 0.0    # extra seconds before a request is applied

    # -- the network's state --

    def partition(self, hold=None) -> None:
        """From now on, requests that ``hold(op, key)`` selects hang until ``heal``."""
        self.hold = hold or (lambda op, key: True)
        self._healed.clear()

    def heal(self) -> None:
        self._healed.set()

    def applied(self, ops=WRITES, since: float = float("-inf")) -> list[tuple]:
        """Requests that reached the bucket (writes by default) at or after ``since``."""
        with self._log_lock:
            return [r for r in self.log if r[1] in ops and r[3] == "applied" and r[0] >= since]

    # -- requests --

    def _send(self, op: str, key: str, fn):
        sent = time.monotonic()
        bound = self.bound if op in WRITES else None
        delay = self.delay(op, key)
        if not self._healed.is_set() and self.hold(op, key):
            wait = None if bound is None else max(0.0, sent + bound - time.monotonic())
            if not self._healed.wait(wait) or (bound is not None and
                                               time.monotonic() - sent > bound):
                self._record(op, key, "aborted")
                raise TimeoutError(f"{self.name}: {op} {key} aborted after {bound} s")
        if delay:
            if bound is not None and delay > bound:
                time.sleep(bound)
                self._record(op, key, "aborted")
                raise TimeoutError(f"{self.name}: {op} {key} aborted after {bound} s")
            time.sleep(delay)
        try:
            result = fn()
        except Exception:
            self._record(op, key, "failed")
            raise
        self._record(op, key, "applied")
        return result

    def _record(self, op, key, outcome):
        with self._log_lock:
            self.log.append((time.monotonic(), op, key, outcome))

    def put(self, key, data, **kwargs):
        return self._send("put", key, lambda: self.inner.put(key, data, **kwargs))

    def get(self, key, offset=0, length=None):
        return self._send("get", key, lambda: self.inner.get(key, offset, length))

    def head(self, key):
        return self._send("head", key, lambda: self.inner.head(key))

    def delete_many(self, keys):
        keys = list(keys)
        return self._send("delete", ",".join(keys), lambda: self.inner.delete_many(keys))

    def list(self, prefix=""):
        return iter(self._send("list", prefix, lambda: list(self.inner.list(prefix))))

    def copy(self, src, dst, storage_class=None):
        return self._send("copy", dst, lambda: self.inner.copy(src, dst, storage_class))

    def is_transient(self, exc):
        return isinstance(exc, TimeoutError) or self.inner.is_transient(exc)

    def limit_write_time(self, seconds):
        self.bound = seconds
        self.inner.limit_write_time(seconds)

    def remove_leftovers(self, older_than, prefix=""):
        return self.inner.remove_leftovers(older_than, prefix)

    def unwrap(self):
        return self.inner.unwrap()
