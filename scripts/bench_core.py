#!/usr/bin/env python3
"""Benchmark of the core engine, with plain local-disk figures beside it for scale.

Measures: 100 MiB write (acknowledged = durable in the cache) and the upload drain,
cached read, uncached read from a real S3 server (SeaweedFS on loopback), 10 000 small
file creates and stats, and the peak RSS of this process. Run: python scripts/bench_core.py
[--size-mib 100] [--files 10000] [--store local|seaweedfs]
"""

from __future__ import annotations

import argparse
import os
import random
import resource
import shutil
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "tests"))

from razordav.core.volume import Volume  # noqa: E402

MiB = 1 << 20


def chunks(kind: str, size: int):
    """The test data, one MiB at a time, so the benchmark itself holds almost nothing."""
    text = text_data(MiB + 4096) if kind == "text" else None
    for i in range(size // MiB):
        yield os.urandom(MiB) if text is None else text[i % 4096:i % 4096 + MiB]


def text_data(n: int) -> bytes:
    rng = random.Random(7)
    words = [w.encode() for w in "the storage gateway writes blocks to a bucket while "
             "metadata stays in a local journal and the cache keeps hot data near".split()]
    out = bytearray()
    while len(out) < n:
        out += rng.choice(words) + b" "
    return bytes(out[:n])


def timed(fn):
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def bench_plain_disk(tmp: str, data) -> dict:
    path = os.path.join(tmp, "plain.bin")

    def write():
        with open(path, "wb") as f:
            for chunk in data:
                f.write(chunk)
            f.flush()
            os.fsync(f.fileno())

    def read():
        with open(path, "rb") as f:
            while f.read(MiB):
                pass
    return {"write": timed(write), "read": timed(read)}


def bench_volume(tmp: str, store_url: str | None, endpoint: str | None, data,
                 files: int) -> dict:
    data_dir = os.path.join(tmp, "vol")
    vol = Volume.open(data_dir, store_url, endpoint=endpoint, journal_interval=0)
    res = {}

    def write():
        with vol.open_write("/big.bin") as w:
            for chunk in data:
                w.write(chunk)
    res["write"] = timed(write)
    res["drain"] = timed(lambda: vol.cache.wait_uploaded(600))

    def read():
        with vol.open_read("/big.bin") as r:
            while r.read(MiB):
                pass
    res["cached_read"] = timed(read)
    vol.close()
    shutil.rmtree(os.path.join(data_dir, "cache"))
    vol = Volume.open(data_dir, store_url, endpoint=endpoint, journal_interval=0)
    res["uncached_read"] = timed(read)
    res["stored_bytes"] = vol.figures()["block_stored_bytes"]

    vol.mkdir("/many")
    parent = vol.stat("/many").ino
    res["creates"] = timed(lambda: [vol.tree.create(parent, f"f{i:05}") for i in range(files)])
    res["stats"] = timed(lambda: [vol.stat(f"/many/f{i:05}") for i in range(files)])
    small = os.urandom(4096)
    n_small = max(files // 10, 100)
    res["small_writes"] = timed(lambda: [vol.write_file(f"/many/s{i:05}", small)
                                         for i in range(n_small)])
    res["n_small"] = n_small
    res["listdir"] = timed(lambda: vol.listdir("/many"))
    vol.close()
    return res


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size-mib", type=int, default=100)
    ap.add_argument("--files", type=int, default=10_000)
    ap.add_argument("--store", choices=["local", "seaweedfs"], default="seaweedfs")
    args = ap.parse_args()
    size = args.size_mib * MiB
    tmp = tempfile.mkdtemp(prefix="rzd-bench-")
    server = None
    try:
        store_url = endpoint = None
        if args.store == "seaweedfs":
            from servers import seaweedfs
            server = seaweedfs(os.path.join(tmp, "weed"))
            os.makedirs(server.workdir, exist_ok=True)
            server.start()
            endpoint = server.endpoint
        rows = []
        for kind in ("random", "text"):
            if server:
                bucket = server.make_bucket(f"bench-{kind}")
                store_url = f"s3://{bucket}/v"
            sub = os.path.join(tmp, kind)
            os.makedirs(sub)
            plain = bench_plain_disk(sub, chunks(kind, size))
            r = bench_volume(sub, store_url, endpoint, chunks(kind, size),
                             args.files if kind == "text" else 0)
            mb = size / MiB
            rows.append((kind, plain, r, mb))
        print(f"razordav core benchmark: {args.size_mib} MiB, store {args.store}, "
              f"{os.cpu_count()} cores\n")
        print(f"{'data':8} {'operation':28} {'razordav':>14} {'plain disk':>14}")
        for kind, plain, r, mb in rows:
            print(f"{kind:8} {'write (durable in cache)':28} {mb / r['write']:10.1f} MB/s "
                  f"{mb / plain['write']:10.1f} MB/s")
            print(f"{kind:8} {'write until all uploaded':28} "
                  f"{mb / (r['write'] + r['drain']):10.1f} MB/s")
            print(f"{kind:8} {'cached read':28} {mb / r['cached_read']:10.1f} MB/s "
                  f"{mb / plain['read']:10.1f} MB/s")
            print(f"{kind:8} {'uncached read (from store)':28} {mb / r['uncached_read']:10.1f} MB/s")
            print(f"{kind:8} {'stored / logical':28} {r['stored_bytes'] / (mb * MiB):10.1%}")
        r = rows[1][2]
        print(f"\n{'metadata':8} {f'{args.files} creates':28} {args.files / r['creates']:10.0f} ops/s")
        print(f"{'metadata':8} {f'{args.files} stats by path':28} {args.files / r['stats']:10.0f} ops/s")
        entries = args.files + r["n_small"]
        print(f"{'metadata':8} {f'list {entries} entries':28} {r['listdir'] * 1000:10.1f} ms")
        label = f"{r['n_small']} x 4 KiB durable writes"
        print(f"{'small':8} {label:28} "
              f"{r['n_small'] / r['small_writes']:10.0f} files/s")
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"\npeak RSS of this process: {peak:.0f} MB")
    finally:
        if server:
            server.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
