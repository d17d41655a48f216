#!/usr/bin/env python3
"""What a volume costs at scale (issue 21): open, idle CPU, figures, restore and fsck with a
million inodes.

Creates ``--inodes`` inodes directly through the core API (``Tree`` calls in large write
transactions, ``--per-dir`` entries per directory, some small files with blocks), ships the
journal, and measures:
- open time of the volume (repeated; min/median/max),
- idle CPU of an open volume over ``--idle`` seconds with its journal shipper, lease renewer
  and stats writer running (``resource.getrusage`` of this process, whose main thread
  sleeps meanwhile), as a percentage of one core,
- ``figures()`` time (repeated),
- restore time from the bucket, from the journal segments alone and from a snapshot,
- fsck time,
with the load average before and after (the machine may be shared). Run:
python scripts/bench_scale.py [--inodes 1000000] [--dir /tmp]
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from razordav.core.journal import restore  # noqa: E402
from razordav.core.tree import ROOT as ROOT_INO, Tree  # noqa: E402
from razordav.core.volume import Volume  # noqa: E402
from razordav.store import open_store  # noqa: E402

BATCH = 20_000          # creates per write transaction


def cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def spread(values: list[float]) -> str:
    ms = [v * 1000 for v in values]
    return (f"min {min(ms):.2f} ms, median {statistics.median(ms):.2f} ms, "
            f"max {max(ms):.2f} ms (n={len(ms)})")


def populate(vol: Volume, inodes: int, per_dir: int, files_with_data: int) -> float:
    """Create ``inodes`` inodes (directories of ``per_dir`` empty files, and some small files
    with content); return the seconds it took."""
    start, made = time.monotonic(), 1
    tree = vol.tree
    for i in range(files_with_data):
        vol.write_file(f"/data-{i}", os.urandom(1000 + i))
        made += 1
    d = None
    while made < inodes:
        with vol.deferred_sync(), tree.db.write():
            for _ in range(min(BATCH, inodes - made)):
                if d is None or d[1] >= per_dir:
                    d = [tree.mkdir(ROOT_INO, f"d{made:08d}").ino, 0]
                else:
                    tree.create(d[0], f"f{d[1]:06d}")
                    d[1] += 1
                made += 1
        vol.sync()
        print(f"\r  created {made} inodes", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    return time.monotonic() - start


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--inodes", type=int, default=1_000_000)
    p.add_argument("--per-dir", type=int, default=1000)
    p.add_argument("--files-with-data", type=int, default=200)
    p.add_argument("--idle", type=float, default=30.0, help="seconds of idle CPU measured")
    p.add_argument("--opens", type=int, default=3)
    p.add_argument("--dir", default=None, help="where the data dirs go (default: a temp dir)")
    p.add_argument("--keep", action="store_true", help="keep the data dirs")
    args = p.parse_args()
    work = tempfile.mkdtemp(prefix="rzd-scale-", dir=args.dir)
    data, store_url = os.path.join(work, "data"), "file://" + os.path.join(work, "store")
    print(f"load average at start: {os.getloadavg()}; {os.cpu_count()} cores; in {work}")
    try:
        vol = Volume.open(data, store_url, journal_interval=0, block_size=64 << 10)
        took = populate(vol, args.inodes, args.per_dir, args.files_with_data)
        print(f"created {args.inodes} inodes in {took:.1f} s "
              f"({args.inodes / took:.0f} per second)")
        t = time.monotonic()
        vol.cache.wait_uploaded(600)
        while not (vol.shipper.run_once() and vol.shipper.pending() == 0):
            pass
        print(f"shipped the journal in {time.monotonic() - t:.1f} s "
              f"({vol.shipper.shipped()} rows)")
        t = time.monotonic()
        vol.close()
        print(f"closed in {time.monotonic() - t:.2f} s; meta.db "
              f"{os.path.getsize(os.path.join(data, 'meta.db')) >> 20} MiB")

        opens = []
        for _ in range(args.opens):
            t = time.monotonic()
            vol = Volume.open(data, store_url, journal_interval=0)
            opens.append(time.monotonic() - t)
            vol.close()
        print(f"open: {spread(opens)}")

        vol = Volume.open(data, store_url, journal_interval=2.0)
        time.sleep(3)                                 # past the first round
        c0, t0 = cpu(), time.monotonic()
        time.sleep(args.idle)
        busy = (cpu() - c0) / (time.monotonic() - t0)
        print(f"idle CPU over {args.idle:.0f} s (shipper every 2 s, stats.json, lease): "
              f"{busy * 100:.2f} % of a core")
        runs = []
        for _ in range(20):
            t = time.monotonic()
            fig = vol.figures()
            runs.append(time.monotonic() - t)
        print(f"figures(): {spread(runs)}; inodes {fig['inodes']}, "
              f"journal_pending {fig['journal_pending']}")
        t = time.monotonic()
        report = vol.fsck()
        print(f"fsck: {time.monotonic() - t:.1f} s, {report.checked_blocks} blocks, "
              f"{len(report.problems)} problems {report.problems[:3]}")
        vol.close()

        store = open_store(store_url)
        for kind in ("segments", "snapshot"):
            if kind == "snapshot":
                vol = Volume.open(data, store_url, journal_interval=0)
                vol.shipper.snapshot()
                vol.close()
            target = os.path.join(work, f"restored-{kind}")
            os.makedirs(target)
            t = time.monotonic()
            seq = restore(store, Path(target) / "meta.db", progress=lambda done, total: print(
                f"\r  {kind}: {done}/{total} segments", end="", file=sys.stderr, flush=True))
            print(file=sys.stderr)
            took = time.monotonic() - t
            tree = Tree(Path(target) / "meta.db")
            print(f"restore from {kind}: {took:.1f} s (to row {seq}; "
                  f"{tree.stats()['inodes']} inodes)")
            tree.close()
            shutil.rmtree(target)
        store.close()
    finally:
        print(f"load average at end: {os.getloadavg()}")
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
