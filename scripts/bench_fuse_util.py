#!/usr/bin/env python3
"""Helpers for scripts/bench_fuse.sh; the shell script owns the processes and the mounts.

Subcommands:
  weed WORKDIR INFO BUCKET...  run SeaweedFS on 127.0.0.1 (tests/servers.py), make the
                               buckets, write "endpoint weed_pid" to INFO, serve until SIGTERM
  port                         print a free TCP port on 127.0.0.1
  settle KIND WHERE TIMEOUT    wait until a mount has uploaded everything; print seconds
                               (KIND razordav: WHERE is its data dir; rclone: its rc URL)
  meta DIR N                   create, stat, unlink N empty files; print "create stat delete"
                               ops/s (page cache, dentries and inodes dropped before stat and
                               before unlink when root)
  tree DIR N                   write N small files in subdirectories (for git and tar)
  fio FILE rw|iops             bandwidth (MB/s) or IOPS from fio's JSON output
  hwm PID                      VmHWM of PID in MB
  cpu PID...                   CPU seconds (user + system, all threads) used so far by the PIDs
  profile FILE [N]             summarise a py-spy raw profile (--threads --idle): per thread
                               group, the N innermost razordav frames that samples fall under
  table RESULTS                print the side-by-side table and the goals
"""

from __future__ import annotations

import json
import os
import random
import signal
import sys
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TARGETS = ("razordav", "rclone", "plain")


def drop_caches() -> None:
    """Write back and drop the page cache, dentries and inodes (root only; else nothing)."""
    os.sync()
    try:
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3")
    except OSError:
        pass


def cmd_weed(workdir: str, info: str, *buckets: str) -> int:
    sys.path.insert(0, os.path.join(ROOT, "tests"))
    from servers import seaweedfs
    os.makedirs(workdir, exist_ok=True)
    server = seaweedfs(workdir)
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    signal.signal(signal.SIGINT, lambda *_: stop.append(1))
    try:
        server.start()
        client = server.client()
        for name in buckets:
            server.make_bucket(name)
            client.put_object(Bucket=name, Key="bench-probe", Body=b"x")  # grows a volume
            client.delete_object(Bucket=name, Key="bench-probe")
        with open(info + ".tmp", "w") as f:
            f.write(f"{server.endpoint} {server.pid}\n")
        os.replace(info + ".tmp", info)
        while not stop and server.proc.poll() is None:
            time.sleep(0.2)
    finally:
        server.stop()
    return 0


def cmd_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        print(s.getsockname()[1])
    return 0


def _razordav_busy(data_dir: str) -> bool | None:
    try:
        with open(os.path.join(data_dir, "stats.json")) as f:
            fig = json.load(f)
    except (OSError, ValueError):
        return None
    return bool(fig.get("upload_queue") or fig.get("dirty_bytes") or fig.get("journal_pending"))


def _rclone_busy(rc_url: str) -> bool | None:
    try:
        req = urllib.request.Request(rc_url.rstrip("/") + "/vfs/stats", data=b"{}",
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=5) as r:
            disk = json.load(r).get("diskCache", {})
    except (OSError, ValueError):
        return None
    return bool(disk.get("uploadsInProgress") or disk.get("uploadsQueued"))


def cmd_settle(kind: str, where: str, timeout: str) -> int:
    """Poll until nothing is waiting for upload; razordav's stats.json is rewritten every
    journal_interval (2 s), so this needs two idle readings in a row."""
    busy = _razordav_busy if kind == "razordav" else _rclone_busy
    t0 = time.monotonic()
    idle = 0
    while time.monotonic() - t0 < float(timeout):
        state = busy(where)
        idle = idle + 1 if state is False else 0
        if idle >= 2:
            break
        time.sleep(1.0 if kind == "razordav" else 0.5)
    else:
        print("timeout")
        return 1
    print(f"{time.monotonic() - t0:.1f}")
    return 0


def cmd_meta(where: str, n: str) -> int:
    n = int(n)
    os.makedirs(where, exist_ok=True)
    names = [os.path.join(where, f"f{i:06}") for i in range(n)]
    flags = os.O_CREAT | os.O_EXCL | os.O_WRONLY
    out = []
    t = time.perf_counter()
    for p in names:
        os.close(os.open(p, flags, 0o644))
    out.append(n / (time.perf_counter() - t))
    drop_caches()
    t = time.perf_counter()
    for p in names:
        os.stat(p)
    out.append(n / (time.perf_counter() - t))
    drop_caches()
    t = time.perf_counter()
    for p in names:
        os.unlink(p)
    out.append(n / (time.perf_counter() - t))
    print(" ".join(f"{x:.1f}" for x in out))
    return 0


def cmd_tree(where: str, n: str) -> int:
    """N files of 0.1-8 KiB of text in directories of 30 (like a source tree)."""
    rng = random.Random(42)
    words = ("def class return import self value error path block store volume "
             "journal lease cache upload read write").split()
    for i in range(int(n)):
        d = os.path.join(where, f"pkg{i // 300:02}", f"mod{i // 30:03}")
        os.makedirs(d, exist_ok=True)
        size = rng.randint(100, 8192)
        text = " ".join(rng.choice(words) for _ in range(size // 6))
        with open(os.path.join(d, f"file{i:05}.py"), "w") as f:
            f.write(f"# file {i}\n{text}\n")
    return 0


def cmd_fio(path: str, what: str) -> int:
    with open(path) as f:
        raw = f.read()
    job = json.loads(raw[raw.index("{"):])["jobs"][0]   # fio may print notes before it
    side = job["read"] if job["read"]["io_bytes"] else job["write"]
    print(f"{side['iops']:.0f}" if what == "iops" else f"{side['bw_bytes'] / 1e6:.1f}")
    return 0


def cmd_hwm(pid: str) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                print(f"{int(line.split()[1]) / 1024:.0f}")
                return 0
    return 1


def _thread_group(head: str) -> str:
    name = head.split(": ", 1)[1] if ": " in head else head
    return name.rstrip("0123456789_-") or name


def cmd_profile(path: str, n: str = "12") -> int:
    """Samples whose stack has no razordav frame (pool threads waiting for work, the trio
    loop in epoll) count as idle; the others are charged to their innermost razordav frame,
    with the leaf (what that frame was doing) beside it."""
    import collections
    groups: dict = collections.defaultdict(collections.Counter)
    totals: collections.Counter = collections.Counter()
    with open(path) as f:
        for line in f:
            stack, _, count = line.rstrip("\n").rpartition(" ")
            frames = stack.split(";")
            group = _thread_group(frames[0])
            totals[group] += int(count)
            ours = [fr for fr in frames[1:] if "(razordav/" in fr]
            if not ours:
                continue
            leaf = frames[-1]
            key = ours[-1] if leaf == ours[-1] else f"{ours[-1]}  ->  {leaf}"
            groups[group][key] += int(count)
    for group, counter in sorted(groups.items(), key=lambda kv: -sum(kv[1].values())):
        busy = sum(counter.values())
        print(f"== {group}: {busy} busy of {totals[group]} samples")
        for key, count in counter.most_common(int(n)):
            print(f"  {count:7} {100 * count / busy:5.1f}%  {key}")
    return 0


def cmd_cpu(*pids: str) -> int:
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])   # utime, stime (fields 14, 15)
    print(f"{total / os.sysconf('SC_CLK_TCK'):.1f}")
    return 0


# (key, label, unit, higher is better, goal factor vs rclone or None)
ROWS = [
    ("seq_write", "seq write {size} MiB (end_fsync)", "MB/s", True, 1.0),
    ("write_drain", "  then upload drained after", "s", False, None),
    ("seq_write_uploaded", "  write until uploaded", "MB/s", True, None),
    ("cpu_write", "  CPU s: mount + SeaweedFS, write+drain", "s", None, None),
    ("seq_read", "seq read {size} MiB (cold page cache)", "MB/s", True, 1.0),
    ("rand_read", "4 KiB random read ({secs} s)", "IOPS", True, None),
    ("rand_read_comp", "  same, 50 % compressible file", "IOPS", True, 1.0),
    ("rand_read_raw", "  same, incompressible file", "IOPS", True, None),
    ("create", "create {files} empty files", "ops/s", True, 2.0),
    ("stat", "stat {files} files (cold)", "ops/s", True, 2.0),
    ("delete", "unlink {files} files (cold)", "ops/s", True, 2.0),
    ("git_clone", "git clone ({git} files)", "s", False, 2.0),
    ("git_status", "git status in the clone (cold)", "s", False, 2.0),
    ("untar", "untar {tar} small files", "s", False, 2.0),
    ("rss", "peak RSS of the mount process", "MB", False, None),
    ("cpu_total", "CPU s of the mount process, whole run", "s", None, None),
    ("verify", "data check (fio crc, git, tar -d)", "", None, None),
]


def _num(v):
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


def _fmt(v) -> str:
    x = _num(v)
    if x is None:
        return v or "-"
    return f"{x:.0f}" if abs(x) >= 100 else f"{x:.2f}" if abs(x) < 10 else f"{x:.1f}"


def cmd_table(results: str) -> int:
    res: dict = {t: {} for t in TARGETS}
    params = {}
    with open(results) as f:
        for line in f:
            target, key, value = line.rstrip("\n").split("\t")
            (params if target == "param" else res.setdefault(target, {}))[key] = value
    head = f"{'workload':40} {'unit':6} {'razordav':>10} {'rclone':>10} {'plain dir':>10}  goal"
    print(head)
    print("-" * (len(head) + 28))
    verdicts = []
    for key, label, unit, higher, factor in ROWS:
        cells = [res[t].get(key) for t in TARGETS]
        if all(c is None for c in cells):
            continue
        goal = ""
        r, c = _num(cells[0]), _num(cells[1])
        if factor and r is not None and c is not None and r > 0 and c > 0:
            ratio = r / c if higher else c / r
            met = ratio >= factor - 1e-9
            goal = f"{'met' if met else 'MISSED'}: {ratio:.2f}x rclone (want >= {factor:g}x)"
            verdicts.append(met)
        elif key == "rss" and r is not None:
            met = r < 200
            goal = f"{'met' if met else 'MISSED'}: razordav < 200 MB"
            verdicts.append(met)
        name = label.format(**params)
        print(f"{name:40} {unit:6} {_fmt(cells[0]):>10} {_fmt(cells[1]):>10} "
              f"{_fmt(cells[2]):>10}  {goal}")
    print(f"\ngoals met: {sum(verdicts)} of {len(verdicts)}")
    return 0


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0
    cmd = globals().get("cmd_" + argv[0])
    if cmd is None:
        print(f"unknown subcommand {argv[0]}", file=sys.stderr)
        return 2
    return cmd(*argv[1:])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
