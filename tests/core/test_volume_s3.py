"""The volume over S3: moto in process for speed, and a real SeaweedFS on loopback,
including the store conformance suite against it."""

import os
import shutil

import boto3
import pytest
from moto import mock_aws

from razordav.core.check import check_tree
from razordav.core.volume import Volume
from razordav.store import open_store
from tests.store.store_contract import CONTRACT

MiB = 1 << 20


@pytest.fixture
def moto_volume(tmp_path, monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    with mock_aws():
        boto3.client("s3", region_name="us-east-1").create_bucket(Bucket="vol")

        def _open(**kw):
            return Volume.open(tmp_path / "data", "s3://vol/prefix", block_size=64 * 1024,
                               journal_interval=0, **kw)
        yield _open


@pytest.mark.parametrize("packs", [False, True], ids=["objects", "packs"])
def test_volume_on_moto_roundtrip_and_cold_cache(moto_volume, tmp_path, packs):
    """11 blocks of 64 KiB: one object each, or (below the pack threshold) one pack read
    back with a ranged GET per block; either way all are collected after the unlink."""
    kw = {} if packs else {"pack_threshold": 0}
    vol = moto_volume(**kw)
    data = os.urandom(700_000)
    vol.mkdir("/d")
    vol.write_file("/d/f", data)
    assert vol.cache.wait_uploaded(30)
    keys = [o.key for o in vol.store.list("")]
    assert "volume.json" in keys
    assert sum(k.startswith("blocks/") for k in keys) == (0 if packs else 11)
    assert sum(k.startswith("packs/") for k in keys) == (1 if packs else 0)
    vol.close()
    shutil.rmtree(tmp_path / "data" / "cache")
    vol = moto_volume(**kw)
    assert vol.read_file("/d/f") == data
    if packs:   # two misses, then the pack read-ahead brings the other nine in one GET
        assert vol.cache.stats["misses"] == 2 and vol.cache.stats["readahead_blocks"] == 9
    else:
        assert vol.cache.stats["misses"] == 11
    assert vol.cache.stats["fetched_bytes"] < 700_000 + 11 * 64   # ranges, not whole packs
    vol.unlink("/d/f")
    assert vol.collect_garbage() == 11
    assert [o.key for o in vol.store.list("blocks/")] == []
    assert [o.key for o in vol.store.list("packs/")] == []
    assert check_tree(vol.tree) == []
    vol.close()


@pytest.fixture
def weed_store(seaweedfs, request):
    bucket = seaweedfs.make_bucket("conformance")
    store = open_store(f"s3://{bucket}/{request.node.name[:40]}", endpoint=seaweedfs.endpoint)
    yield store
    store.delete_many(o.key for o in store.list(""))
    store.close()


@pytest.mark.parametrize("check", CONTRACT, ids=lambda f: f.__name__[6:])
def test_store_contract_on_seaweedfs(weed_store, check):
    check(weed_store)


def test_volume_on_seaweedfs_big_file_cold_read(seaweedfs, tmp_path):
    bucket = seaweedfs.make_bucket("volume")
    store_url = f"s3://{bucket}/big"
    vol = Volume.open(tmp_path / "data", store_url, endpoint=seaweedfs.endpoint, journal_interval=0)
    chunk = os.urandom(MiB)
    with vol.open_write("/big.bin") as w:
        for i in range(40):
            w.write(chunk[i:] + chunk[:i])   # 40 MiB, ten 4 MiB blocks, all different
    assert vol.cache.wait_uploaded(60)
    vol.close()
    shutil.rmtree(tmp_path / "data" / "cache")
    vol = Volume.open(tmp_path / "data", store_url, endpoint=seaweedfs.endpoint, journal_interval=0)
    with vol.open_read("/big.bin") as r:
        for i in range(40):
            assert r.read(MiB) == chunk[i:] + chunk[:i]
    assert vol.cache.stats["misses"] == 10
    vol.close()
