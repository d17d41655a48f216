"""The object-store interface every backend implements, its errors, and the retry wrapper.

A store maps keys (``/``-separated strings) to immutable byte strings. It knows nothing of
files, blocks or trees. Backends implement seven methods; conveniences (``exists``,
``delete``) and retries live here, so a backend stays small.

Threading: every backend MUST be safe to call from many threads at once.
"""

from __future__ import annotations

import collections
import logging
import random
import threading
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Iterable, Iterator

log = logging.getLogger(__name__)


class StoreError(Exception):
    """Base of all object-store errors."""


class NotFound(StoreError):
    """The key does not exist."""


class PreconditionFailed(StoreError):
    """A conditional put found the key in a state other than the one asked for."""


class Unavailable(StoreError):
    """The store could not be reached or kept failing; the operation may succeed later."""


class ConfigError(StoreError):
    """The store cannot be used as configured (bad URL, missing bucket, no credentials)."""


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    etag: str
    mtime: float = 0.0
    storage_class: str | None = None


class ObjectStore(ABC):
    """Put, get, head, delete, list and copy immutable objects by key.

    Contracts:
    - ``get`` of a missing key MUST raise ``NotFound``; a range past the end returns the
      bytes that exist (possibly none).
    - ``put`` replaces an existing key atomically: a reader sees the old or the new object.
      With ``if_absent`` it MUST raise ``PreconditionFailed`` when the key exists; with
      ``if_match`` when the key's etag differs (or the key is missing).
    - ``delete_many`` MUST ignore missing keys.
    - ``list`` yields every key under the prefix, in key order.
    """

    url: str = ""

    @abstractmethod
    def put(self, key: str, data: bytes, *, if_absent: bool = False,
            if_match: str | None = None, storage_class: str | None = None) -> str:
        """Store ``data`` under ``key``; return the new etag."""

    @abstractmethod
    def get(self, key: str, offset: int = 0, length: int | None = None) -> bytes:
        """Return the object's bytes, or ``length`` bytes from ``offset``."""

    @abstractmethod
    def head(self, key: str) -> ObjectInfo:
        """Return size and etag of ``key``."""

    @abstractmethod
    def delete_many(self, keys: Iterable[str]) -> None:
        """Delete the keys; missing ones are fine."""

    @abstractmethod
    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Yield the objects whose key starts with ``prefix``."""

    @abstractmethod
    def copy(self, src: str, dst: str, storage_class: str | None = None) -> None:
        """Copy an object within the store (also how a storage class is changed)."""

    def is_transient(self, exc: BaseException) -> bool:
        """Whether ``exc`` may go away when the same call is tried again."""
        return isinstance(exc, (Unavailable, ConnectionError, TimeoutError))

    def close(self) -> None:
        pass

    def limit_write_time(self, seconds: float) -> None:
        """From now on, a put, copy or delete MUST land in the store within ``seconds`` of
        being sent, or never (the request is aborted so that no byte of it arrives later).
        Fencing depends on it (core/lease.py). A backend whose writes are local system calls
        meets it as it is."""

    def remove_leftovers(self, older_than: float, prefix: str = "") -> int:
        """Remove what interrupted puts left behind under ``prefix`` (temporary objects older
        than ``older_than`` seconds); return how many. Most backends leave nothing."""
        return 0

    # -- conveniences built on the seven methods --

    def exists(self, key: str) -> bool:
        try:
            self.head(key)
            return True
        except NotFound:
            return False

    def delete(self, key: str) -> None:
        self.delete_many([key])

    def delete_prefix(self, prefix: str, batch: int = 1000) -> int:
        """Delete every object whose key starts with ``prefix`` (all of them for ""), in
        batches of ``delete_many``; return how many were listed for deletion. Missing
        keys are fine, so a cut-off run can be run again. Objects put under the prefix
        while it runs MAY survive: callers stop writers there first."""
        count, keys = 0, []
        for info in self.list(prefix):
            keys.append(info.key)
            if len(keys) >= batch:
                self.delete_many(keys)
                count, keys = count + len(keys), []
        if keys:
            self.delete_many(keys)
            count += len(keys)
        return count

    def unwrap(self) -> "ObjectStore":
        return self


class StoreWrapper(ObjectStore):
    """A store over another one (``inner``) that passes every call on unchanged; wrappers
    override only what they change."""

    def __init__(self, inner: ObjectStore):
        self.inner = inner
        self.url = inner.url

    def put(self, key, data, **kwargs):
        return self.inner.put(key, data, **kwargs)

    def get(self, key, offset=0, length=None):
        return self.inner.get(key, offset, length)

    def head(self, key):
        return self.inner.head(key)

    def delete_many(self, keys):
        return self.inner.delete_many(keys)

    def list(self, prefix=""):
        return self.inner.list(prefix)

    def copy(self, src, dst, storage_class=None):
        return self.inner.copy(src, dst, storage_class)

    def is_transient(self, exc):
        return self.inner.is_transient(exc)

    def close(self):
        self.inner.close()

    def limit_write_time(self, seconds):
        self.inner.limit_write_time(seconds)

    def remove_leftovers(self, older_than, prefix=""):
        return self.inner.remove_leftovers(older_than, prefix)

    def delete_prefix(self, prefix, batch=1000):
        return self.inner.delete_prefix(prefix, batch)

    def unwrap(self):
        return self.inner.unwrap()


class GuardedStore(StoreWrapper):
    """Asks ``guard(op)`` before every write (``put``, ``copy``, ``delete``) it passes on, at
    the moment it is sent; the guard raises to stop it. Reads pass freely. Below a
    ``RetryingStore`` every retry is asked again.

    The volume puts its lease here (core/lease.py): a gateway that lost its lease, or could
    not renew it in time, sends no write."""

    def __init__(self, inner: ObjectStore, guard):
        super().__init__(inner)
        self.guard = guard

    def put(self, key, data, **kwargs):
        self.guard("put")
        return self.inner.put(key, data, **kwargs)

    def delete_many(self, keys):
        keys = list(keys)
        if keys:
            self.guard("delete")
            self.inner.delete_many(keys)

    def copy(self, src, dst, storage_class=None):
        self.guard("put")
        return self.inner.copy(src, dst, storage_class)

    def remove_leftovers(self, older_than, prefix=""):
        self.guard("delete")
        return self.inner.remove_leftovers(older_than, prefix)

    def delete_prefix(self, prefix, batch=1000):
        # batch by batch through delete_many above, so each batch asks the guard
        return ObjectStore.delete_prefix(self, prefix, batch)


class RetryingStore(StoreWrapper):
    """Retries the transient errors of the wrapped store with capped, jittered backoff.

    After ``attempts`` tries, or ``deadline`` seconds, the last error is raised as
    ``Unavailable``, so callers never hang on a dead store.

    It also counts, per operation (put, get, head, delete, list, copy), the calls it sends to
    the wrapped store, retries included, and those that failed (``request_counts``). A
    ``NotFound`` or ``PreconditionFailed`` is an answer, not a failure. A batch delete or a
    whole listing counts once, whatever number of HTTP requests the backend needs for it.
    """

    def __init__(self, inner: ObjectStore, attempts: int = 5, base_delay: float = 0.1,
                 max_delay: float = 2.0, deadline: float = 10.0):
        super().__init__(inner)
        self.attempts = attempts
        self.base_delay = base_delay
        self.max_delay = max_delay
        self.deadline = deadline
        self._counts_lock = threading.Lock()  # guards _requests and _errors
        self._requests: collections.Counter[str] = collections.Counter()
        self._errors: collections.Counter[str] = collections.Counter()

    def request_counts(self) -> dict[str, tuple[int, int]]:
        """``operation -> (calls sent to the wrapped store, calls that failed)``."""
        with self._counts_lock:
            return {op: (n, self._errors[op]) for op, n in self._requests.items()}

    def _count(self, what: str, exc: BaseException | None) -> None:
        failed = exc is not None and not isinstance(exc, (NotFound, PreconditionFailed))
        with self._counts_lock:
            self._requests[what] += 1
            self._errors[what] += failed

    def _call(self, what: str, fn):
        start = time.monotonic()
        for attempt in range(1, self.attempts + 1):
            try:
                result = fn()
                self._count(what, None)
                return result
            except Exception as exc:
                self._count(what, exc)
                if not self.inner.is_transient(exc):
                    raise
                delay = min(self.max_delay, self.base_delay * 2 ** (attempt - 1))
                delay *= random.uniform(0.5, 1.0)
                if attempt == self.attempts or time.monotonic() - start + delay > self.deadline:
                    raise Unavailable(f"{self.url}: {what} failed {attempt} times: {exc}") from exc
                log.debug("%s %s: transient error %s, retrying in %.2fs", self.url, what, exc, delay)
                time.sleep(delay)

    def put(self, key, data, **kwargs):
        return self._call("put", lambda: self.inner.put(key, data, **kwargs))

    def get(self, key, offset=0, length=None):
        return self._call("get", lambda: self.inner.get(key, offset, length))

    def head(self, key):
        return self._call("head", lambda: self.inner.head(key))

    def delete_many(self, keys):
        keys = list(keys)
        return self._call("delete", lambda: self.inner.delete_many(keys))

    def list(self, prefix=""):
        # Retried as a whole: listings are only used for fsck and restore, never hot paths.
        return iter(self._call("list", lambda: list(self.inner.list(prefix))))

    def copy(self, src, dst, storage_class=None):
        return self._call("copy", lambda: self.inner.copy(src, dst, storage_class))

    def delete_prefix(self, prefix, batch=1000):
        # retried as a whole: deleting what is already gone is fine
        return self._call("delete", lambda: self.inner.delete_prefix(prefix, batch))

    def guarded(self, guard) -> "RetryingStore":
        """The same retries over ``GuardedStore(inner, guard)``: every attempt is guarded,
        and each is bounded by the backend (``limit_write_time``), so the bound holds per
        attempt."""
        store = RetryingStore(GuardedStore(self.inner, guard), self.attempts, self.base_delay,
                              self.max_delay, self.deadline)
        store._requests, store._errors = self._requests, self._errors
        store._counts_lock = self._counts_lock
        return store
