"""One writer per volume: a lease object in the bucket, taken and renewed by conditional PUT.

``meta/lease`` holds the owner (the gateway id of a data dir, kept in ``gateway.id`` outside
the replicated metadata, so a restored data dir is a new gateway), its host and pid, and an
expiry time. Taking it: create if absent (If-None-Match), or replace it (If-Match on its
etag) when it is ours (the same data dir restarting after a crash), has expired, or
``takeover`` is asked. Renewing: replace it If-Match our last etag; a failed renewal means
another gateway took over, and this one must stop writing.

Threading: ``renew`` runs on the journal thread; ``acquire``/``release`` at open and close.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
import uuid
from pathlib import Path

from .. import store as store_mod
from . import errors

log = logging.getLogger(__name__)

LEASE_KEY = "meta/lease"


class LeaseLost(errors.VolumeError):
    """Another gateway took this volume over; this one stops writing."""
    http_status = 503


def gateway_id(data_dir: Path) -> str:
    path = data_dir / "gateway.id"
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        gid = uuid.uuid4().hex
        tmp = path.with_suffix(".tmp")
        tmp.write_text(gid + "\n")
        os.replace(tmp, path)
        return gid


def live_holder(store: store_mod.ObjectStore) -> dict | None:
    """The holder of the volume's lease (owner, host, pid, expires) while it is live."""
    try:
        held = json.loads(store.get(LEASE_KEY))
    except (store_mod.NotFound, ValueError):
        return None
    return held if held.get("expires", 0) > time.time() else None


class Lease:
    def __init__(self, store: store_mod.ObjectStore, owner: str, ttl: float = 30.0):
        self.store = store
        self.owner = owner
        self.ttl = ttl
        self.etag: str | None = None
        self.lost = False
        self._renewed = 0.0

    def _body(self) -> bytes:
        return json.dumps({"format": 1, "owner": self.owner, "host": socket.gethostname(),
                           "pid": os.getpid(), "expires": time.time() + self.ttl}).encode()

    def acquire(self, takeover: bool = False) -> None:
        try:
            current = self.store.get(LEASE_KEY)
            etag = self.store.head(LEASE_KEY).etag
        except store_mod.NotFound:
            current = etag = None
        if current is None:
            try:
                self.etag = self.store.put(LEASE_KEY, self._body(), if_absent=True)
            except store_mod.PreconditionFailed:
                raise errors.VolumeError("another gateway took the volume's lease just now; "
                                         "try again") from None
        else:
            held = json.loads(current)
            mine = held.get("owner") == self.owner
            expired = held.get("expires", 0) < time.time()
            if not (mine or expired or takeover):
                left = held["expires"] - time.time()
                raise errors.VolumeError(
                    f"the volume is in use by another gateway ({held.get('host')}, pid "
                    f"{held.get('pid')}) whose lease runs {left:.0f} s more; stop it, wait, or "
                    "start with --takeover")
            if not mine:
                log.warning("taking over the volume from %s (%s)", held.get("host"),
                            "lease expired" if expired else "--takeover")
            try:
                self.etag = self.store.put(LEASE_KEY, self._body(), if_match=etag)
            except store_mod.PreconditionFailed:
                raise errors.VolumeError("another gateway took the volume's lease just now") \
                    from None
        self._renewed = time.monotonic()

    def renew(self, force: bool = False) -> None:
        """Extend the lease when a third of its time has passed."""
        if self.lost or (not force and time.monotonic() - self._renewed < self.ttl / 3):
            return
        try:
            self.etag = self.store.put(LEASE_KEY, self._body(), if_match=self.etag)
            self._renewed = time.monotonic()
        except store_mod.PreconditionFailed:
            self.lost = True
            log.critical("lease lost: another gateway took over this volume; writes stop")
        except Exception as exc:  # the store is down or slow: try again next round
            log.warning("lease not renewed (store: %s); will retry", exc)

    def release(self) -> None:
        """Let the lease expire now, so the next gateway need not wait."""
        if self.lost or self.etag is None:
            return
        body = json.loads(self._body())
        body["expires"] = 0
        try:
            self.store.put(LEASE_KEY, json.dumps(body).encode(), if_match=self.etag)
        except Exception as exc:  # it expires by itself
            log.warning("lease not released: %s", exc)
