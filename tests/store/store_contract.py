"""The ObjectStore contract, as plain functions taking a store: run by the parametrised
tests here and by the real-S3 module against SeaweedFS."""

import pytest

from razordav.store import NotFound, PreconditionFailed


def check_put_get_roundtrip(store):
    etag = store.put("a/b/c", b"hello world")
    assert etag
    assert store.get("a/b/c") == b"hello world"
    info = store.head("a/b/c")
    assert info.size == 11 and info.key == "a/b/c"


def check_ranges(store):
    data = bytes(range(256)) * 10
    store.put("r", data)
    assert store.get("r", 10, 20) == data[10:30]
    assert store.get("r", 2500) == data[2500:]
    assert store.get("r", 2550, 100) == data[2550:]   # range past the end: what exists
    assert store.get("r", 0, 0) == b""


def check_missing(store):
    with pytest.raises(NotFound):
        store.get("nope")
    with pytest.raises(NotFound):
        store.head("nope")
    assert not store.exists("nope")
    store.delete_many(["nope", "nope2"])  # missing keys are fine


def check_overwrite_and_delete(store):
    store.put("k", b"one")
    store.put("k", b"two")
    assert store.get("k") == b"two"
    store.delete("k")
    assert not store.exists("k")


def check_list_in_order_by_prefix(store):
    keys = [f"blocks/{i:02x}/x{i}" for i in range(30)] + ["meta/journal/1", "volume.json"]
    for k in keys:
        store.put(k, k.encode())
    listed = [o.key for o in store.list("blocks/")]
    assert listed == sorted(k for k in keys if k.startswith("blocks/"))
    assert [o.key for o in store.list("meta/")] == ["meta/journal/1"]
    assert {o.key for o in store.list("")} == set(keys)
    sizes = {o.key: o.size for o in store.list("")}
    assert sizes["volume.json"] == len(b"volume.json")


def check_batch_delete(store):
    keys = [f"d/{i}" for i in range(25)]
    for k in keys:
        store.put(k, b"x")
    store.delete_many(keys[:20])
    assert [o.key for o in store.list("d/")] == sorted(keys[20:])


def check_delete_prefix(store):
    keep = ["tenants/b/x", "tenants/ab", "volume.json"]
    gone = [f"tenants/a/blocks/{i:02x}/k{i}" for i in range(7)] + ["tenants/a/volume.json"]
    for k in keep + gone:
        store.put(k, b"x")
    assert store.delete_prefix("tenants/a/", batch=3) == len(gone)
    assert sorted(o.key for o in store.list("")) == sorted(keep)
    assert store.delete_prefix("tenants/a/") == 0      # again: nothing left, no error
    store.put("tenants/a/again", b"y")                 # the prefix is usable afterwards
    assert store.get("tenants/a/again") == b"y"
    assert store.delete_prefix("") == len(keep) + 1
    assert list(store.list("")) == []


def check_conditional_put(store):
    store.put("lease", b"a", if_absent=True)
    with pytest.raises(PreconditionFailed):
        store.put("lease", b"b", if_absent=True)
    etag = store.head("lease").etag
    etag2 = store.put("lease", b"c", if_match=etag)
    with pytest.raises(PreconditionFailed):
        store.put("lease", b"d", if_match=etag)  # stale etag
    assert store.get("lease") == b"c"
    assert store.head("lease").etag == etag2


def check_copy(store):
    store.put("src", b"payload")
    store.copy("src", "dst")
    assert store.get("dst") == b"payload"
    with pytest.raises(NotFound):
        store.copy("missing", "dst2")


def check_binary_and_large(store):
    import os
    data = os.urandom(3 << 20)
    store.put("big", data)
    assert store.get("big") == data
    assert store.get("big", 1 << 20, 1000) == data[1 << 20:(1 << 20) + 1000]


CONTRACT = [v for k, v in dict(globals()).items() if k.startswith("check_")]
