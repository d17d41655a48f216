"""One writer per volume: a lease object in the bucket, and the fence every store write passes.

``meta/lease`` holds the owner (the gateway id of a data dir, kept in ``gateway.id`` outside
the replicated metadata, so a restored data dir is a new gateway), its host and pid, an
expiry time, and the **term**: a number every new acquisition increments. Journal segments,
snapshots and term markers carry the term in their names, so two holders' writes can never
interleave (see journal.py).

Taking it: create if absent (If-None-Match), or replace it (If-Match on its etag) when it was
released, has expired, is ours (this data dir restarting after a crash, and the old process
is gone), or ``takeover`` is asked; after replacing a live lease the new holder waits one
lease lifetime before it writes, so the old holder's last writes have landed or been dropped.
Renewing: replace it If-Match our last etag, on a timer thread of its own, never behind other
work. A 412 means another gateway took over: the lease is lost for good.

Fencing arithmetic (docs/design.md, "Fencing"). ``ttl`` is the lease lifetime. A renewal
whose request *started* at local monotonic time ``s`` succeeded, so the bucket says the lease
is ours until ``s + ttl`` at the earliest (by the other gateways' clocks, give or take the
allowed ``drift``). Locally:

- ``valid_until = s + ttl - margin`` with ``margin = ttl / 3``;
- a store write may be *sent* only before ``valid_until``;
- every store write lands within ``request_bound = margin - drift`` of being sent (the store
  bounds it: ``ObjectStore.limit_write_time``), so it lands before ``s + ttl - drift``;
- a delete needs one more full margin left (``valid_until - margin``);
- renewal runs every ``ttl / 6``, so a healthy gateway always has about ``ttl/2`` in hand.

Threading: the renewal thread owns ``etag``, ``_start`` and ``lost``; ``check`` may be called
from any thread and only reads them (floats and bools, replaced atomically).
"""

from __future__ import annotations

import errno as _errno
import json
import logging
import os
import socket
import threading
import time
import uuid
from pathlib import Path

from .. import store as store_mod
from ..fsutil import write_durably
from . import errors

log = logging.getLogger(__name__)

LEASE_KEY = "meta/lease"
LEASE_FORMAT = 2


class LeaseLost(errors.VolumeError):
    """Another gateway took this volume over; this one writes nothing more."""
    errno = _errno.EROFS
    http_status = 503


class LeaseLapsed(errors.VolumeError):
    """The lease could not be renewed in time (the store is unreachable); writes wait until a
    renewal succeeds."""
    errno = _errno.EROFS
    http_status = 503


def gateway_id(data_dir: Path) -> str:
    """This data dir's identity as a lease owner, created once and made durable (file and
    directory fsynced) before it is used: two data dirs must never share an owner."""
    path = data_dir / "gateway.id"
    try:
        gid = path.read_text().strip()
    except FileNotFoundError:
        gid = uuid.uuid4().hex
        write_durably(path, (gid + "\n").encode())
        return gid
    except (OSError, UnicodeDecodeError) as exc:
        raise errors.VolumeError(f"{path} cannot be read ({exc}); it names this gateway "
                                 "as the volume's lease owner") from None
    if len(gid) != 32 or not all(c in "0123456789abcdef" for c in gid):
        raise errors.VolumeError(
            f"{path} is damaged (it holds {gid!r}, not a gateway id). It names this gateway "
            "as the volume's lease owner: if no other gateway uses this data dir, delete it "
            "and start with --takeover")
    return gid


def read_lease(store: store_mod.ObjectStore) -> tuple[dict | None, str | None]:
    """The lease object and its etag, or (None, None) when there is none."""
    try:
        info = store.head(LEASE_KEY)
        return json.loads(store.get(LEASE_KEY)), info.etag
    except store_mod.NotFound:
        return None, None
    except ValueError:
        return {}, None


def live_holder(store: store_mod.ObjectStore) -> dict | None:
    """The holder of the volume's lease (owner, host, pid, expires) while it is live."""
    held, _ = read_lease(store)
    return held if held and held.get("expires", 0) > time.time() else None


def _pid_gone(held: dict) -> bool:
    """Whether the holder was a process on this host that no longer runs."""
    if held.get("host") != socket.gethostname() or not isinstance(held.get("pid"), int):
        return False
    try:
        os.kill(held["pid"], 0)
    except ProcessLookupError:
        return True
    except OSError:
        return False
    return held["pid"] == os.getpid()   # our own pid: an earlier open in this process


class Lease:
    """The lease of one volume held by this gateway: take, renew on its own thread, fence.

    ``wall`` and ``mono`` are the clocks (injectable for tests): the lease object carries
    wall-clock expiry for other gateways; every local decision uses the monotonic clock, so
    a jump of the wall clock neither extends nor shortens what this gateway may write.
    """

    def __init__(self, store: store_mod.ObjectStore, owner: str, ttl: float = 60.0, *,
                 wall=time.time, mono=time.monotonic, sleep=time.sleep):
        if not owner:
            raise errors.VolumeError("a lease needs an owner id")
        self.store = store
        self.owner = owner
        self.ttl = float(ttl)
        self.margin = self.ttl / 3
        self.drift = self.margin / 4
        self.request_bound = self.margin - self.drift
        self.renew_every = self.ttl / 6
        self.wall, self.mono, self.sleep = wall, mono, sleep
        self.etag: str | None = None
        self.term = 0
        self.previous_term = 0      # the term of the holder before us (0: none or unfenced)
        self.previous_owner: str | None = None
        self.lost = False
        self._start = float("-inf")   # monotonic start of the last successful renewal
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.renewals = 0
        self.renew_failures = 0
        self.on_lost: list = []      # called once (from the renewal thread) when lost

    # -- the object --

    def _body(self, expires: float | None = None) -> bytes:
        return json.dumps({"format": LEASE_FORMAT, "owner": self.owner, "term": self.term,
                           "host": socket.gethostname(), "pid": os.getpid(),
                           "ttl": self.ttl,
                           "expires": self.wall() + self.ttl if expires is None else expires
                           }).encode()

    def acquire(self, takeover: bool = False) -> None:
        """Take the lease, or raise ``VolumeError`` saying who holds it."""
        held, etag = read_lease(self.store)
        wait = 0.0
        if held is None:
            cond = {"if_absent": True}
        else:
            expires = held.get("expires", 0)
            mine = held.get("owner") == self.owner
            released = expires == 0
            expired = expires + self.drift < self.wall()
            if not (released or expired or takeover or (mine and _pid_gone(held))):
                left = expires - self.wall()
                who = "this data dir's earlier process" if mine else "another gateway"
                raise errors.VolumeError(
                    f"the volume is in use by {who} ({held.get('host')}, pid "
                    f"{held.get('pid')}) whose lease runs {max(left, 0):.0f} s more; stop it, "
                    "wait, or start with --takeover")
            if not (released or expired or (mine and _pid_gone(held))):
                # It may still be writing: wait out the longest it can go on (measured on
                # our own clock from our take-over, so clock skew cannot shorten it).
                wait = float(held.get("ttl", self.ttl))
                log.warning("taking over the volume from %s (pid %s) while its lease is live; "
                            "waiting %.0f s for its last writes", held.get("host"),
                            held.get("pid"), wait)
            elif not mine:
                log.warning("taking over the volume from %s (%s)", held.get("host"),
                            "lease released" if released else "lease expired")
            self.previous_term = int(held.get("term", 0) or 0)
            self.previous_owner = held.get("owner")
            cond = {"if_match": etag}
        self.term = self.previous_term + 1
        start = self.mono()
        try:
            self.etag = self.store.put(LEASE_KEY, self._body(), **cond)
        except store_mod.PreconditionFailed:
            raise errors.VolumeError("another gateway took the volume's lease just now; "
                                     "try again") from None
        self._start = start
        if wait:
            self.sleep(wait)
            self.renew()        # the wait used up our own lease: start it afresh
            if self.lost or self.state() != "held":
                raise errors.VolumeError("the volume's lease could not be kept while waiting "
                                         "for the old gateway; try again")

    def start(self) -> None:
        """Renew on a thread of our own from now on."""
        self._thread = threading.Thread(target=self._loop, name="rzd-lease", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.is_set() and not self.lost:
            due = self._start + self.renew_every - self.mono()
            if due > 0 and self._stop.wait(min(due, 1.0)):
                break
            if due <= 0:
                self.renew()
                if not self.lost and self._start + self.renew_every <= self.mono():
                    self._stop.wait(1.0)   # the renewal failed: try again in a second

    def renew(self) -> None:
        """Extend the lease now (If-Match our etag)."""
        if self.lost:
            return
        start = self.mono()
        try:
            self.etag = self.store.put(LEASE_KEY, self._body(), if_match=self.etag)
        except store_mod.PreconditionFailed:
            self._lose("another gateway took over this volume")
            return
        except Exception as exc:  # the store is down or slow: the timer tries again
            self.renew_failures += 1
            left = self.valid_until() - self.mono()
            log.warning("lease not renewed (store: %s); writes stop in %.0f s unless a "
                        "renewal succeeds", exc, max(left, 0))
            return
        was_lapsed = self.mono() > self.valid_until()
        self._start = start
        self.renewals += 1
        if was_lapsed:
            log.warning("lease renewed again; writes resume")

    def _lose(self, why: str) -> None:
        if self.lost:
            return
        self.lost = True
        log.critical("lease lost: %s; this gateway writes nothing more (restart it after "
                     "checking which gateway should serve the volume)", why)
        for fn in self.on_lost:
            try:
                fn()
            except Exception:
                log.exception("lease-lost handler failed")

    def release(self) -> None:
        """Stop renewing and let the lease go now, so the next gateway need not wait. Call
        only when nothing more will be written."""
        self._stop.set()
        if self._thread:
            self._thread.join()
        if self.lost or self.etag is None:
            return
        try:
            self.store.put(LEASE_KEY, self._body(expires=0), if_match=self.etag)
        except Exception as exc:  # it expires by itself
            log.warning("lease not released: %s", exc)
        self.etag = None

    # -- the fence --

    def valid_until(self) -> float:
        """Monotonic time until which a store write may be sent."""
        return self._start + self.ttl - self.margin

    def state(self) -> str:
        if self.lost:
            return "lost"
        return "held" if self.mono() < self.valid_until() else "lapsed"

    def check(self, op: str = "put") -> None:
        """Raise unless a store request of kind ``op`` may be sent now. Deletes need a full
        margin more than writes. Reads need nothing."""
        if op in ("get", "head", "list"):
            return
        if self.lost:
            raise LeaseLost("another gateway took over this volume; this one writes nothing")
        left = self.valid_until() - self.mono()
        if op == "delete":
            left -= self.margin
        if left <= 0:
            raise LeaseLapsed(f"the volume's lease could not be renewed in time; store "
                              f"{op} not sent")

    def check_local_write(self) -> None:
        """Raise unless this gateway may accept a change of the volume: its lease is held."""
        if self.lost:
            raise LeaseLost("another gateway took over this volume; this gateway accepts no "
                            "more changes")
        if self.mono() >= self.valid_until():
            raise LeaseLapsed("the volume's lease could not be renewed (the store is "
                              "unreachable); changes are refused until it is")

    def figures(self) -> dict:
        return {"lease_state": self.state(), "lease_term": self.term,
                "lease_valid_for": max(0.0, self.valid_until() - self.mono()),
                "lease_renewals": self.renewals, "lease_renew_failures": self.renew_failures}
