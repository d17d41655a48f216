"""Smoke tests for the real-S3 fixtures in tests/conftest.py (no razordav import)."""
import os
import time

import pytest

from servers import port_open, s3_client


def _roundtrip(server, bucket):
    server.make_bucket(bucket)
    s3 = s3_client(server.endpoint)
    s3.put_object(Bucket=bucket, Key="dir/hello.txt", Body=b"hello")
    assert s3.get_object(Bucket=bucket, Key="dir/hello.txt")["Body"].read() == b"hello"
    return s3


def test_moto_server_roundtrip(moto_server):
    assert moto_server.endpoint.startswith("http://127.0.0.1:")
    _roundtrip(moto_server, "moto-smoke")


def test_seaweedfs_roundtrip_and_ranged_get(seaweedfs):
    s3 = _roundtrip(seaweedfs, "weed-smoke")
    blob = os.urandom(20 * 1024 * 1024)
    s3.put_object(Bucket="weed-smoke", Key="big.bin", Body=blob)
    start, end = 7 * 1024 * 1024 + 3, 13 * 1024 * 1024 + 11
    r = s3.get_object(Bucket="weed-smoke", Key="big.bin", Range=f"bytes={start}-{end}")
    assert r["ContentRange"] == f"bytes {start}-{end}/{len(blob)}"
    assert r["Body"].read() == blob[start:end + 1]
    tail = s3.get_object(Bucket="weed-smoke", Key="big.bin", Range="bytes=-100")["Body"].read()
    assert tail == blob[-100:]


def test_seaweedfs_many_buckets(seaweedfs):
    # weed's default (7 volumes per bucket, 8 volumes max) would fail here
    s3 = s3_client(seaweedfs.endpoint)
    for i in range(5):
        seaweedfs.make_bucket(f"weed-many-{i}")
        s3.put_object(Bucket=f"weed-many-{i}", Key="k", Body=b"v")


def test_seaweedfs_stop_start_keeps_data(seaweedfs):
    _roundtrip(seaweedfs, "weed-restart")
    pid, port = seaweedfs.pid, seaweedfs.port
    t0 = time.monotonic()
    seaweedfs.stop()
    stopped = time.monotonic() - t0
    assert seaweedfs.pid is None
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    assert not port_open(port), "S3 port still accepts connections after stop()"
    seaweedfs.start()
    assert seaweedfs.port == port and seaweedfs.pid != pid
    s3 = s3_client(seaweedfs.endpoint)
    assert s3.get_object(Bucket="weed-restart", Key="dir/hello.txt")["Body"].read() == b"hello"
    print(f"stop took {stopped:.1f}s")
