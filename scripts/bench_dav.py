#!/usr/bin/env python3
"""WebDAV benchmark: razordav beside stock WsgiDAV (FilesystemProvider), both served by
cheroot on 127.0.0.1 and driven the same way over HTTP.

Measures PUT and GET of 1, 10 and 100 MiB, 1 000 small PUTs, PROPFIND depth 1 on 1 000
entries, and the server's peak RSS (VmHWM) over a 1 GiB PUT + GET.
Run: python scripts/bench_dav.py [--big-mib 1024] [--store local|seaweedfs]
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request

import requests

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "tests"))

from tests.razor import RazorServer, free_port  # noqa: E402

MiB = 1 << 20


class StockWsgiDAV:
    """`wsgidav` with its FilesystemProvider over a directory, anonymous, cheroot."""

    def __init__(self, root: str):
        self.root = root
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = None

    def start(self):
        os.makedirs(self.root, exist_ok=True)
        self.proc = subprocess.Popen(
            [shutil.which("wsgidav") or "wsgidav", "--host", "127.0.0.1", "--port",
             str(self.port), "--root", self.root, "--auth", "anonymous", "--server", "cheroot",
             "-q"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True)
        for _ in range(100):
            try:
                urllib.request.urlopen(self.url + "/", timeout=1).close()
                return self
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("wsgidav did not start")

    def stop(self):
        os.killpg(self.proc.pid, signal.SIGTERM)
        self.proc.wait(30)


def peak_rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return 0.0


class Body:
    """A request body of ``size`` random bytes made on the fly (requests sees its length,
    so it sends Content-Length, not chunks)."""

    def __init__(self, size: int):
        self.size, self.sent, self.block = size, 0, os.urandom(MiB)

    def __len__(self):
        return self.size - self.sent

    def read(self, n: int = -1) -> bytes:
        n = min(MiB if n is None or n < 0 else n, self.size - self.sent)
        out = bytearray()
        while len(out) < n:
            mib, off = divmod(self.sent, MiB)
            if off == 0 or self._cur is None:
                k = (mib * 7919) % MiB    # every MiB different, so nothing dedups
                self._cur = self.block[k:] + self.block[:k]
            piece = self._cur[off:off + n - len(out)]
            out += piece
            self.sent += len(piece)
        return bytes(out)

    _cur = None


def put(s, url, size):
    s.put(url, data=Body(size)).raise_for_status()


def get(s, url):
    with s.get(url, stream=True) as r:
        r.raise_for_status()
        for _ in r.iter_content(MiB):
            pass


def timed(fn, *args):
    t = time.perf_counter()
    fn(*args)
    return time.perf_counter() - t


def run(server, big_mib: int) -> dict:
    res = {}
    with requests.Session() as s:
        for mib in (1, 10, 100):
            res[f"PUT {mib} MiB"] = mib / timed(put, s, f"{server.url}/f{mib}.bin", mib * MiB)
            res[f"GET {mib} MiB"] = mib / timed(get, s, f"{server.url}/f{mib}.bin")
        s.request("MKCOL", f"{server.url}/many")
        small = os.urandom(4096)
        t = time.perf_counter()
        for i in range(1000):
            s.put(f"{server.url}/many/f{i:04}.txt", data=small).raise_for_status()
        res["1000 small PUTs"] = 1000 / (time.perf_counter() - t)
        t = time.perf_counter()
        for _ in range(5):
            r = s.request("PROPFIND", f"{server.url}/many/", headers={"Depth": "1"})
            assert r.status_code == 207 and r.text.count("getcontentlength>") >= 2000
        res["PROPFIND depth 1, 1000 entries"] = (time.perf_counter() - t) / 5 * 1000
        put(s, f"{server.url}/big.bin", big_mib * MiB)
        get(s, f"{server.url}/big.bin")
    res[f"peak RSS over {big_mib} MiB PUT+GET"] = peak_rss_mb(server.proc.pid)
    return res


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--big-mib", type=int, default=1024)
    ap.add_argument("--store", choices=["local", "seaweedfs"], default="local")
    args = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="rzd-benchdav-")
    weed = None
    try:
        store = endpoint = None
        if args.store == "seaweedfs":
            from servers import seaweedfs
            weed = seaweedfs(os.path.join(tmp, "weed"))
            os.makedirs(weed.workdir, exist_ok=True)
            weed.start()
            store, endpoint = f"s3://{weed.make_bucket('bench')}/dav", weed.endpoint
        rzd = RazorServer(os.path.join(tmp, "rzd"), store=store, endpoint=endpoint).start()
        try:
            ours = run(rzd, args.big_mib)
        finally:
            rzd.stop()
        stock = StockWsgiDAV(os.path.join(tmp, "stock")).start()
        try:
            theirs = run(stock, args.big_mib)
        finally:
            stock.stop()
    finally:
        if weed:
            weed.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"WebDAV benchmark, store {args.store}, {os.cpu_count()} cores, random data\n")
    print(f"{'measure':38} {'razordav':>12} {'WsgiDAV fs':>12}  unit")
    for key in ours:
        unit = ("MB/s" if "MiB" in key and "RSS" not in key else "req/s" if "small" in key
                else "ms" if "PROPFIND" in key else "MB")
        print(f"{key:38} {ours[key]:12.1f} {theirs[key]:12.1f}  {unit}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
