#!/usr/bin/env python3
"""What packs (issue 16) buy and cost: small-file uploads, restore and cold reads, the size
threshold, and repacking, each beside the one-object-per-block behaviour (threshold 0).

Every volume is written through the core (``Volume.write_file``) with uploads paused, then
drained with ``wait_uploaded``, so the drain is measured alone: wall seconds, this process's
CPU seconds (``time.process_time``: the gateway's uploaders, not the writes before), the
server's CPU seconds (SeaweedFS only, from /proc/<pid>/stat) and the requests the volume's
``RetryingStore`` counted. Sections:

1. small-file upload: ``--files`` files of 1-64 KiB (seeded; half random bytes, half text),
   threshold 0 and packs of 1, 4, 8 and 16 MiB;
2. restore into a new data dir from the bucket, then every file read once, in a random order,
   by a volume with an empty cache;
3. cold read latency of one small file: the per-file times of section 2 (``read_file`` of a
   block never read by that data dir: metadata lookup, one GET, verify, write to the cache),
   and the bare store GET of 200 random blocks (own object, or a range of a pack);
4. threshold: incompressible one-block files of 64 KiB..2 MiB, each uploaded alone or in
   8 MiB packs, and the AWS arithmetic for a million files;
5. repack: ``--repack-files`` small files in 8 MiB packs, a random ``--delete`` share of
   them (60 %) deleted, the cache wiped (the rewrite reads the live blocks with ranged GETs),
   then ``collect_garbage`` with ``repack_share=1.0`` until nothing changes, for
   ``repack_below`` 0.3, 0.5 and 0.7.

The store is a SeaweedFS started here on 127.0.0.1 (ephemeral ports, stopped by PID at the
end) or a local directory. Prints Markdown tables: median (min-max) over ``--runs``. Run:
python scripts/bench_packs.py [--store local|seaweedfs] [--runs 3] [--files 2000] [--quick]
"""

from __future__ import annotations

import argparse
import datetime
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "tests"))

from razordav.core import packs  # noqa: E402
from razordav.core.blocks import block_key  # noqa: E402
from razordav.core.journal import restore  # noqa: E402
from razordav.core.volume import PACK_SIZE, PACK_THRESHOLD, Volume  # noqa: E402
from razordav.store import open_store  # noqa: E402

KiB, MiB = 1 << 10, 1 << 20
PACK_SIZES = (1 * MiB, 4 * MiB, 8 * MiB, 16 * MiB)
BLOCK_SIZES = (64 * KiB, 128 * KiB, 256 * KiB, 512 * KiB, 1 * MiB, 2 * MiB)
REPACK_BELOW = (0.3, 0.5, 0.7)
LATENCY_SAMPLES = 200
# AWS S3 list prices (us-east-1) used for the arithmetic; the brief gives the first two.
PUT_PRICE = 0.005 / 1000            # $ per PUT (STANDARD)
IA_MIN_OBJECT = 128 * KiB           # STANDARD_IA bills smaller objects as this size
STANDARD_GB_MONTH = 0.023           # $ per GB-month, STANDARD (first 50 TB)
IA_GB_MONTH = 0.0125                # $ per GB-month, STANDARD_IA
WORDS = ("the storage gateway writes blocks to a bucket while metadata stays in a local "
         "journal and the cache keeps hot data near readers who open files often").split()


# -- environment --

class Bench:
    """Where volumes go: a fresh prefix of one bucket (or a fresh local store) per volume."""

    def __init__(self, tmp: Path, store: str):
        self.tmp, self.kind, self.server, self._n = tmp, store, None, 0
        if store == "seaweedfs":
            from servers import seaweedfs
            self.server = seaweedfs(str(tmp / "weed"))
            self.server.start()
            self.bucket = self.server.make_bucket("bench-packs")

    @property
    def endpoint(self) -> str | None:
        return self.server.endpoint if self.server else None

    def new_volume_place(self, label: str) -> tuple[Path, str]:
        """A new data dir and store URL."""
        self._n += 1
        name = f"{self._n:03}-{label}"
        if self.server:
            return self.tmp / name, f"s3://{self.bucket}/{name}"
        return self.tmp / name, (self.tmp / f"{name}.store").resolve().as_uri()

    def server_cpu(self) -> float:
        """CPU seconds the object server has used (0 for the local store)."""
        if not self.server:
            return 0.0
        fields = Path(f"/proc/{self.server.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def open(self, data_dir: Path, url: str, **kw) -> Volume:
        kw.setdefault("journal_interval", 0)
        return Volume.open(data_dir, url, endpoint=self.endpoint, **kw)

    def close(self) -> None:
        if self.server:
            self.server.stop()


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def requests(store) -> dict[str, int]:
    return {op: n for op, (n, _failed) in store.request_counts().items()}


def delta(after: dict, before: dict) -> dict[str, int]:
    return {op: after.get(op, 0) - before.get(op, 0) for op in after}


def bucket_objects(vol: Volume, prefix: str) -> tuple[int, int]:
    """(objects, bytes) under ``prefix``, listed below the counting wrapper."""
    infos = list(vol.store.unwrap().list(prefix))
    return len(infos), sum(i.size for i in infos)


# -- workloads --

def text_corpus(rng: random.Random, n: int) -> bytes:
    out, size = [], 0
    while size < n:
        w = rng.choice(WORDS).encode() + b" "
        out.append(w)
        size += len(w)
    return b"".join(out)


def small_files(n: int, seed: int) -> dict[str, bytes]:
    """``n`` files of 1-64 KiB: even ones random bytes, odd ones text slices."""
    rng = random.Random(seed)
    corpus = text_corpus(rng, 4 * MiB)
    files = {}
    for i in range(n):
        size = rng.randint(1 * KiB, 64 * KiB)
        if i % 2:
            at = rng.randrange(len(corpus) - size)
            data = corpus[at:at + size]
        else:
            data = rng.randbytes(size)
        files[f"/d{i % 20:02}/f{i:05}"] = data
    return files


def write_all(vol: Volume, files: dict[str, bytes]) -> None:
    for d in sorted({p.rsplit("/", 1)[0] for p in files}):
        vol.mkdir(d)
    for path, data in files.items():
        vol.write_file(path, data)


def drain(bench: Bench, vol: Volume) -> dict:
    """Let the paused uploads go and wait for them: seconds, CPU, requests."""
    req0, cpu0, srv0 = requests(vol.store), time.process_time(), bench.server_cpu()
    t0 = time.perf_counter()
    vol.cache.pause_uploads(False)
    assert vol.cache.wait_uploaded(1800), "uploads did not finish"
    wall = time.perf_counter() - t0
    return {"seconds": wall, "cpu": time.process_time() - cpu0,
            "server_cpu": bench.server_cpu() - srv0, "req": delta(requests(vol.store), req0)}


# -- 1-3: small files, restore, cold reads --

def small_file_round(bench: Bench, files: dict[str, bytes], threshold: int, pack_size: int,
                     seed: int) -> dict:
    data_dir, url = bench.new_volume_place(f"small-{threshold}-{pack_size}")
    vol = bench.open(data_dir, url, pack_threshold=threshold, pack_size=pack_size,
                     upload_paused=True)
    write_all(vol, files)
    res = drain(bench, vol)
    res["objects"] = sum(bucket_objects(vol, p)[0] for p in ("blocks/", "packs/"))
    res["stored"] = [r[0] for r in vol.tree.db.reader().execute(
        "SELECT stored_size FROM blocks")]
    vol.collect_garbage()
    vol.close()
    res.update(restore_and_read(bench, url, files, seed))
    return res


def restore_and_read(bench: Bench, url: str, files: dict[str, bytes], seed: int) -> dict:
    """Restore into a new data dir, read every file once (random order, empty cache), then
    time bare GETs of random blocks."""
    store = open_store(url, endpoint=bench.endpoint)
    data_dir = bench.new_volume_place("restored")[0]
    data_dir.mkdir()
    t0 = time.perf_counter()
    restore(store, data_dir / "meta.db")
    res = {"restore_s": time.perf_counter() - t0,
           "restore_get": requests(store).get("get", 0)}
    vol = bench.open(data_dir, url)
    order = list(files)
    random.Random(seed).shuffle(order)
    req0, times = requests(vol.store), []
    t0 = time.perf_counter()
    for path in order:
        t = time.perf_counter()
        data = vol.read_file(path)
        times.append(time.perf_counter() - t)
        assert data == files[path], path
    res["read_s"] = time.perf_counter() - t0
    res["read_get"] = delta(requests(vol.store), req0).get("get", 0)
    res["read_ms"] = statistics.median(times) * 1000
    res["get_ms"] = bare_get_ms(vol, store, random.Random(seed + 1))
    vol.close()
    store.close()
    return res


def bare_get_ms(vol: Volume, store, rng: random.Random) -> float:
    """Median ms of one store GET of a random block: its own object or its range of a pack."""
    names = [r[0] for r in vol.tree.db.reader().execute("SELECT hash FROM blocks")]
    times = []
    for name in rng.sample(names, min(LATENCY_SAMPLES, len(names))):
        loc = vol.packs.locate(name)
        t = time.perf_counter()
        if loc is None:
            store.get(block_key(name))
        else:
            store.get(loc.key, loc.offset, loc.length)
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1000


# -- 4: threshold --

def threshold_round(bench: Bench, block: int, packed: bool, total: int, seed: int) -> dict:
    rng = random.Random(seed)
    data_dir, url = bench.new_volume_place(f"thr-{block}-{int(packed)}")
    vol = bench.open(data_dir, url, pack_threshold=4 * MiB if packed else 0,
                     pack_size=8 * MiB, upload_paused=True)
    vol.mkdir("/t")
    for i in range(max(1, total // block)):
        vol.write_file(f"/t/{i:05}", rng.randbytes(block))
    res = drain(bench, vol)
    res["mib"] = vol.figures()["block_stored_bytes"] / MiB
    vol.close()
    return res


# -- 5: repack --

def repack_round(bench: Bench, files: dict[str, bytes], deleted: float, below: float,
                 seed: int) -> dict:
    data_dir, url = bench.new_volume_place(f"repack-{deleted}-{below}")
    vol = bench.open(data_dir, url, repack_below=below, repack_share=1.0)
    write_all(vol, files)
    vol.collect_garbage(timeout=600)
    vol.close()
    shutil.rmtree(data_dir / "cache")        # cold: live blocks come back by ranged GETs
    vol = bench.open(data_dir, url, repack_below=below, repack_share=1.0)
    n0, bytes0 = bucket_objects(vol, packs.PREFIX)
    for path in random.Random(seed).sample(sorted(files), int(len(files) * deleted)):
        vol.unlink(path)
    req0, t0 = requests(vol.store), time.perf_counter()
    settle(vol)
    seconds = time.perf_counter() - t0
    n1, bytes1 = bucket_objects(vol, packs.PREFIX)
    live = vol.tree.db.reader().execute("SELECT COALESCE(SUM(length), 0) FROM packed") \
        .fetchone()[0]
    st = vol.repacker.stats
    res = {"seconds": seconds, "req": delta(requests(vol.store), req0),
           "rewritten": st["bytes_rewritten"], "freed": bytes0 - bytes1,
           "packs_before": n0, "packs_after": n1, "bytes_before": bytes0,
           "bytes_after": bytes1, "live": live, "packs_rewritten": st["packs_rewritten"]}
    vol.close()
    return res


def settle(vol: Volume) -> None:
    """``collect_garbage`` until a round rewrites and deletes nothing and no trash waits."""
    for _ in range(500):
        st = dict(vol.repacker.stats)
        vol.collect_garbage()
        trash = vol.tree.db.reader().execute("SELECT COUNT(*) FROM pack_trash").fetchone()[0]
        same = all(vol.repacker.stats[k] == st[k] for k in ("packs_rewritten", "packs_deleted"))
        if same and not trash:
            return
    raise RuntimeError("repacking did not settle in 500 rounds")


# -- formatting --

def spread(values, fmt="{:.2f}") -> str:
    values = list(values)
    med = fmt.format(statistics.median(values))
    if len(values) == 1 or min(values) == max(values):
        return med
    return f"{med} ({fmt.format(min(values))}-{fmt.format(max(values))})"


def table(head: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def size_label(n: int) -> str:
    return f"{n // MiB}M" if n >= MiB else f"{n // KiB}K"


def small_config_label(threshold: int, pack_size: int) -> str:
    return "own objects (threshold 0)" if not threshold else f"packs of {size_label(pack_size)}"


def report_small(results: dict, n_files: int) -> None:
    print(f"\n### 1. Upload of {n_files} small files (drain after writing)\n")
    rows = []
    for (thr, ps), runs in results.items():
        rows.append([small_config_label(thr, ps), spread(r["seconds"] for r in runs),
                     spread((r["req"].get("put", 0) for r in runs), "{:.0f}"),
                     spread((r["objects"] for r in runs), "{:.0f}"),
                     spread(r["cpu"] for r in runs), spread(r["server_cpu"] for r in runs),
                     spread((n_files / r["seconds"] for r in runs), "{:.0f}")])
    print(table(["configuration", "drain s", "PUTs", "objects", "gateway CPU s",
                 "server CPU s", "files/s drained"], rows))
    print("\n### 2. Restore and cold read-back of every file (random order)\n")
    rows = [[small_config_label(thr, ps), spread(r["restore_s"] for r in runs),
             spread((r["restore_get"] for r in runs), "{:.0f}"),
             spread(r["read_s"] for r in runs),
             spread((r["read_get"] for r in runs), "{:.0f}")]
            for (thr, ps), runs in results.items()]
    print(table(["configuration", "restore s", "restore GETs", "read-back s",
                 "read-back GETs"], rows))
    print("\n### 3. Cold read of one small file\n")
    rows = [[small_config_label(thr, ps), spread(r["read_ms"] for r in runs),
             spread(r["get_ms"] for r in runs)] for (thr, ps), runs in results.items()]
    print(table(["configuration", "read_file, empty cache: median ms",
                 f"bare GET of the block ({LATENCY_SAMPLES} random): median ms"], rows))


def report_threshold(results: dict, total: int) -> None:
    print(f"\n### 4. Threshold: {total // MiB} MiB of one-block random files per size\n")
    rows = []
    for block in BLOCK_SIZES:
        alone, packed = results[(block, False)], results[(block, True)]
        rows.append([size_label(block),
                     spread(r["seconds"] / r["mib"] * 1000 for r in alone),
                     spread(r["seconds"] / r["mib"] * 1000 for r in packed),
                     spread((r["req"].get("put", 0) for r in alone), "{:.0f}"),
                     spread((r["req"].get("put", 0) for r in packed), "{:.0f}"),
                     spread(r["cpu"] / r["mib"] * 1000 for r in alone),
                     spread(r["cpu"] / r["mib"] * 1000 for r in packed)])
    print(table(["block", "alone ms/MiB", "packed ms/MiB", "alone PUTs", "packed PUTs",
                 "alone CPU ms/MiB", "packed CPU ms/MiB"], rows))


def report_costs(stored: list[int]) -> None:
    """AWS arithmetic for a million files shaped like the small-file workload, and per GiB
    of blocks of each size."""
    scale = 1_000_000 / len(stored)
    total = sum(stored) * scale
    print(f"\n### AWS arithmetic for 1 000 000 files like section 1 "
          f"(mean stored size {total / 1e6 / KiB:.1f} KiB)\n")
    alone_ia = sum(max(s, IA_MIN_OBJECT) for s in stored) * scale
    rows = [["own objects", "1 000 000", f"${1_000_000 * PUT_PRICE:.2f}",
             f"{alone_ia / 2**30:.1f}", f"${alone_ia / 2**30 * IA_GB_MONTH:.2f}"]]
    for ps in PACK_SIZES:
        n = -(-int(total) // ps)
        rows.append([f"packs of {size_label(ps)}", f"{n:,}".replace(",", " "),
                     f"${n * PUT_PRICE:.3f}", f"{total / 2**30:.1f}",
                     f"${total / 2**30 * IA_GB_MONTH:.2f}"])
    print(table(["layout", "PUTs", "PUT cost", "STANDARD_IA billable GiB",
                 "STANDARD_IA $/month"], rows))
    print(f"\nPer GiB of blocks uploaded alone (PUT ${PUT_PRICE * 1000:.3f}/1 000; storage "
          f"STANDARD ${STANDARD_GB_MONTH}/GB-month, STANDARD_IA ${IA_GB_MONTH}, "
          f"minimum {IA_MIN_OBJECT // KiB} KiB):\n")
    rows = []
    for block in (4 * KiB, 16 * KiB, 32 * KiB) + BLOCK_SIZES + (4 * MiB,):
        puts = 2**30 / block
        rows.append([size_label(block), f"{puts:,.0f}".replace(",", " "),
                     f"${puts * PUT_PRICE:.4f}",
                     f"{puts * PUT_PRICE / (STANDARD_GB_MONTH * 2**30 / 1e9):.2f}",
                     f"{max(1.0, IA_MIN_OBJECT / block):.1f}"])
    print(table(["block", "PUTs per GiB", "PUT $ per GiB", "PUT cost / 1 month STANDARD",
                 "STANDARD_IA billed / stored"], rows))


def report_repack(results: dict, n_files: int) -> None:
    print(f"\n### 5. Repack: {n_files} small files in {size_label(PACK_SIZE)} packs, a random "
          "share deleted, cache wiped, repack_share 1.0\n")
    rows = []
    for (deleted, below), runs in results.items():
        rows.append([f"{deleted:.0%}", f"{below}",
                     spread((r["packs_rewritten"] for r in runs), "{:.0f}"),
                     spread(r["rewritten"] / MiB for r in runs),
                     spread(r["freed"] / MiB for r in runs),
                     spread(r["rewritten"] / r["freed"] if r["freed"] else 0 for r in runs),
                     spread(r["seconds"] for r in runs),
                     spread((r["req"].get("get", 0) for r in runs), "{:.0f}"),
                     spread((r["req"].get("put", 0) for r in runs), "{:.0f}"),
                     spread((r["req"].get("delete", 0) for r in runs), "{:.0f}"),
                     spread(100 * (r["bytes_after"] / r["live"] - 1) if r["live"] else 0
                            for r in runs)])
    print(table(["deleted", "repack_below", "packs rewritten", "MiB rewritten", "MiB freed",
                 "rewritten / freed", "seconds", "GETs", "PUTs", "delete calls",
                 "dead bytes left, % of live"], rows))
    r = next(iter(results.values()))[0]
    print(f"\nBefore deleting: {r['packs_before']} packs, {r['bytes_before'] / MiB:.1f} MiB "
          "(first run of the first row).")


# -- main --

def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--store", choices=["local", "seaweedfs"], default="seaweedfs")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--files", type=int, default=2000)
    ap.add_argument("--repack-files", type=int, default=5000)
    ap.add_argument("--threshold-mib", type=int, default=32,
                    help="MiB uploaded per block size in section 4")
    ap.add_argument("--quick", action="store_true",
                    help="one run, 500 files, 1 500 repack files, 8 MiB per block size")
    ap.add_argument("--delete", type=float, nargs="+", default=[0.6],
                    help="fractions of the files deleted in section 5")
    ap.add_argument("--only", default="12345",
                    help="sections to run, e.g. 45 (1, 2 and 3 run together)")
    args = ap.parse_args()
    if args.quick:
        args.runs, args.files, args.repack_files, args.threshold_mib = 1, 500, 1500, 8
    started = time.monotonic()
    load_before = loadavg()
    tmp = Path(tempfile.mkdtemp(prefix="rzd-bench-packs-"))
    bench = None
    try:
        bench = Bench(tmp, args.store)
        print(f"# razordav packs benchmark, {datetime.date.today()}\n")
        print(f"store {args.store}, {os.cpu_count()} cores (nproc), runs {args.runs}, "
              f"load average at start {load_before}")
        run_sections(bench, args)
    finally:
        if bench:
            bench.close()
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"\nload average at start {load_before}, at end {loadavg()}; "
          f"total {time.monotonic() - started:.0f} s")
    return 0


def run_sections(bench: Bench, args) -> None:
    configs = [(0, PACK_SIZE)] + [(PACK_THRESHOLD, ps) for ps in PACK_SIZES]
    stored = None
    if "1" in args.only:
        files = small_files(args.files, seed=1)
        results = {c: [] for c in configs}
        for run in range(args.runs):
            for thr, ps in configs:
                results[(thr, ps)].append(small_file_round(bench, files, thr, ps, seed=run))
        stored = results[configs[0]][0]["stored"]
        report_small(results, args.files)
        print(f"\n(load average now {loadavg()})")
    if "4" in args.only:
        total = args.threshold_mib * MiB
        results = {(b, p): [] for b in BLOCK_SIZES for p in (False, True)}
        for run in range(args.runs):
            for block in BLOCK_SIZES:
                for packed in (False, True):
                    results[(block, packed)].append(
                        threshold_round(bench, block, packed, total, seed=run))
        report_threshold(results, total)
        print(f"\n(load average now {loadavg()})")
    if stored:
        report_costs(stored)
    if "5" in args.only:
        files = small_files(args.repack_files, seed=2)
        results = {(d, b): [] for d in args.delete for b in REPACK_BELOW}
        for run in range(args.runs):
            for deleted, below in results:
                results[(deleted, below)].append(
                    repack_round(bench, files, deleted, below, seed=run))
        report_repack(results, args.repack_files)
        print(f"\n(load average now {loadavg()})")


if __name__ == "__main__":
    sys.exit(main())
