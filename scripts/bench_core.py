#!/usr/bin/env python3
"""Benchmark of the core engine, with plain local-disk figures beside it for scale.

Measures: 100 MiB write (acknowledged = durable in the cache) and the upload drain,
cached read, uncached read from a real S3 server (SeaweedFS on loopback), 10 000 small
file creates and stats, and the peak RSS of this process. Run: python scripts/bench_core.py
[--size-mib 100] [--files 10000] [--store local|seaweedfs] [--small-files 10000]

``--small-files N`` (alone, skips the rest; 0: off): N small files of 1-8 KiB written and
uploaded, with the store requests that took, the objects they left, a restore of the volume
from the bucket into a new data dir, the cold read latency of one small file (a fresh
volume per read, cache empty), and reading all of them back cold in the order written.
It uses only calls older versions have too, so the same script measures a checkout from
before packs (PYTHONPATH=<checkout>) for a before/after comparison.
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


def _puts(vol) -> int:
    counts = vol.figures()["store_requests"]
    return counts.get("put", {}).get("calls", 0)


def bench_small_files(tmp: str, store_url: str | None, endpoint: str | None,
                      n: int, **kw) -> dict:
    from razordav.core.journal import restore
    from razordav.store import open_store
    rng = random.Random(11)
    data_dir = os.path.join(tmp, "small")
    store_url = store_url or f"file://{os.path.join(tmp, 'small-store')}"
    vol = Volume.open(data_dir, store_url, endpoint=endpoint, journal_interval=0, **kw)
    res = {"n": n}
    puts0 = _puts(vol)
    files = {}
    vol.mkdir("/s")
    t = time.perf_counter()
    for i in range(n):
        path = f"/s/{i // 500:03}/{i:05}.txt"
        if i % 500 == 0:
            vol.mkdir(path.rsplit("/", 1)[0])
        files[path] = os.urandom(rng.randint(1024, 8192))
        vol.write_file(path, files[path])
    res["write"] = time.perf_counter() - t
    t = time.perf_counter()
    vol.cache.wait_uploaded(600)
    res["drain"] = time.perf_counter() - t
    res["puts"] = _puts(vol) - puts0
    vol.collect_garbage()
    vol.close()
    store = open_store(store_url, endpoint=endpoint)
    res["objects"] = sum(1 for o in store.list("") if o.key.startswith(("blocks/", "packs/")))
    res["bytes"] = sum(map(len, files.values()))
    restored = os.path.join(tmp, "small-restored")
    os.makedirs(restored)
    t = time.perf_counter()
    restore(store, __import__("pathlib").Path(restored) / "meta.db")
    res["restore"] = time.perf_counter() - t
    lat = []
    for path in rng.sample(sorted(files), 30):
        shutil.rmtree(os.path.join(restored, "cache"), ignore_errors=True)
        v = Volume.open(restored, store_url, endpoint=endpoint, journal_interval=0)
        t = time.perf_counter()
        assert v.read_file(path) == files[path]
        lat.append(time.perf_counter() - t)
        v.close()
    lat.sort()
    res["cold_read_ms"] = (lat[0] * 1000, lat[len(lat) // 2] * 1000, lat[-1] * 1000)
    shutil.rmtree(os.path.join(restored, "cache"), ignore_errors=True)
    v = Volume.open(restored, store_url, endpoint=endpoint, journal_interval=0)
    t = time.perf_counter()
    for path, data in files.items():
        assert v.read_file(path) == data
    res["read_all"] = time.perf_counter() - t
    res["gets"] = v.cache.stats["misses"]      # one GET per miss (a pack read-ahead too)
    v.close()
    store.close()
    return res


def print_small(r: dict, store: str) -> None:
    n = r["n"]
    print(f"razordav small files: {n} files of 1-8 KiB ({r['bytes'] / MiB:.1f} MiB), "
          f"store {store}, {os.cpu_count()} cores, load {os.getloadavg()[0]:.2f}\n")
    print("| measure | figure |\n|---|---|")
    print(f"| write {n} files (durable in the cache) | {r['write']:.2f} s |")
    print(f"| upload drain | {r['drain']:.2f} s |")
    print(f"| PUT requests while writing and uploading / per 1 000 files | {r['puts']} / "
          f"{r['puts'] * 1000 / n:.1f} |")
    print(f"| objects in the bucket (blocks and packs) | {r['objects']} |")
    print(f"| S3 Standard PUT cost per 1 000 000 such files ($0.005 / 1 000 PUTs) | "
          f"${r['puts'] / n * 1e6 * 0.005 / 1000:.2f} |")
    print(f"| restore from the bucket | {r['restore']:.2f} s |")
    lo, med, hi = r["cold_read_ms"]
    print(f"| cold read of one small file (30 runs) min / median / max | "
          f"{lo:.1f} / {med:.1f} / {hi:.1f} ms |")
    print(f"| read all {n} back cold, in written order / GETs of blocks | "
          f"{r['read_all']:.2f} s / {r['gets']} |")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size-mib", type=int, default=100)
    ap.add_argument("--files", type=int, default=10_000)
    ap.add_argument("--store", choices=["local", "seaweedfs"], default="seaweedfs")
    ap.add_argument("--small-files", type=int, default=0)
    ap.add_argument("--pack-size", help="with --small-files: the volume's pack_size (e.g. 1M)")
    ap.add_argument("--pack-threshold", help="with --small-files: pack_threshold (0: no packs)")
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
        if args.small_files:
            if server:
                store_url = f"s3://{server.make_bucket('bench-small')}/v"
            kw = {}
            if args.pack_size:
                from razordav.config import parse_size
                kw["pack_size"] = parse_size(args.pack_size)
            if args.pack_threshold:
                from razordav.config import parse_size
                kw["pack_threshold"] = parse_size(args.pack_threshold)
            print_small(bench_small_files(tmp, store_url, endpoint, args.small_files, **kw),
                        args.store)
            return 0
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
