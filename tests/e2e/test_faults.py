"""Fault injection against a gateway on a real S3 server (SeaweedFS on loopback): kill -9
under parallel writes, an S3 outage, a lost disk restored from the bucket, fsck."""

import hashlib
import json
import os
import random
import shutil
import subprocess
import sys
import threading
import time

import pytest
import requests

from tests.razor import RazorServer
from tests.servers import seaweedfs as make_seaweedfs

KiB, MiB = 1 << 10, 1 << 20


def cli(*args, timeout=120):
    return subprocess.run([sys.executable, "-m", "razordav.cli", *args], capture_output=True,
                          text=True, timeout=timeout)


def stats(data_dir):
    r = cli("stats", "--data-dir", str(data_dir), "--json")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def wait_drained(data_dir, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        s = stats(data_dir)
        if s["upload_queue"] == 0 and s["dirty_bytes"] == 0 and s["journal_pending"] == 0 \
                and time.time() - s["time"] < 5:
            return s
        time.sleep(0.5)
    raise AssertionError(f"queue did not drain: {stats(data_dir)}")


@pytest.fixture
def weed(tmp_path):
    """A SeaweedFS of this test's own, so stopping it disturbs no other test."""
    srv = make_seaweedfs(str(tmp_path / "weed"))
    os.makedirs(srv.workdir, exist_ok=True)
    srv.start()
    yield srv
    srv.stop()


# Packs: with the defaults small blocks wait (up to 30 s) for a full pack, so a kill
# mostly finds them local; "packs" uploads 1 MiB packs continuously, so kills land while
# packs are built, uploading, or uploaded with their rows not yet committed.
PACKS_NOW = "upload_delay: 0\nupload_delay_max: 0.5\npack_size: 1M\n"


@pytest.mark.parametrize("config", [None, PACKS_NOW], ids=["defaults", "packs"])
def test_kill_9_under_16_parallel_puts_loses_nothing_acknowledged(tmp_path, seaweedfs,
                                                                   config):
    bucket = seaweedfs.make_bucket("kill9-packs" if config else "kill9")
    extra = []
    if config:
        (tmp_path / "c.yaml").write_text(config)
        extra = ["--config", str(tmp_path / "c.yaml")]
    srv = RazorServer(tmp_path / "data", store=f"s3://{bucket}/v", endpoint=seaweedfs.endpoint,
                      extra=extra)
    acked: dict[str, str] = {}                  # path -> sha256 of what was acknowledged
    later: dict[str, set] = {}                  # path -> PUTs sent after it, unanswered
    lock = threading.Lock()
    rng = random.Random(1234)

    def writer(n, stop):
        i = 0
        session = requests.Session()
        while not stop.is_set():
            size = rng.choice([0, 1, 4 * KiB, 300 * KiB, 2 * MiB, 5 * MiB])
            data = os.urandom(size)
            path = f"/w{n}-{i % 5}.bin"         # rewrites too, not only new files
            digest = hashlib.sha256(data).hexdigest()
            with lock:
                later.setdefault(path, set()).add(digest)
            try:
                r = session.put(srv.url + path, data=data, timeout=30)
            except requests.RequestException:
                return                          # died under us: this PUT may have landed
            if r.status_code in (201, 204):
                with lock:
                    acked[path] = digest
                    later[path] = set()
            i += 1

    for round_ in range(3):
        srv.start()
        stop = threading.Event()
        threads = [threading.Thread(target=writer, args=(n, stop)) for n in range(16)]
        for t in threads:
            t.start()
        time.sleep(rng.uniform(1.0, 4.0))
        srv.kill()                              # SIGKILL at a random moment
        stop.set()
        for t in threads:
            t.join()
    assert len(acked) > 16
    srv.start()
    try:
        for path, digest in acked.items():
            r = requests.get(srv.url + path)
            assert r.status_code == 200, path
            # the acknowledged version, or one sent after it whose answer the kill cut off
            assert hashlib.sha256(r.content).hexdigest() in {digest} | later[path], path
        wait_drained(tmp_path / "data")
    finally:
        srv.stop()
    args = ["--data-dir", str(tmp_path / "data"), "--store", f"s3://{bucket}/v",
            "--s3-endpoint", seaweedfs.endpoint]
    r = cli("fsck", *args)
    # a block a killed PUT uploaded before it could commit is garbage, not damage
    problems = [line for line in r.stdout.splitlines() if line.startswith("problem:")]
    assert all("belong to no file" in line for line in problems), r.stdout
    cli("fsck", "--repair", *args)
    r = cli("fsck", "--full", *args)
    assert r.returncode == 0, r.stdout + r.stderr


def test_s3_outage_cached_reads_queued_writes_507_503_then_drain(tmp_path, weed):
    bucket = weed.make_bucket("outage")
    cfg = tmp_path / "c.yaml"
    cfg.write_text("block_size: 64K\ncache_size: 1M\ndirty_limit: 768K\n")
    srv = RazorServer(tmp_path / "data", store=f"s3://{bucket}/v", endpoint=weed.endpoint,
                      extra=["--config", str(cfg)]).start()
    try:
        cold = os.urandom(900 * KiB)
        hot = os.urandom(100 * KiB)
        assert requests.put(srv.url + "/cold.bin", data=cold).status_code == 201
        wait_drained(tmp_path / "data")
        assert requests.put(srv.url + "/filler.bin", data=os.urandom(900 * KiB)).status_code == 201
        assert requests.put(srv.url + "/hot.bin", data=hot).status_code == 201
        wait_drained(tmp_path / "data")
        assert requests.get(srv.url + "/hot.bin").content == hot        # now cached
        weed.stop()
        # cached reads keep working
        assert requests.get(srv.url + "/hot.bin").content == hot
        # writes are acknowledged from the cache until the dirty limit, then 507
        written, statuses = {}, []
        for i in range(20):
            data = os.urandom(128 * KiB)
            r = requests.put(srv.url + f"/during-{i}.bin", data=data, timeout=60)
            statuses.append(r.status_code)
            if r.status_code == 201:
                written[f"/during-{i}.bin"] = data
            else:
                assert r.status_code == 507, r.text
                assert requests.get(srv.url + f"/during-{i}.bin").status_code == 404
        assert 201 in statuses and 507 in statuses
        # an uncached read fails fast with 503
        t = time.monotonic()
        r = requests.get(srv.url + "/cold.bin", timeout=60)
        assert r.status_code == 503
        assert time.monotonic() - t < 15
        s = stats(tmp_path / "data")
        assert s["upload_queue"] > 0 and s["last_store_error"]
        weed.start()
        wait_drained(tmp_path / "data", timeout=90)
        for path, data in written.items():
            assert requests.get(srv.url + path).content == data
        assert requests.get(srv.url + "/cold.bin").content == cold
    finally:
        srv.stop()


def snapshot_state(url):
    """path -> (sha256, Last-Modified, dead property) of every file, by PROPFIND depth 1."""
    import xml.etree.ElementTree as ET
    out = {}

    def walk(path):
        r = requests.request("PROPFIND", url + path, headers={"Depth": "1"})
        for resp in ET.fromstring(r.content).iter("{DAV:}response"):
            href = requests.utils.unquote(resp.find("{DAV:}href").text)
            if href.rstrip("/") == path.rstrip("/"):
                continue
            if resp.find(".//{DAV:}collection") is not None:
                out[href] = "dir"
                walk(href)
            else:
                g = requests.get(url + href)
                tag = resp.find(".//{urn:t}tag")
                out[href] = (hashlib.sha256(g.content).hexdigest(), g.headers["Last-Modified"],
                             tag.text if tag is not None else None)
    walk("/")
    return out


def test_restore_after_losing_the_disk(tmp_path, seaweedfs):
    bucket = seaweedfs.make_bucket("restore")
    store = f"s3://{bucket}/v"
    conf = tmp_path / "short-lease.yaml"
    conf.write_text("lease_ttl: 5\n")     # a take-over waits out the dead gateway's lease
    srv = RazorServer(tmp_path / "data", store=store, endpoint=seaweedfs.endpoint,
                      extra=["--config", str(conf)]).start()
    requests.request("MKCOL", srv.url + "/docs")
    requests.request("MKCOL", srv.url + "/docs/sub")
    for i in range(12):
        requests.put(srv.url + f"/docs/sub/f{i}.bin", data=os.urandom(i * 50 * KiB),
                     headers={"X-OC-Mtime": str(1_600_000_000 + i)})
    requests.put(srv.url + "/docs/readme.txt", data=b"read me " * 1000)
    requests.request("PROPPATCH", srv.url + "/docs/readme.txt", data=(
        b'<?xml version="1.0"?><D:propertyupdate xmlns:D="DAV:" xmlns:T="urn:t"><D:set><D:prop>'
        b'<T:tag>important</T:tag></D:prop></D:set></D:propertyupdate>'))
    requests.request("MOVE", srv.url + "/docs/sub/f3.bin",
                     headers={"Destination": srv.url + "/docs/moved.bin"})
    requests.delete(srv.url + "/docs/sub/f4.bin")
    before = snapshot_state(srv.url)
    time.sleep(4)                               # past the journal interval
    wait_drained(tmp_path / "data")
    srv.kill()
    shutil.rmtree(tmp_path / "data")            # the disk is gone
    r = cli("restore", "--store", store, "--s3-endpoint", seaweedfs.endpoint,
            "--data-dir", str(tmp_path / "new"))
    assert r.returncode == 0, r.stderr
    assert "restored metadata" in r.stdout
    r = cli("restore", "--store", store, "--s3-endpoint", seaweedfs.endpoint,
            "--data-dir", str(tmp_path / "new"))
    assert r.returncode == 1 and "already holds a volume" in r.stderr
    # the dead gateway's lease is still live: refused without --takeover
    blocked = RazorServer(tmp_path / "new", store=store, endpoint=seaweedfs.endpoint)
    with pytest.raises(RuntimeError, match="in use by another gateway"):
        blocked.start()
    srv2 = RazorServer(tmp_path / "new", store=store, endpoint=seaweedfs.endpoint,
                       extra=["--takeover", "--config", str(conf)]).start()
    try:
        assert snapshot_state(srv2.url) == before
    finally:
        srv2.stop()


def test_fsck_finds_missing_and_corrupt_objects_and_repairs_orphans(tmp_path, seaweedfs):
    bucket = seaweedfs.make_bucket("fsck")
    store = f"s3://{bucket}/v"
    args = ["--data-dir", str(tmp_path / "data"), "--store", store,
            "--s3-endpoint", seaweedfs.endpoint]
    cfg = tmp_path / "c.yaml"
    cfg.write_text("pack_threshold: 0\n")      # an object per block (packs: the next test)
    with RazorServer(tmp_path / "data", store=store, endpoint=seaweedfs.endpoint,
                     extra=["--config", str(cfg)]) as srv:
        for i in range(3):
            requests.put(srv.url + f"/f{i}", data=os.urandom(100 * KiB))
        wait_drained(tmp_path / "data")
    assert cli("fsck", *args).returncode == 0
    client = seaweedfs.client()
    keys = sorted(o["Key"] for o in client.list_objects_v2(Bucket=bucket, Prefix="v/blocks/")
                  ["Contents"])
    client.delete_object(Bucket=bucket, Key=keys[0])                       # a lost object
    body = bytearray(client.get_object(Bucket=bucket, Key=keys[1])["Body"].read())
    body[40] ^= 0xFF
    client.put_object(Bucket=bucket, Key=keys[1], Body=bytes(body))        # a damaged one
    client.put_object(Bucket=bucket, Key="v/blocks/ab/" + "ab" * 32, Body=b"orphan")
    r = cli("fsck", *args)
    assert r.returncode == 1
    assert "missing from the store" in r.stdout and "1 objects in the store belong to no file" \
        in r.stdout
    assert "corrupt" not in r.stdout                                       # needs --full
    r = cli("fsck", "--full", *args)
    assert r.returncode == 1 and "is corrupt in the store" in r.stdout
    r = cli("fsck", "--repair", "--full", *args)
    assert "deleted 1 orphaned objects" in r.stdout
    assert "uploaded block" in r.stdout          # the cache still had good copies
    r = cli("fsck", "--full", *args)
    assert r.returncode == 0, r.stdout


def test_fsck_checks_packs_and_repairs_their_index_through_the_cli(tmp_path, seaweedfs):
    bucket = seaweedfs.make_bucket("fsck-packs")
    store = f"s3://{bucket}/v"
    args = ["--data-dir", str(tmp_path / "data"), "--store", store,
            "--s3-endpoint", seaweedfs.endpoint]
    cfg = tmp_path / "c.yaml"
    cfg.write_text("upload_delay_max: 2\n")   # a partial pack goes after 2 s, not 30
    files = {f"/f{i}": os.urandom(30 * KiB) for i in range(6)}
    with RazorServer(tmp_path / "data", store=store, endpoint=seaweedfs.endpoint,
                     extra=["--config", str(cfg)]) as srv:
        for path, data in files.items():
            assert requests.put(srv.url + path, data=data).status_code == 201
        wait_drained(tmp_path / "data")
    assert cli("fsck", *args).returncode == 0
    client = seaweedfs.client()
    pack, = [o["Key"] for o in client.list_objects_v2(Bucket=bucket, Prefix="v/packs/")
             ["Contents"]]
    body = bytearray(client.get_object(Bucket=bucket, Key=pack)["Body"].read())
    body[-40] ^= 0xFF                                  # inside the index
    body[100] ^= 0xFF                                  # inside the first block
    client.put_object(Bucket=bucket, Key=pack, Body=bytes(body))
    client.put_object(Bucket=bucket, Key="v/packs/ab/" + "ab" * 16, Body=b"orphan pack")
    r = cli("fsck", *args)
    assert r.returncode == 1
    assert "index of pack" in r.stdout and "1 packs in the store belong to no file" in r.stdout
    r = cli("fsck", "--full", *args)
    assert r.returncode == 1 and "is corrupt in pack" in r.stdout
    r = cli("fsck", "--repair", "--full", *args)
    assert "deleted 1 orphaned packs" in r.stdout
    assert "uploaded block" in r.stdout                # the cache still had a good copy
    r = cli("fsck", "--repair", "--full", *args)       # the index, once no block is bad
    r = cli("fsck", "--full", *args)
    assert r.returncode == 0, r.stdout
    shutil.rmtree(tmp_path / "data" / "cache")
    with RazorServer(tmp_path / "data", store=store, endpoint=seaweedfs.endpoint) as srv:
        for path, data in files.items():
            assert requests.get(srv.url + path).content == data
