"""Counters instead of scans (issue 21): quota usage, figures and pending journal rows kept in
the transaction of each change, equal to a full recount after any sequence of changes and
crashes; fsck finds a wrong counter and --repair recounts it; old data dirs are recounted
once."""

import os
import random
import threading
import time

import pytest
import requests

from razordav.core import errors
from razordav.core.journal import count_unshipped, unshipped
from razordav.core.tree import COUNTERS_VERSION, ROOT
from razordav.core.volume import Volume

from ..razor import RazorServer
from .conftest import BS
from .test_cache import _crash
from .test_fencing import _old_volume


def assert_counted(vol):
    assert vol.tree.counters() == vol.tree.count()
    assert unshipped(vol.tree) == count_unshipped(vol.tree)


class Workload:
    """Random changes of every kind the counters follow, through the core API."""

    def __init__(self, vol, rng):
        self.vol, self.rng = vol, rng
        self.held = []                       # readers kept open over an unlink

    def files(self):
        return [f"/{n}" for n, a in self.vol.listdir("/") if a.is_file] + \
            [f"/d/{n}" for n, a in self.vol.listdir("/d") if a.is_file]

    def step(self):
        vol, rng = self.vol, self.rng
        files = self.files()
        pick = rng.choice(files) if files else None
        op = rng.choice(["write", "write", "link", "truncate", "props", "xattr", "unlink_open",
                         "rename_over", "remove", "symlink", "quota", "pwrite"])
        name = f"/{'d/' if rng.random() < 0.5 else ''}f{rng.randrange(40)}"
        try:
            if op == "write" or pick is None:
                vol.write_file(name, os.urandom(rng.choice([0, 10, BS - 1, BS + 7, 3 * BS])))
            elif op == "pwrite":
                vol.pwrite(vol.stat(pick).ino, rng.randrange(4 * BS), b"p" * rng.randrange(1, 300))
            elif op == "link":
                parent, leaf = vol._parent(name)
                vol.link(vol.stat(pick).ino, parent, leaf)
            elif op == "truncate":
                vol.truncate(vol.stat(pick).ino, rng.randrange(3 * BS))
            elif op == "props":
                value = None if rng.random() < 0.3 else b"<v>" + b"x" * rng.randrange(200) + b"</v>"
                vol.set_props(vol.stat(pick).ino, {("urn:t", f"p{rng.randrange(3)}"): value})
            elif op == "xattr":
                vol.set_xattr(vol.stat(pick).ino, f"user.x{rng.randrange(3)}",
                              os.urandom(rng.randrange(100)))
            elif op == "unlink_open":
                self.held.append(vol.open_read(pick))
                vol.unlink(pick)
            elif op == "rename_over":
                vol.rename(pick, rng.choice(files))
            elif op == "remove":
                vol.remove_tree(pick)
            elif op == "symlink":
                parent, leaf = vol._parent(name)
                vol.tree.symlink(parent, leaf, b"/target/" + b"t" * rng.randrange(50))
            elif op == "quota":                      # a change refused by a trigger's abort
                vol.set_quota(vol.usage()["bytes"] + 10, None)
                try:
                    vol.write_file(name + "q", b"z" * 5000)
                finally:
                    vol.set_quota(None, None)
        except (errors.Exists, errors.NotFound, errors.NoSpace, errors.IsADirectory,
                errors.NotADirectory):
            pass
        if self.held and rng.random() < 0.3:
            self.held.pop(rng.randrange(len(self.held))).close()


def test_counters_equal_a_recount_after_random_changes_and_crashes(open_volume):
    rng = random.Random(21)
    vol = open_volume()
    vol.mkdir("/d")
    for round_ in range(6):
        work = Workload(vol, rng)
        for i in range(60):
            work.step()
            if i % 20 == 0:
                assert_counted(vol)
            if i % 25 == 0:
                vol.collect_garbage()                # ships and deletes journal rows
        assert_counted(vol)
        if round_ % 2:
            _crash(vol)                              # kill -9 in-process, readers left open
        else:
            for r in work.held:
                r.close()
            vol.close()
        vol = open_volume()
        assert vol.tree.db.reader().execute("SELECT version FROM totals").fetchone()[0] == \
            COUNTERS_VERSION
        assert_counted(vol)


def test_figures_read_the_counters(vol):
    vol.write_file("/a", b"a" * (BS + 5))
    vol.tree.symlink(ROOT, "l", b"abc")
    fig = vol.figures()
    want = vol.tree.count()
    assert (fig["inodes"], fig["logical_bytes"]) == (want["inodes"], want["logical_bytes"])
    assert (fig["blocks"], fig["block_raw_bytes"], fig["block_stored_bytes"]) == \
        (want["blocks"], want["block_raw_bytes"], want["block_stored_bytes"])
    assert fig["inodes"] == 3 and fig["logical_bytes"] == BS + 8 and fig["blocks"] == 2
    assert fig["journal_pending"] == count_unshipped(vol.tree) > 0
    vol.collect_garbage()
    assert vol.figures()["journal_pending"] == 0


@pytest.mark.parametrize("damage", [
    "UPDATE usage SET bytes = bytes + 7", "UPDATE usage SET files = files - 1",
    "UPDATE totals SET inodes = 5", "UPDATE totals SET logical_bytes = 0",
    "UPDATE block_totals SET blocks = blocks + 1, stored_bytes = 3"])
def test_fsck_finds_a_wrong_counter_and_repair_recounts_it(vol, damage):
    vol.write_file("/a", b"a" * (3 * BS))
    vol.set_props(vol.stat("/a").ino, {("urn:t", "p"): b"<p/>"})
    vol.set_quota(10 * BS, 100)
    with vol.tree.db.write() as c:
        c.execute(damage)
    report = vol.fsck()
    assert [p for p in report.problems if p.startswith("counter ")] and not report.repaired
    report = vol.fsck(repair=True)
    assert report.repaired == [f"recounted {len(report.problems)} counters"]
    assert vol.fsck().clean
    assert vol.tree.usage()["max_bytes"] == 10 * BS          # a recount keeps the limits


def test_fsck_counters_only_repairs_a_live_volume_as_the_api_job_does(vol):
    vol.write_file("/a", b"a")
    with vol.tree.db.write() as c:
        c.execute("UPDATE totals SET inodes = inodes + 3")
    report = vol.fsck(repair=False, counters=True)
    assert report.repaired and vol.tree.counters() == vol.tree.count()


def test_journal_pending_is_exact_across_rollbacks_and_shipping(vol):
    """seq is AUTOINCREMENT and rows go only when shipped: last seq - shipped is the count,
    also after transactions that wrote journal rows and rolled back."""
    vol.write_file("/a", b"a")
    for _ in range(3):
        with pytest.raises(RuntimeError):
            with vol.tree.db.write():
                vol.tree.create(ROOT, "gone")                    # journal rows, then undone
                raise RuntimeError
        vol.set_quota(0, None)
        with pytest.raises(errors.NoSpace):
            vol.write_file("/b", b"b" * 100)                     # a trigger aborts midway
        vol.set_quota(None, None)
        assert unshipped(vol.tree) == count_unshipped(vol.tree) > 0
    vol.collect_garbage()
    assert unshipped(vol.tree) == count_unshipped(vol.tree) == 0
    vol.mkdir("/d")
    assert unshipped(vol.tree) == count_unshipped(vol.tree) > 0


def test_a_data_dir_of_the_previous_main_is_recounted_once(tmp_path):
    old = _old_volume(tmp_path)
    import sqlite3
    db = sqlite3.connect(old / "data" / "meta.db")
    assert not db.execute("SELECT 1 FROM sqlite_master WHERE name = 'totals'").fetchone()
    db.close()
    vol = Volume.open(old / "data", store_url=(old / "store").as_uri(), journal_interval=0)
    try:
        assert_counted(vol)
        assert vol.fsck().clean
        vol.write_file("/new.txt", b"new")
        vol.unlink("/b.bin")
        assert_counted(vol)
    finally:
        vol.close()
    vol = Volume.open(old / "data", store_url=(old / "store").as_uri(), journal_interval=0)
    try:
        assert_counted(vol)
    finally:
        vol.close()


def test_kill_9_of_a_serving_gateway_leaves_counters_right(tmp_path):
    """A real ``razordav serve`` killed with SIGKILL while clients change files, restarted,
    killed again: the counters the data dir holds still equal a recount."""
    srv = RazorServer(tmp_path / "data")
    rng = random.Random(9)
    done = []

    def client(stop, seed):
        r, session = random.Random(seed), requests.Session()
        while not stop.is_set():
            path = f"/d/f{r.randrange(30)}"
            op = r.random()
            try:
                if op < 0.5:
                    session.put(srv.url + path, data=os.urandom(r.randrange(200_000)), timeout=10)
                elif op < 0.7:
                    session.request("MOVE", srv.url + path, timeout=10, headers={
                        "Destination": srv.url + f"/d/f{r.randrange(30)}", "Overwrite": "T"})
                elif op < 0.85:
                    session.delete(srv.url + path, timeout=10)
                else:
                    session.request("PROPPATCH", srv.url + path, timeout=10, data=(
                        b'<?xml version="1.0"?><D:propertyupdate xmlns:D="DAV:" '
                        b'xmlns:T="urn:t"><D:set><D:prop><T:tag>' + b"v" * r.randrange(99)
                        + b'</T:tag></D:prop></D:set></D:propertyupdate>'))
            except requests.RequestException:
                return                               # killed under us
            done.append(1)

    for round_ in range(2):
        srv.start()
        requests.request("MKCOL", srv.url + "/d")
        stop = threading.Event()
        threads = [threading.Thread(target=client, args=(stop, round_ * 10 + n)) for n in range(4)]
        for t in threads:
            t.start()
        time.sleep(rng.uniform(1.0, 2.5))
        srv.kill()                                   # SIGKILL with requests in flight
        stop.set()
        for t in threads:
            t.join()
    assert len(done) > 5
    vol = Volume.open(tmp_path / "data", journal_interval=0)
    try:
        assert_counted(vol)
        assert vol.stat("/d").is_dir
    finally:
        vol.close()
