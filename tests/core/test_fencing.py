"""Fencing: a gateway that lost its lease, or could not renew it in time, writes and deletes
nothing, and two gateways' journals never interleave (issue: a partition lost 15 of 30
files). The network is played by tests/netstore.py."""

import hashlib
import json
import os
import sys
import threading
import time

import pytest
import zstandard

from razordav.core import errors
from razordav.core.check import check_tree
from razordav.core.fsck import fsck
from razordav.core.journal import (SEGMENT_PREFIX, SNAPSHOT_PREFIX, TERM_PREFIX, Chain,
                                   restore, segment_key)
from razordav.core.lease import LEASE_KEY, Lease, LeaseLapsed, LeaseLost, gateway_id
from razordav.core.volume import Volume
from razordav.store import RetryingStore
from razordav.store.local import LocalStore

sys.path.insert(0, os.path.dirname(os.path.dirname(__file__)))
from netstore import NetStore  # noqa: E402

from .conftest import old_volume  # noqa: E402

BS = 16 * 1024


def content(i: int) -> bytes:
    return hashlib.sha256(b"file %d" % i).digest() * (200 + 37 * i)   # 6-40 KiB, 1-3 blocks


def wait_for(cond, timeout=30.0, step=0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(step)
    return False


class Gateways:
    """Volumes over one bucket (a local store directory), each behind its own network."""

    def __init__(self, tmp_path):
        self.tmp = tmp_path
        self.root = tmp_path / "bucket"
        self.opened = []

    def net(self, name):
        return NetStore(LocalStore(self.root), name)

    def open(self, name, net=None, retry=False, **kw):
        net = net or self.net(name)
        store = RetryingStore(net, attempts=3, base_delay=0.05, deadline=2) if retry else net
        kw.setdefault("block_size", BS)
        kw.setdefault("journal_interval", 0.2)
        kw.setdefault("lease_ttl", 6)
        vol = Volume.open(self.tmp / name, store=store, **kw)
        vol.net = net
        self.opened.append(vol)
        return vol

    def restore(self, name):
        (self.tmp / name).mkdir()
        restore(LocalStore(self.root), self.tmp / name / "meta.db")

    def open_when_free(self, name, timeout=60, **kw):
        deadline = time.monotonic() + timeout
        while True:
            try:
                return self.open(name, **kw)
            except errors.VolumeError as exc:
                if "in use" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    def fresh_restore_reads(self, name="check"):
        """A new data dir restored from the bucket alone, opened (after the others closed)."""
        self.restore(name)
        return self.open(name)

    def close_all(self):
        for vol in self.opened:
            if not vol._closed:
                vol.close()


@pytest.fixture
def gw(tmp_path):
    g = Gateways(tmp_path)
    yield g
    g.close_all()


def quietly(fn):
    def run():
        try:
            fn()
        except Exception:
            pass   # the held request was aborted, as it must be
    return run


def shipped_everything(vol):
    vol.cache.wait_uploaded(30)
    return wait_for(lambda: vol.shipper.run_once() and vol.shipper.pending() == 0)


@pytest.mark.parametrize("retry", [False, True], ids=["plain", "retrying"])
def test_partitioned_gateway_loses_nothing_to_its_successor(gw, retry):
    """The issue's scenario: A serves, deletes 15 of 30 files, is cut off for two lease
    lifetimes; B restores and writes the 15 back; the partition heals. Nothing A sends after
    losing the lease lands, and a fresh restore reads all 30 files."""
    a = gw.open("a", retry=retry, upload_delay=0)
    for i in range(30):
        a.write_file(f"/f{i}", content(i))
    assert shipped_everything(a)
    for i in range(15):
        a.unlink(f"/f{i}")
    cut = time.monotonic()
    a.net.partition()                       # at once: A's deletion rows never leave
    time.sleep(a.lease.ttl / 2)
    # A's clients see their writes refused once the lease lapses, not silently kept.
    assert wait_for(lambda: a.lease.state() == "lapsed", timeout=a.lease.ttl)
    with pytest.raises(LeaseLapsed):
        a.write_file("/late", b"refused")

    gw.restore("b")
    b = gw.open_when_free("b", upload_delay=0)
    taken = time.monotonic()
    for i in range(15):
        b.write_file(f"/f{i}", content(i))   # the same bytes: the same block names
    assert shipped_everything(b)
    time.sleep(max(0.0, cut + 2 * a.lease.ttl - time.monotonic()))
    a.net.heal()
    assert wait_for(lambda: a.lease.lost, timeout=10)
    time.sleep(1.5)                          # whatever A still had queued would go now
    late = a.net.applied(since=taken)
    assert [r for r in late if r[2] != LEASE_KEY] == []
    assert a.net.applied(since=cut - 0.001) == [] or \
        all(r[0] < taken for r in a.net.applied(since=cut))
    with pytest.raises(LeaseLost):
        a.write_file("/later", b"refused")
    assert a.figures()["lease_state"] == "lost"
    a.close()
    b.close()

    check = gw.fresh_restore_reads()
    for i in range(30):
        assert check.read_file(f"/f{i}") == content(i), i
    assert check_tree(check.tree) == []
    assert fsck(check, full=True).clean


def test_lease_renews_while_a_journal_round_hangs(gw):
    """The lease has its own timer: a segment upload stuck in the network does not stop it."""
    vol = gw.open("a", lease_ttl=3, journal_interval=0.1)
    vol.net.partition(hold=lambda op, key: key.startswith(SEGMENT_PREFIX))
    vol.write_file("/x", b"x")
    assert wait_for(lambda: any(r[2].startswith(SEGMENT_PREFIX) for r in vol.net.log) or
                    vol.shipper._lock.locked(), timeout=5)
    before = vol.lease.renewals
    time.sleep(vol.lease.ttl)
    assert vol.lease.renewals >= before + 3
    assert vol.lease.state() == "held"
    vol.net.heal()


@pytest.mark.parametrize("phase", ["block upload", "gc", "snapshot"])
def test_partition_during_background_work(gw, phase):
    """Cut off while uploading a block, deleting garbage or writing a snapshot: once the
    lease lapses the request is not sent again, and the successor's data survives."""
    a = gw.open("a", lease_ttl=3, upload_delay=0)
    for i in range(6):
        a.write_file(f"/f{i}", content(i))
    assert shipped_everything(a)
    hold = {"block upload": lambda op, key: op == "put" and key.startswith("blocks/"),
            "gc": lambda op, key: op == "delete",
            "snapshot": lambda op, key: key.startswith(SNAPSHOT_PREFIX)}[phase]
    a.net.partition(hold=lambda op, key: hold(op, key) or key == LEASE_KEY)
    if phase == "block upload":
        a.write_file("/new", content(99))
    elif phase == "gc":
        a.unlink("/f0")
        threading.Thread(target=a.shipper.run_once, daemon=True).start()
    else:
        threading.Thread(target=quietly(a.shipper.snapshot), daemon=True).start()
    assert wait_for(lambda: a.lease.state() == "lapsed", timeout=10)
    lapsed = time.monotonic()
    gw.restore("b")
    b = gw.open_when_free("b", upload_delay=0)
    taken = time.monotonic()
    for i in range(6):
        b.write_file(f"/f{i}", content(i))
    b.write_file("/new", content(99))
    assert shipped_everything(b)
    a.net.heal()
    assert wait_for(lambda: a.lease.lost, timeout=10)
    time.sleep(1)
    assert [r for r in a.net.applied(since=lapsed) if r[2] != LEASE_KEY] == []
    assert all(r[0] < taken for r in a.net.applied(since=lapsed))
    a.close()
    b.close()
    check = gw.fresh_restore_reads()
    for i in range(6):
        assert check.read_file(f"/f{i}") == content(i)
    assert check.read_file("/new") == content(99)
    assert fsck(check, full=True).clean


def test_slow_network_requests_past_the_bound_are_aborted(gw):
    """A network that delays writes beyond the bound: the write is aborted, never applied
    late; the block stays queued and goes once the network is fast again."""
    vol = gw.open("a", lease_ttl=3, upload_delay=0, pack_threshold=0)   # uploads at once
    bound = vol.net.bound
    assert bound == pytest.approx(vol.lease.request_bound)
    vol.net.delay = lambda op, key: bound * 2 if key.startswith("blocks/") else 0.0
    vol.write_file("/slow", content(1))
    assert wait_for(lambda: any(r[3] == "aborted" for r in vol.net.log), timeout=10)
    assert not any(r[2].startswith("blocks/") for r in vol.net.applied())
    vol.net.delay = lambda op, key: 0.0
    assert shipped_everything(vol)
    assert any(r[2].startswith("blocks/") for r in vol.net.applied())


# -- the lease's rules, one by one, on injected clocks --

class Clocks:
    def __init__(self):
        self.wall_t = 1_000_000.0
        self.mono_t = 50.0

    def wall(self):
        return self.wall_t

    def mono(self):
        return self.mono_t

    def sleep(self, s):
        self.mono_t += s
        self.wall_t += s


def lease_on(tmp_path, clocks, owner="a" * 32, ttl=30.0):
    store = NetStore(LocalStore(tmp_path / "bucket"))
    return Lease(store, owner, ttl, wall=clocks.wall, mono=clocks.mono, sleep=clocks.sleep), store


def test_fence_arithmetic(tmp_path):
    c = Clocks()
    lease, _ = lease_on(tmp_path, c, ttl=30)
    lease.acquire()
    assert (lease.margin, lease.drift, lease.request_bound) == (10, 2.5, 7.5)
    assert lease.valid_until() == 50 + 30 - 10
    lease.check("put")
    lease.check("delete")
    c.mono_t = 50 + 10.5                      # less than a full margin left for deletes
    lease.check("put")
    with pytest.raises(LeaseLapsed):
        lease.check("delete")
    c.mono_t = 50 + 20                        # valid_until reached: nothing is sent
    with pytest.raises(LeaseLapsed):
        lease.check("put")
    with pytest.raises(LeaseLapsed):
        lease.check_local_write()
    lease.check("get")                        # reads need nothing
    lease.renew()                             # a renewal starting now moves the deadline
    assert lease.valid_until() == 70 + 20
    lease.check("put")


def test_wall_clock_jumps_do_not_move_the_fence(tmp_path):
    c = Clocks()
    lease, _ = lease_on(tmp_path, c)
    lease.acquire()
    until = lease.valid_until()
    c.wall_t += 3600                          # NTP steps the clock an hour forward ...
    assert lease.valid_until() == until
    c.wall_t -= 7200                          # ... and back
    assert lease.valid_until() == until
    c.mono_t = until + 0.01
    with pytest.raises(LeaseLapsed):
        lease.check("put")


def test_a_renewal_that_fails_does_not_extend(tmp_path):
    c = Clocks()
    lease, store = lease_on(tmp_path, c)
    lease.acquire()
    until = lease.valid_until()
    store.delay = lambda op, key: 1.0
    store.limit_write_time(0.1)               # the renewal is aborted
    c.mono_t += 15
    lease.renew()
    assert lease.valid_until() == until and lease.renew_failures == 1 and not lease.lost


def test_terms_increase_and_a_412_loses_the_lease_for_good(tmp_path):
    c = Clocks()
    first, store = lease_on(tmp_path, c, owner="a" * 32)
    first.acquire()
    assert first.term == 1
    second, _ = lease_on(tmp_path, c, owner="b" * 32)
    with pytest.raises(errors.VolumeError, match="in use"):
        second.acquire()
    second.acquire(takeover=True)              # live: waits a lease lifetime first
    assert second.term == 2 and second.previous_term == 1
    assert c.mono_t == 50 + 30
    first.renew()
    assert first.lost
    with pytest.raises(LeaseLost):
        first.check("put")
    n = len(store.log)
    first.renew()                              # never tried again
    assert len(store.log) == n


def test_expired_lease_is_taken_only_past_the_drift(tmp_path):
    c = Clocks()
    first, _ = lease_on(tmp_path, c, owner="a" * 32)
    first.acquire()
    second, _ = lease_on(tmp_path, c, owner="b" * 32)
    c.wall_t += 30 + 1                        # expired, but within the allowed drift
    with pytest.raises(errors.VolumeError, match="in use"):
        second.acquire()
    c.wall_t += 2                             # past it: no wait needed
    before = c.mono_t
    second.acquire()
    assert c.mono_t == before and second.term == 2


def test_old_term_segment_written_late_is_ignored_and_collected(gw):
    """Names carry the term; restore follows the newest term's chain from where it began,
    and the new holder's GC removes the old term's late segment."""
    a = gw.open("a", lease_ttl=3, journal_interval=0)
    a.write_file("/one", b"1")
    assert shipped_everything(a)
    term_a, shipped = a.lease.term, a.shipper.shipped()
    a.close()
    gw.restore("b")
    b = gw.open("b", lease_ttl=3, journal_interval=0)
    assert b.lease.term == term_a + 1
    b.write_file("/two", b"2")
    assert shipped_everything(b)
    # A late segment of A's term, past where B's chain began (what fencing prevents; here
    # put by hand): restore must not take it.
    bucket = LocalStore(gw.root)
    rogue = ['["dentries","D",[1,"two"]]']
    body = json.dumps({"format": 2, "first": shipped + 1, "last": shipped + 1}) + "\n" + \
        f"{shipped + 1}\t{rogue[0]}\n"
    key = segment_key(shipped + 1, shipped + 1, term_a)
    bucket.put(key, zstandard.ZstdCompressor().compress(body.encode()))
    assert key in Chain(bucket).stale(b.lease.term)
    b.close()
    gw.restore("c")
    c = gw.open("c", lease_ttl=3, journal_interval=0)
    assert c.read_file("/two") == b"2" and c.read_file("/one") == b"1"
    c.shipper.snapshot()                      # the new holder's pruning collects it
    assert not bucket.exists(key)
    assert list(bucket.list(TERM_PREFIX))
    c.close()


def test_stale_data_dir_is_refused(gw):
    """A data dir another gateway superseded must not serve its old view."""
    a = gw.open("a", lease_ttl=3, journal_interval=0)
    a.write_file("/x", b"x")
    a.close()
    gw.restore("b")
    b = gw.open("b", lease_ttl=3, journal_interval=0)
    b.write_file("/y", b"y")
    b.close()
    with pytest.raises(errors.VolumeError, match="another gateway wrote the volume"):
        gw.open("a", lease_ttl=3)
    with pytest.raises(errors.VolumeError, match="never restored"):
        gw.open("fresh", lease_ttl=3)


def test_restore_taken_while_the_old_gateway_still_wrote_catches_up(gw):
    a = gw.open("a", lease_ttl=3, journal_interval=0)
    a.write_file("/early", b"1")
    assert shipped_everything(a)
    gw.restore("b")                           # while A still serves
    a.write_file("/late", b"2")
    assert shipped_everything(a)
    a.close()
    b = gw.open("b", lease_ttl=3, journal_interval=0)
    assert b.read_file("/late") == b"2"
    b.close()


def test_gateway_id_is_durable_and_never_empty(tmp_path, monkeypatch):
    synced = []
    real = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(os.readlink(
        f"/proc/self/fd/{fd}")), real(fd))[1])
    gid = gateway_id(tmp_path)
    assert (tmp_path / "gateway.id").read_text().strip() == gid
    assert any(p.startswith(str(tmp_path / ".tmp-")) for p in synced)   # the file, renamed
    assert str(tmp_path) in synced                                          # its directory
    (tmp_path / "gateway.id").write_text("")
    with pytest.raises(errors.VolumeError, match="damaged"):
        gateway_id(tmp_path)
    with pytest.raises(errors.VolumeError):
        Lease(LocalStore(tmp_path / "s"), "")


def test_interrupted_local_puts_leave_nothing_after_gc(tmp_path):
    store = LocalStore(tmp_path / "bucket")
    store.put("meta/journal/x", b"1")
    leftover = tmp_path / "bucket" / "meta" / "journal" / ".tmp-deadbeef"
    leftover.write_bytes(b"half")
    os.utime(leftover, (time.time() - 7200,) * 2)
    fresh = tmp_path / "bucket" / "meta" / "journal" / ".tmp-inflight"
    fresh.write_bytes(b"in progress")
    (tmp_path / "bucket" / "blocks" / "ab").mkdir(parents=True)
    elsewhere = tmp_path / "bucket" / "blocks" / "ab" / ".tmp-old"
    elsewhere.write_bytes(b"half a block")
    os.utime(elsewhere, (time.time() - 7200,) * 2)
    assert store.remove_leftovers(3600, prefix="meta/") == 1   # what the shipper prunes
    assert not leftover.exists() and fresh.exists() and elsewhere.exists()
    assert store.remove_leftovers(3600) == 1
    assert not elsewhere.exists()


def test_lost_lease_shows_in_stats_and_sends_nothing(gw):
    a = gw.open("a", lease_ttl=3)
    a.write_file("/x", b"x")
    gw.restore("b")
    b = gw.open("b", lease_ttl=3, takeover=True, journal_interval=0)
    assert wait_for(lambda: a.lease.lost, timeout=5)
    n = len(a.net.applied())
    a.shipper.kick()
    time.sleep(1)
    assert len(a.net.applied()) == n
    figures = a.figures()
    assert figures["lease_state"] == "lost"
    with pytest.raises(LeaseLost):
        a.mkdir("/d")
    b.close()


# -- a volume written by the previous main (874c0ec, before terms) --

def _old_volume(tmp_path):
    return old_volume(tmp_path, "volume-874c0ec.tar.gz")


OLD_FILES = {"/docs/a.txt": b"alpha " * 5000, "/b.bin": bytes(range(256)) * 1000,
             "/after-snapshot.txt": b"later " * 100}


def test_volume_of_the_previous_main_opens_and_keeps_working(tmp_path):
    """Its data dir (crashed, one row unshipped) opens under a new term; old segment and
    snapshot names (term 0) and new ones restore together."""
    old = _old_volume(tmp_path)
    vol = Volume.open(old / "data", store_url=(old / "store").as_uri(), journal_interval=0)
    for path, data in {**OLD_FILES, "/unshipped.txt": b"still local"}.items():
        assert vol.read_file(path) == data
    assert vol.tree.props(vol.stat("/docs/a.txt").ino)
    assert vol.lease.term == 1
    vol.write_file("/new.txt", b"new")
    vol.collect_garbage()
    vol.close()
    store = LocalStore(old / "store")
    keys = {o.key for o in store.list("meta/")}
    assert "meta/journal/0000000000000029-0000000000000035" in keys      # term 0, kept
    assert any(k.endswith("-" + "1".zfill(16)) for k in keys if k.startswith(SEGMENT_PREFIX))
    (tmp_path / "r").mkdir()
    restore(store, tmp_path / "r" / "meta.db")
    again = Volume.open(tmp_path / "r", store_url=(old / "store").as_uri(), journal_interval=0)
    for path, data in {**OLD_FILES, "/unshipped.txt": b"still local", "/new.txt": b"new"}.items():
        assert again.read_file(path) == data
    assert check_tree(again.tree) == []
    again.close()


def test_bucket_of_the_previous_main_restores(tmp_path):
    old = _old_volume(tmp_path)
    (tmp_path / "r").mkdir()
    restore(LocalStore(old / "store"), tmp_path / "r" / "meta.db")
    vol = Volume.open(tmp_path / "r", store_url=(old / "store").as_uri(), journal_interval=0)
    for path, data in OLD_FILES.items():
        assert vol.read_file(path) == data
    vol.close()


def test_term_markers_go_with_the_history_they_bound(gw):
    """Every open takes a new term and writes a marker; once a snapshot of a newer term
    holds everything, older markers are pruned, and a restore still reads every file."""
    for i in range(4):
        vol = gw.open("a", lease_ttl=3, journal_interval=0)
        vol.write_file(f"/f{i}", content(i))
        assert shipped_everything(vol)
        if i < 3:
            vol.close()
    assert len(Chain(LocalStore(gw.root)).starts) == 4
    vol.shipper.snapshot()
    vol.write_file("/last", b"last")
    assert shipped_everything(vol)
    vol.shipper.snapshot()
    vol.close()
    assert sorted(Chain(LocalStore(gw.root)).starts) == [4]
    check = gw.fresh_restore_reads()
    for i in range(4):
        assert check.read_file(f"/f{i}") == content(i)
    assert check.read_file("/last") == b"last"
